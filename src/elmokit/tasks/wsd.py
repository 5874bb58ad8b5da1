"""All-words WSD by nearest sense centroid, the ELMo paper's recipe (section 5.3).

Training: run the biLM over SemCor and average, for every sense key, the vectors of the
tokens tagged with it, separately for each layer. Testing (Raganato et al.'s ALL): represent
an instance by its vector (mean over its tokens for a multiword) and pick, among the senses
seen in training for its (lemma, POS), the one whose centroid is nearest (cosine). Lemmas
never seen in training back off to the WordNet first sense. Reported per layer, and for the
uniform average of all layers ("mix": the mean of layer centroids is the centroid of the
mean, so it needs no extra pass). The WordNet-first-sense baseline is reported too.

Scores follow Raganato's scorer: P = correct / answered, R = correct / instances, F1; an
answer is correct if it is one of the gold keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from elmokit.tasks.data import WordNetSenses, WSDInstance, WSDSentence, sense_key_lemma_pos
from elmokit.tasks.features import FeatureExtractor, sentences_sha1

logger = logging.getLogger(__name__)

MIX = "mix"


@dataclass
class SenseCentroids:
    """Mean training vector of each sense key: vectors [n_keys, n_layers, D]."""

    keys: list[str]
    vectors: torch.Tensor
    counts: list[int]

    def __post_init__(self) -> None:
        self.row = {key: i for i, key in enumerate(self.keys)}
        self.by_lemma: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(self.keys):
            self.by_lemma.setdefault(sense_key_lemma_pos(key), []).append(i)

    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, path: str | Path) -> None:
        partial = Path(f"{path}.partial")
        torch.save(
            {"keys": self.keys, "vectors": self.vectors.half(), "counts": self.counts}, partial
        )
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | Path) -> SenseCentroids:
        data = torch.load(path, weights_only=True)
        return cls(list(data["keys"]), data["vectors"].float(), list(data["counts"]))


def instance_vector(features: torch.Tensor, instance: WSDInstance) -> torch.Tensor:
    """[n_layers, T, D] sentence features -> [n_layers, D] for the instance's tokens."""
    return features[:, instance.positions].float().mean(dim=1)


def train_centroids(
    extractor: FeatureExtractor,
    sentences: Sequence[WSDSentence],
    progress: bool = False,
) -> SenseCentroids:
    """Stream the sense-tagged sentences through the extractor and average the vectors per
    sense key; nothing but the sums is kept."""
    tagged = [s for s in sentences if s.instances]
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    features: Any = extractor.extract([s.tokens for s in tagged])
    if progress:
        from tqdm import tqdm

        features = tqdm(features, total=len(tagged), desc="sense centroids")
    for sentence, feature in zip(tagged, features, strict=True):
        for instance in sentence.instances:
            vector = instance_vector(feature, instance)
            for key in instance.keys:
                if key in sums:
                    sums[key] += vector
                else:
                    sums[key] = vector.clone()
                counts[key] = counts.get(key, 0) + 1
    keys = sorted(sums)
    if not keys:
        raise ValueError("no sense-tagged instances to train on")
    vectors = torch.stack([sums[k] / counts[k] for k in keys])
    return SenseCentroids(keys, vectors, [counts[k] for k in keys])


def ensure_centroids(
    extractor: FeatureExtractor,
    sentences: Sequence[WSDSentence],
    cache_dir: str | Path,
    name: str = "semcor",
    progress: bool = False,
) -> SenseCentroids:
    """`train_centroids`, cached on disk per extractor and training sentences."""
    digest = hashlib.sha1(extractor.identity.encode())
    digest.update(sentences_sha1([s.tokens for s in sentences]).encode())
    digest.update(repr([(i.positions, i.keys) for s in sentences for i in s.instances]).encode())
    path = Path(cache_dir) / f"{name}-centroids.{digest.hexdigest()[:10]}.pt"
    if path.exists():
        return SenseCentroids.load(path)
    logger.info("sense centroids over %d sentences -> %s", len(sentences), path)
    centroids = train_centroids(extractor, sentences, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    centroids.save(path)
    return centroids


def view_names(n_layers: int) -> list[str]:
    """Names of what is scored: one per layer, plus the uniform mix for several layers."""
    return [f"layer{k}" for k in range(n_layers)] + ([MIX] if n_layers > 1 else [])


def disambiguate(
    centroids: SenseCentroids,
    sentences: Sequence[WSDSentence],
    features: Sequence[torch.Tensor],
    wordnet: WordNetSenses,
    names: Sequence[str] | None = None,
) -> dict[str, dict[str, str | None]]:
    """{view name: {instance id: predicted key, or None if nothing to predict}}; views are
    the layers (and "mix", their average) named as in `view_names`."""
    names = list(names or view_names(centroids.n_layers))
    n_layers = centroids.n_layers
    per_view = _views(centroids.vectors, n_layers)  # [n_views, n_keys, D]
    normed = F.normalize(per_view, dim=-1)
    predictions: dict[str, dict[str, str | None]] = {name: {} for name in names}
    for sentence, feature in zip(sentences, features, strict=True):
        for instance in sentence.instances:
            rows = centroids.by_lemma.get((instance.lemma, instance.pos))
            if not rows:
                fallback = wordnet.first_sense.get((instance.lemma, instance.pos))
                for name in names:
                    predictions[name][instance.instance_id] = fallback
                continue
            vector = instance_vector(feature, instance).unsqueeze(0)  # [1, n_layers, D]
            query = F.normalize(_views(vector, n_layers), dim=-1)  # [views, 1, D]
            similarity = torch.einsum("vkd,vd->vk", normed[:, rows], query[:, 0])  # [views, rows]
            best = similarity.argmax(dim=1).tolist()
            for name, choice in zip(names, best, strict=True):
                predictions[name][instance.instance_id] = centroids.keys[rows[choice]]
    return predictions


def _views(vectors: torch.Tensor, n_layers: int) -> torch.Tensor:
    """[N, n_layers, D] -> [n_views, N, D]: each layer, then the mean of all layers."""
    layers = vectors.transpose(0, 1)
    if n_layers == 1:
        return layers
    return torch.cat([layers, layers.mean(dim=0, keepdim=True)])


def first_sense_predictions(
    sentences: Sequence[WSDSentence], wordnet: WordNetSenses
) -> dict[str, str | None]:
    return {
        i.instance_id: wordnet.first_sense.get((i.lemma, i.pos))
        for s in sentences
        for i in s.instances
    }


def wsd_scores(
    predictions: dict[str, str | None], sentences: Sequence[WSDSentence]
) -> dict[str, float]:
    """Raganato-scorer precision, recall and F1 (percent) against the instances' gold keys."""
    gold = {i.instance_id: set(i.keys) for s in sentences for i in s.instances}
    answered = [key for key in (predictions.get(i) for i in gold) if key is not None]
    correct = sum(predictions.get(i) in keys for i, keys in gold.items())
    precision = correct / max(len(answered), 1)
    recall = correct / max(len(gold), 1)
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


def coverage(centroids: SenseCentroids, sentences: Sequence[WSDSentence]) -> float:
    """Share of test instances whose (lemma, POS) was seen in training (percent)."""
    instances = [i for s in sentences for i in s.instances]
    seen = sum((i.lemma, i.pos) in centroids.by_lemma for i in instances)
    return 100.0 * seen / max(len(instances), 1)

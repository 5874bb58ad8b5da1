"""Feature cache for the downstream tasks: run a frozen encoder once, train heads many times.

The task heads never run the biLM. `ensure_cache` runs an extractor once over a data set's
sentences and keeps every layer of every sentence in an HDF5 file; heads then train on the
cached layers with their own trainable ScalarMix, so an epoch costs only the head.

Extractors:
- `BiLMExtractor`: all biLM layers [L+1, T, 2P] (layer 0 is the context-free token vector,
  repeated for both directions as in ELMo), computed by the library's `Embedder` (state policy
  "reset", so each sentence's features do not depend on what else is in its batch; length
  bucketing, duplicates computed once, the biLM's inference mode);
- `StaticExtractor`: static word vectors (e.g. word2vec trained with `train_word2vec` on the
  biLM's own training text) as a one-layer feature [1, T, D], the non-contextual baseline.

File layout (one file per data set and extractor): dataset `str(i)` of shape [n_layers, T_i,
D] for sentence i (float16 by default: half the size, and the heads' precision does not need
more), root attributes `identity` (what produced the features), `sentences_sha1` (the token
lists they belong to), `n_sentences`, `n_layers`, `dim`. A cache is reused only if identity
and sentences match; it is written to `PATH.partial` and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch

from elmokit.bilm import BiLM
from elmokit.embedder import Embedder
from elmokit.io.features import HDF5Reader

logger = logging.getLogger(__name__)


class FeatureExtractor(Protocol):
    """Anything that turns token lists into per-sentence features [n_layers, T_i, dim]."""

    @property
    def identity(self) -> str: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def extract(self, sentences: Sequence[Sequence[str]]) -> Iterator[torch.Tensor]:
        """Float32 features of each sentence, lazily, in the input order."""
        ...

    def __call__(self, batch: Sequence[Sequence[str]]) -> list[torch.Tensor]: ...


class BiLMExtractor:
    """Every layer of a frozen biLM (state policy "reset"), computed by an Embedder."""

    def __init__(self, bilm: BiLM, identity: str | None = None, batch_size: int = 64) -> None:
        bilm.state_policy = "reset"
        self.bilm = bilm.eval()
        self._identity = identity or f"bilm:{bilm_fingerprint(bilm)}"
        device = next(bilm.parameters()).device
        self.embedder = Embedder(self.bilm, device=device, batch_size=batch_size)

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def n_layers(self) -> int:
        return self.bilm.config.n_layers + 1

    @property
    def dim(self) -> int:
        return self.bilm.config.output_dim

    def extract(self, sentences: Sequence[Sequence[str]]) -> Iterator[torch.Tensor]:
        for layers in self.embedder.embed_sentences(sentences):  # [L+1, T, 2P] float32
            yield torch.from_numpy(layers)

    def __call__(self, batch: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        return list(self.extract(batch))


class StaticExtractor:
    """Static word vectors as a single layer [1, T, D]. A word missing from the vectors is
    looked up lower-cased, then gets the zero vector."""

    def __init__(self, vectors: dict[str, np.ndarray], identity: str) -> None:
        if not vectors:
            raise ValueError("no word vectors")
        self.vectors = vectors
        self._dim = len(next(iter(vectors.values())))
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def n_layers(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return self._dim

    def coverage(self, sentences: Sequence[Sequence[str]]) -> float:
        """Share of tokens that get a vector (exact or lower-cased)."""
        total = found = 0
        for sentence in sentences:
            for token in sentence:
                total += 1
                found += token in self.vectors or token.lower() in self.vectors
        return found / max(total, 1)

    def extract(self, sentences: Sequence[Sequence[str]]) -> Iterator[torch.Tensor]:
        zero = np.zeros(self._dim, dtype=np.float32)
        for sentence in sentences:
            rows = [self.vectors.get(t, self.vectors.get(t.lower(), zero)) for t in sentence]
            yield torch.from_numpy(np.stack(rows).astype(np.float32)).unsqueeze(0)

    def __call__(self, batch: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        return list(self.extract(batch))


def bilm_fingerprint(bilm: BiLM) -> str:
    """sha1 of the biLM's config and weights (identifies the model behind a cache)."""
    digest = hashlib.sha1(json.dumps(bilm.config.to_options(), sort_keys=True).encode())
    for name, tensor in sorted(bilm.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def sentences_sha1(sentences: Sequence[Sequence[str]]) -> str:
    digest = hashlib.sha1()
    for sentence in sentences:
        digest.update(" ".join(sentence).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


# -- writing --------------------------------------------------------------------------------


def build_cache(
    extractor: FeatureExtractor,
    sentences: Sequence[Sequence[str]],
    path: str | Path,
    dtype: str = "float16",
    progress: bool = False,
) -> Path:
    """Run `extractor` over every sentence and write the cache file (see module doc)."""
    path = Path(path)
    if any(len(sentence) == 0 for sentence in sentences):
        raise ValueError("the feature cache needs non-empty sentences")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    features: Any = extractor.extract(sentences)
    if progress:
        from tqdm import tqdm

        features = tqdm(features, total=len(sentences), desc=f"features {path.stem}")
    with h5py.File(partial, "w") as handle:
        handle.attrs["identity"] = extractor.identity
        handle.attrs["sentences_sha1"] = sentences_sha1(sentences)
        handle.attrs["n_sentences"] = len(sentences)
        handle.attrs["n_layers"] = extractor.n_layers
        handle.attrs["dim"] = extractor.dim
        for index, feature in enumerate(features):
            handle.create_dataset(str(index), data=feature.numpy().astype(dtype))
    os.replace(partial, path)
    return path


def cache_path(cache_dir: str | Path, name: str, extractor: FeatureExtractor) -> Path:
    """`<cache_dir>/<name>.<sha1(identity)[:10]>.h5`."""
    slug = hashlib.sha1(extractor.identity.encode()).hexdigest()[:10]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return Path(cache_dir) / f"{safe_name}.{slug}.h5"


def ensure_cache(
    extractor: FeatureExtractor,
    sentences: Sequence[Sequence[str]],
    cache_dir: str | Path,
    name: str,
    progress: bool = False,
) -> FeatureCache:
    """The cache of `sentences` under `extractor`, built if missing or stale."""
    path = cache_path(cache_dir, name, extractor)
    if path.exists():
        cache = FeatureCache(path)
        if cache.matches(extractor, sentences):
            return cache
        cache.close()
        logger.info("feature cache %s is stale; rebuilding it", path)
    logger.info("computing features for %d sentences -> %s", len(sentences), path)
    build_cache(extractor, sentences, path, progress=progress)
    return FeatureCache(path)


# -- reading --------------------------------------------------------------------------------


class FeatureCache(HDF5Reader):
    """Read a feature cache: `cache[i]` is sentence i's features [n_layers, T_i, D] (float32);
    `get(i, layers)` and `load(layers)` select layers (e.g. only the top one).

    Its own layout rather than `elmokit embed`'s (io/features.py): float16 storage (half the
    size; the heads do not need more) and an identity key, so a cache is reused only for the
    same model and sentences."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        attrs = self._file.attrs
        self.identity = str(attrs["identity"])
        self.n_layers = int(attrs["n_layers"])
        self.dim = int(attrs["dim"])
        self._len = int(attrs["n_sentences"])
        self._sentences_sha1 = str(attrs["sentences_sha1"])

    def __len__(self) -> int:
        return self._len

    def matches(self, extractor: FeatureExtractor, sentences: Sequence[Sequence[str]]) -> bool:
        return (
            self.identity == extractor.identity
            and self._len == len(sentences)
            and self._sentences_sha1 == sentences_sha1(sentences)
        )

    def get(self, index: int, layers: Sequence[int] | None = None) -> torch.Tensor:
        """[len(layers) or n_layers, T, D] in the stored dtype."""
        if not 0 <= index < self._len:
            raise IndexError(f"sentence {index} not in a cache of {self._len}")
        dataset = self._file[str(index)]
        data = dataset[()] if layers is None else dataset[self._check(layers)]
        return torch.from_numpy(np.ascontiguousarray(data))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get(index).float()

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in range(self._len):
            yield self[index]

    def load(
        self, layers: Sequence[int] | None = None, indices: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Features of many sentences kept in the stored dtype (float16 halves the memory;
        convert batches with .float())."""
        wanted = range(self._len) if indices is None else indices
        return [self.get(i, layers) for i in wanted]

    def _check(self, layers: Sequence[int]) -> list[int]:
        """Layer indices (negative ones count from the top), which must be increasing."""
        checked = [layer % self.n_layers if layer < 0 else layer for layer in layers]
        if any(not 0 <= layer < self.n_layers for layer in checked):
            raise ValueError(f"layers {list(layers)} out of range for {self.n_layers} layers")
        if any(b <= a for a, b in zip(checked, checked[1:], strict=False)):
            raise ValueError(f"layers must be increasing, got {list(layers)}")
        return checked


def standardize(features: Sequence[torch.Tensor], eps: float = 1e-6) -> list[torch.Tensor]:
    """z-score every dimension of every layer with statistics over all the given sentences'
    tokens (no labels involved), keeping the dtype. Raw biLM layers can have a large shared
    component and a scale that differs by model and layer (tens for a char-CNN layer),
    which saturates a head's LSTM gates; after this every representation enters the heads
    on the same scale."""
    total = sum(f.shape[1] for f in features)
    stacked_sum = torch.zeros(features[0].shape[0], 1, features[0].shape[2], dtype=torch.float64)
    stacked_sq = torch.zeros_like(stacked_sum)
    for feature in features:
        values = feature.double()
        stacked_sum += values.sum(dim=1, keepdim=True)
        stacked_sq += (values**2).sum(dim=1, keepdim=True)
    mean = stacked_sum / total
    std = (stacked_sq / total - mean**2).clamp(min=0).sqrt() + eps
    mean32, std32 = mean.float(), std.float()
    return [((f.float() - mean32) / std32).to(f.dtype) for f in features]


# -- word2vec baseline ----------------------------------------------------------------------


def train_word2vec(
    corpus: str | Path,
    path: str | Path,
    dim: int = 300,
    epochs: int = 5,
    min_count: int = 2,
    window: int = 5,
    max_sentences: int | None = None,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Train skip-gram word2vec with gensim on a whitespace-tokenized corpus (one sentence a
    line, e.g. the biLM's training text) and save the vectors to `path` (word2vec binary
    format). Reuses `path` if it already exists."""
    path = Path(path)
    if path.exists():
        return path
    try:
        from gensim.models import Word2Vec
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the word2vec baseline needs gensim: pip install gensim") from error
    lines: list[list[str]] = []
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            if max_sentences is not None and len(lines) >= max_sentences:
                break
            if line.split():
                lines.append(line.split())
    logger.info("training word2vec (%d dims) on %d sentences of %s", dim, len(lines), corpus)
    model = Word2Vec(
        sentences=lines,
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=1,
        epochs=epochs,
        seed=seed,
        workers=workers,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    model.wv.save_word2vec_format(str(partial), binary=True)
    os.replace(partial, path)
    return path


def load_word2vec(path: str | Path) -> StaticExtractor:
    """Vectors saved by `train_word2vec` as a one-layer extractor."""
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(path), binary=True)
    table = {word: vectors[word] for word in vectors.index_to_key}
    digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]
    identity = f"word2vec:{digest}"
    return StaticExtractor(table, identity=identity)

"""Shared pieces of the task heads: which representation a head sees, padding, a BiLSTM
encoder over padded batches, and one training loop with early stopping on the dev metric.

Representations (the same head and budget for each, only the input changes):
- "elmo": a trainable ScalarMix (softmax weights + gamma, paper eq. 1) over all biLM layers;
- "layer0": the biLM's context-free token layer (char CNN), the baseline from the same model;
- "top": the biLM's top LSTM layer; "layerK": layer K;
- "word2vec": static skip-gram vectors trained on the biLM's training text.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from elmokit.modules.scalar_mix import ScalarMix


@dataclass(frozen=True)
class Representation:
    """What a head sees: `source` names the feature cache ("bilm" or "word2vec"); `layers`
    are the cache layers to load (None: all of them, mixed by a trainable ScalarMix).

    `concat` = (source, layer): that context-free vector is appended to every biLM layer
    before the mix. As the ScalarMix weights sum to one, the head then sees
    [ELMo_k ; gamma * x_k], the paper's "ELMo at the input" ([x_k ; ELMo_k], with x_k the
    baseline's own token vector; here one gamma scales both halves).
    """

    name: str
    source: str
    layers: tuple[int, ...] | None
    concat: tuple[str, int] | None = None
    # A second, separately learned mix at the output of the head's encoder as well (the
    # paper's "input & output", used for SNLI, SQuAD and SRL); tagging and pair heads.
    output: bool = False

    @property
    def mix(self) -> bool:
        return self.layers is None


def parse_representation(name: str, n_bilm_layers: int) -> Representation:
    """ "elmo" | "layer0" | "top" | "layerK" | "word2vec" | "layer0+elmo" | "word2vec+elmo";
    n_bilm_layers counts layer 0. A "+output" suffix on a mixing one adds the output mix."""
    if name.endswith("+output"):
        inner = parse_representation(name.removesuffix("+output"), n_bilm_layers)
        if not inner.mix:
            raise ValueError(f"{name}: +output needs a mixing representation (elmo, X+elmo)")
        return dataclasses.replace(inner, name=name, output=True)
    if name == "layer0+elmo":
        return Representation(name, "bilm", None, concat=("bilm", 0))
    if name == "word2vec+elmo":
        return Representation(name, "bilm", None, concat=("word2vec", 0))
    if name == "elmo":
        return Representation(name, "bilm", None)
    if name == "top":
        return Representation(name, "bilm", (n_bilm_layers - 1,))
    if name.startswith("layer") and name[5:].isdigit():
        layer = int(name[5:])
        if layer >= n_bilm_layers:
            raise ValueError(f"{name}: the biLM has layers 0..{n_bilm_layers - 1}")
        return Representation(name, "bilm", (layer,))
    if name == "word2vec":
        return Representation(name, "word2vec", (0,))
    raise ValueError(
        f"unknown representation {name!r}: elmo, layer0, top, layerK, word2vec, "
        "layer0+elmo, word2vec+elmo (mixing ones optionally +output)"
    )


class LayerMixer(nn.Module):
    """[B, n, T, D] cached layers -> [B, T, D]: a trainable ScalarMix when mixing, else the
    single loaded layer."""

    def __init__(self, n_layers: int, mix: bool) -> None:
        super().__init__()
        if not mix and n_layers != 1:
            raise ValueError("without a mix the features must hold exactly one layer")
        self.scalar_mix = ScalarMix(n_layers) if mix else None

    def forward(self, layers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.scalar_mix is None:
            return layers[:, 0]
        return self.scalar_mix(layers, mask)

    def l2_penalty(self) -> torch.Tensor:
        if self.scalar_mix is None:
            return torch.zeros(())
        return self.scalar_mix.l2_penalty()

    def layer_weights(self) -> list[float] | None:
        """softmax(w) of the mix (what the paper's figure 2 plots), None without a mix."""
        if self.scalar_mix is None:
            return None
        return [float(w) for w in self.scalar_mix.layer_weights().tolist()]


def pad_features(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sentence [n, T_i, D] -> padded [B, n, T, D] float32 and mask [B, T] bool."""
    n_layers, _, dim = features[0].shape
    steps = max(f.shape[1] for f in features)
    padded = torch.zeros(len(features), n_layers, steps, dim)
    mask = torch.zeros(len(features), steps, dtype=torch.bool)
    for row, feature in enumerate(features):
        padded[row, :, : feature.shape[1]] = feature.float()
        mask[row, : feature.shape[1]] = True
    return padded, mask


class BiLSTMEncoder(nn.Module):
    """A bidirectional LSTM over padded batches (packed, so padding never leaks in)."""

    def __init__(self, input_dim: int, hidden_dim: int, n_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim, hidden_dim, num_layers=n_layers, batch_first=True, bidirectional=True
        )
        self.output_dim = 2 * hidden_dim

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """inputs [B, T, D], mask [B, T] -> [B, T, 2H], zeros at padding."""
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        unpacked, _ = pad_packed_sequence(output, batch_first=True, total_length=inputs.shape[1])
        return unpacked


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, D], max over the unmasked steps."""
    return values.masked_fill(~mask.unsqueeze(-1), -1e4).max(dim=1).values


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, -1e4), dim=dim)


# -- training -------------------------------------------------------------------------------


@dataclass
class Budget:
    """Training budget, identical for every representation of a task."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 3  # epochs without a better dev score before stopping
    grad_clip: float = 5.0
    mix_l2: float = 1e-3  # lambda of the ScalarMix regulariser (paper: small is better)
    dropout: float = 0.3
    hidden: int = 128


@dataclass
class FitResult:
    """Per-epoch train loss and dev metric; the model is left at its best dev epoch."""

    train_loss: list[float] = field(default_factory=list)
    dev_curve: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_dev: float = -math.inf
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> Iterator[list[int]]:
    """Shuffled batches of similar-length examples (shuffle, sort within pools of 50
    batches, shuffle the batch order): less padding for the LSTMs, still random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    yield from batches


class TaskHead(nn.Module):
    """Base of every trainable head: the representation (mixer) and dropout on its output.
    `config` holds the constructor arguments so that a saved head can be rebuilt."""

    def __init__(
        self,
        n_layers: int,
        mix: bool,
        input_dim: int,
        dropout: float,
        labels: Sequence[str] | None = None,
        output_mix: bool = False,
        **settings: object,
    ) -> None:
        super().__init__()
        self.mixer = LayerMixer(n_layers, mix)
        self.input_dropout = nn.Dropout(dropout)
        # The paper's "ELMo at the output": its own weights and gamma, concatenated to the
        # encoder's output by heads that support it (`with_output_mix`).
        self.output_mixer = LayerMixer(n_layers, True) if output_mix else None
        self.output_dim_extra = input_dim if output_mix else 0
        # Exactly the subclass's constructor arguments: `type(head)(**head.config)` rebuilds it.
        self.config: dict[str, object] = {
            "n_layers": n_layers,
            "mix": mix,
            "input_dim": input_dim,
            "dropout": dropout,
        }
        if labels is not None:
            self.config["labels"] = list(labels)
            self.vocab = LabelVocab(labels)
        if output_mix:
            self.config["output_mix"] = True
        self.config.update(settings)

    def represent(self, layers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, n, T, D] cached layers -> [B, T, D] input of the head."""
        return self.input_dropout(self.mixer(layers, mask))

    def with_output_mix(
        self, encoded: torch.Tensor, layers: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """[B, T, E] encoder output -> [B, T, E + D] with the output mix beside it (as is
        without an output mix)."""
        if self.output_mixer is None:
            return encoded
        return torch.cat([encoded, self.input_dropout(self.output_mixer(layers, mask))], dim=-1)

    def l2_penalty(self) -> torch.Tensor:
        """The ScalarMix regulariser ||w||^2 of every mix the head has."""
        penalty = self.mixer.l2_penalty()
        if self.output_mixer is not None:
            penalty = penalty + self.output_mixer.l2_penalty()
        return penalty


@dataclass
class RunResult:
    """One trained head on one seed: the score on the evaluation split, the dev score it was
    selected on, the learning curve and the learned layer weights (elmo only)."""

    score: float
    dev_score: float
    fit: FitResult
    layer_weights: list[float] | None
    extra: dict[str, float] = field(default_factory=dict)
    model: TaskHead | None = None


def fit(
    model: TaskHead,
    lengths: Sequence[int],
    batch_loss: Callable[[list[int]], torch.Tensor],
    evaluate: Callable[[], float],
    budget: Budget,
    seed: int,
) -> FitResult:
    """Adam on `batch_loss(train indices)` + mix_l2 * ||w||^2 for up to budget.epochs, scoring
    `evaluate()` (dev metric, higher is better) after each epoch; stops after `patience`
    epochs without improvement and restores the best weights."""
    rng = random.Random(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=budget.lr)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(budget.epochs):
        model.train()
        total, batches = 0.0, 0
        for batch in bucketed_batches(lengths, budget.batch_size, rng):
            loss = batch_loss(batch) + budget.mix_l2 * model.l2_penalty()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), budget.grad_clip)
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        model.eval()
        with torch.no_grad():
            score = evaluate()
        result.train_loss.append(total / max(batches, 1))
        result.dev_curve.append(score)
        if score > result.best_dev:
            result.best_dev, result.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= budget.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def accuracy(predicted: Sequence[object], gold: Sequence[object]) -> float:
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / max(len(gold), 1)


def majority_accuracy(train_labels: Sequence[str], eval_labels: Sequence[str]) -> float:
    """Accuracy of always predicting the most frequent training label."""
    majority = Counter(train_labels).most_common(1)[0][0]
    return accuracy([majority] * len(eval_labels), eval_labels)


class LabelVocab:
    """label <-> id, in a fixed order."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(dict.fromkeys(labels))
        self.index = {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, labels: Sequence[str]) -> list[int]:
        return [self.index[label] for label in labels]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.labels[i] for i in ids]

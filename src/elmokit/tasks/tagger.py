"""Sequence tagging head: representation -> BiLSTM -> linear -> CRF (NER, chunking).

The CRF is a standard linear-chain CRF (transition scores plus start and end scores) trained
by maximum likelihood. With IOB2 tags, Viterbi decoding only allows valid sequences (no
`I-X` after anything but `B-X`/`I-X`), as AllenNLP's constrained decoding does. Entity F1 is
computed with seqeval (conlleval-compatible).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from elmokit.tasks.common import (
    BiLSTMEncoder,
    Budget,
    RunResult,
    TaskHead,
    fit,
    pad_features,
    seed_everything,
)

NEG_INF = -1e4


class CRF(nn.Module):
    """Linear-chain CRF over [B, T, K] emission scores (mask [B, T], left-aligned)."""

    def __init__(self, n_tags: int, allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.end = nn.Parameter(torch.zeros(n_tags))
        # Decoding constraints: allowed[i, j] for i -> j; row K is "from the start".
        self.allowed: torch.Tensor
        if allowed is None:
            allowed = torch.ones(n_tags + 1, n_tags, dtype=torch.bool)
        self.register_buffer("allowed", allowed)

    def log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """log p(tags | emissions) per sequence, [B]."""
        return self._gold_score(emissions, tags, mask) - self._log_partition(emissions, mask)

    def _gold_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        weights = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # [B, T]
        score = self.start[tags[:, 0]] + (emitted * weights).sum(dim=1)
        moves = self.transitions[tags[:, :-1], tags[:, 1:]]  # [B, T-1]
        score = score + (moves * weights[:, 1:]).sum(dim=1)
        last = tags.gather(1, (mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return score + self.end[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self.start + emissions[:, 0]  # [B, K]
        for t in range(1, emissions.shape[1]):
            scores = alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)
            alpha = torch.where(mask[:, t : t + 1], torch.logsumexp(scores, dim=1), alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag sequence of each row (its own length), under the constraints."""
        n_tags = emissions.shape[2]
        transitions = self.transitions.masked_fill(~self.allowed[:n_tags], NEG_INF)
        start = self.start.masked_fill(~self.allowed[n_tags], NEG_INF)
        score = start + emissions[:, 0]  # [B, K]
        backpointers = []
        for t in range(1, emissions.shape[1]):
            candidates = score.unsqueeze(2) + transitions  # [B, from, to]
            best, pointer = candidates.max(dim=1)
            step = mask[:, t : t + 1]
            score = torch.where(step, best + emissions[:, t], score)
            # A finished row keeps its tag: point each tag at itself.
            identity = torch.arange(n_tags, device=emissions.device).expand_as(pointer)
            backpointers.append(torch.where(step, pointer, identity))
        score = score + self.end
        paths = []
        lengths = mask.sum(dim=1).tolist()
        for row in range(emissions.shape[0]):
            tag = int(score[row].argmax())
            path = [tag]
            for pointer in reversed(backpointers):
                tag = int(pointer[row, tag])
                path.append(tag)
            path.reverse()
            paths.append(path[: int(lengths[row])])
        return paths


def iob2_allowed_transitions(labels: Sequence[str]) -> torch.Tensor | None:
    """[K+1, K] allowed moves for IOB2 tags (row K: from the start), None for other tag sets."""
    if not all(label == "O" or label[:2] in ("B-", "I-") for label in labels):
        return None
    n = len(labels)
    allowed = torch.ones(n + 1, n, dtype=torch.bool)
    for j, to in enumerate(labels):
        if not to.startswith("I-"):
            continue
        for i, source in enumerate(labels):
            allowed[i, j] = source[2:] == to[2:] and source[:2] in ("B-", "I-")
        allowed[n, j] = False
    return allowed


class SequenceTagger(TaskHead):
    """representation -> dropout -> BiLSTM -> dropout -> linear -> CRF."""

    def __init__(
        self,
        n_layers: int,
        mix: bool,
        input_dim: int,
        labels: Sequence[str],
        hidden: int = 128,
        dropout: float = 0.3,
        output_mix: bool = False,
    ) -> None:
        super().__init__(n_layers, mix, input_dim, dropout, labels, output_mix, hidden=hidden)
        self.encoder = BiLSTMEncoder(input_dim, hidden)
        self.output_dropout = nn.Dropout(dropout)
        self.project = nn.Linear(self.encoder.output_dim + self.output_dim_extra, len(self.vocab))
        self.crf = CRF(len(self.vocab), iob2_allowed_transitions(self.vocab.labels))

    def emissions(self, layers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(self.represent(layers, mask), mask)
        return self.project(self.output_dropout(self.with_output_mix(encoded, layers, mask)))

    def loss(self, layers: torch.Tensor, mask: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per sentence."""
        return -self.crf.log_likelihood(self.emissions(layers, mask), tags, mask).mean()

    def predict(self, features: Sequence[torch.Tensor], batch_size: int = 64) -> list[list[str]]:
        """Tags for each sentence's cached features [n, T, D]."""
        self.eval()
        predictions: list[list[str]] = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                layers, mask = pad_features(features[start : start + batch_size])
                paths = self.crf.viterbi(self.emissions(layers, mask), mask)
                predictions.extend(self.vocab.decode(path) for path in paths)
        return predictions


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Span F1 (seqeval, conlleval rules) in percent."""
    from seqeval.metrics import f1_score

    return 100.0 * float(f1_score([list(g) for g in gold], [list(p) for p in predicted]))


def tag_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    pairs = [
        (g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)
    ]
    return 100.0 * sum(g == p for g, p in pairs) / max(len(pairs), 1)


def word_majority_baseline(
    train_tokens: Sequence[Sequence[str]],
    train_tags: Sequence[Sequence[str]],
    tokens: Sequence[Sequence[str]],
    default: str = "O",
) -> list[list[str]]:
    """Each word's most frequent training tag (`default` for unseen words), the usual
    trivial baseline for tagging; for IOB tags an I-X that cannot continue becomes B-X."""
    counts: dict[str, Counter[str]] = {}
    for sentence, tags in zip(train_tokens, train_tags, strict=True):
        for token, tag in zip(sentence, tags, strict=True):
            counts.setdefault(token, Counter())[tag] += 1
    output = []
    for sentence in tokens:
        tags = [counts[t].most_common(1)[0][0] if t in counts else default for t in sentence]
        for i, tag in enumerate(tags):
            previous = tags[i - 1] if i else "O"
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                tags[i] = "B-" + tag[2:]
        output.append(tags)
    return output


def score_tagger(
    model: SequenceTagger,
    features: Sequence[torch.Tensor],
    tags: Sequence[Sequence[str]],
    ids: Sequence[int],
    metric: str = "f1",
) -> float:
    """Entity F1 ("f1") or token accuracy ("accuracy") of the sentences `ids`, percent."""
    predicted = model.predict([features[i] for i in ids])
    score_fn = entity_f1 if metric == "f1" else tag_accuracy
    return score_fn([tags[i] for i in ids], predicted)


def train_tagger(
    features: Sequence[torch.Tensor],
    tags: Sequence[Sequence[str]],
    train: Sequence[int],
    dev: Sequence[int],
    test: Sequence[int],
    mix: bool,
    budget: Budget,
    seed: int,
    metric: str = "f1",
    output_mix: bool = False,
) -> RunResult:
    """Train a SequenceTagger on sentences `train` (indices into features/tags), select the
    epoch on `dev`, score `test`. metric: "f1" (entity F1) or "accuracy" (per token)."""
    seed_everything(seed)
    labels = sorted({tag for i in train for tag in tags[i]})
    n_layers, _, dim = features[train[0]].shape
    model = SequenceTagger(
        n_layers, mix, dim, labels, budget.hidden, budget.dropout, output_mix=output_mix
    )
    train_ids = list(train)

    def batch_loss(batch: list[int]) -> torch.Tensor:
        rows = [train_ids[i] for i in batch]
        layers, mask = pad_features([features[r] for r in rows])
        gold = torch.zeros(mask.shape, dtype=torch.long)
        for b, r in enumerate(rows):
            gold[b, : len(tags[r])] = torch.tensor([model.vocab.index.get(t, 0) for t in tags[r]])
        return model.loss(layers, mask, gold)

    def score(ids: Sequence[int]) -> float:
        return score_tagger(model, features, tags, ids, metric)

    result = fit(
        model, [len(tags[i]) for i in train_ids], batch_loss, lambda: score(dev), budget, seed
    )
    return RunResult(
        score=score(test),
        dev_score=result.best_dev,
        fit=result,
        layer_weights=model.mixer.layer_weights(),
        model=model,
    )

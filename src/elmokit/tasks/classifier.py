"""Sentence classification head: representation -> BiLSTM -> pooling -> MLP (SST, MR, SUBJ).

Pooling is "max" (max over time of the BiLSTM states) or "attention" (a learned score per
position, softmax over the sentence, weighted sum), the two standard choices for a small
sentence encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from elmokit.tasks.common import (
    BiLSTMEncoder,
    Budget,
    RunResult,
    TaskHead,
    accuracy,
    fit,
    masked_max,
    masked_softmax,
    pad_features,
    seed_everything,
)

POOLINGS = ("max", "attention")


class SentenceClassifier(TaskHead):
    """representation -> dropout -> BiLSTM -> max / attention pooling -> MLP -> labels."""

    def __init__(
        self,
        n_layers: int,
        mix: bool,
        input_dim: int,
        labels: Sequence[str],
        hidden: int = 128,
        dropout: float = 0.3,
        pooling: str = "max",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(n_layers, mix, input_dim, dropout, labels, hidden=hidden, pooling=pooling)
        self.pooling = pooling
        self.encoder = BiLSTMEncoder(input_dim, hidden)
        self.attention = nn.Linear(self.encoder.output_dim, 1)
        self.classify = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(self.encoder.output_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, len(self.vocab)),
        )

    def forward(self, layers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, n, T, D], [B, T] -> logits [B, n_labels]."""
        encoded = self.encoder(self.represent(layers, mask), mask)  # [B, T, 2H]
        if self.pooling == "max":
            pooled = masked_max(encoded, mask)
        else:
            weights = masked_softmax(self.attention(encoded).squeeze(-1), mask)  # [B, T]
            pooled = torch.bmm(weights.unsqueeze(1), encoded).squeeze(1)
        return self.classify(pooled)

    def predict(self, features: Sequence[torch.Tensor], batch_size: int = 128) -> list[str]:
        self.eval()
        predicted: list[str] = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                layers, mask = pad_features(features[start : start + batch_size])
                predicted.extend(self.vocab.decode(self(layers, mask).argmax(-1).tolist()))
        return predicted


def score_classifier(
    model: SentenceClassifier,
    features: Sequence[torch.Tensor],
    labels: Sequence[str],
    ids: Sequence[int],
) -> float:
    """Accuracy (percent) on the sentences `ids`."""
    predicted = model.predict([features[i] for i in ids])
    return 100.0 * accuracy(predicted, [labels[i] for i in ids])


def train_classifier(
    features: Sequence[torch.Tensor],
    labels: Sequence[str],
    train: Sequence[int],
    dev: Sequence[int],
    test: Sequence[int],
    mix: bool,
    budget: Budget,
    seed: int,
    pooling: str = "max",
) -> RunResult:
    """Train on sentences `train` (indices into features/labels), select on `dev`, report
    accuracy (percent) on `test`."""
    seed_everything(seed)
    label_set = sorted({labels[i] for i in train})
    n_layers, _, dim = features[train[0]].shape
    model = SentenceClassifier(
        n_layers, mix, dim, label_set, budget.hidden, budget.dropout, pooling
    )
    train_ids = list(train)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(batch: list[int]) -> torch.Tensor:
        rows = [train_ids[i] for i in batch]
        layers, mask = pad_features([features[r] for r in rows])
        gold = torch.tensor(model.vocab.encode([labels[r] for r in rows]))
        return loss_fn(model(layers, mask), gold)

    def score(ids: Sequence[int]) -> float:
        return score_classifier(model, features, labels, ids)

    lengths = [features[i].shape[1] for i in train_ids]
    result = fit(model, lengths, batch_loss, lambda: score(dev), budget, seed)
    return RunResult(
        score=score(test),
        dev_score=result.best_dev,
        fit=result,
        layer_weights=model.mixer.layer_weights(),
        model=model,
    )

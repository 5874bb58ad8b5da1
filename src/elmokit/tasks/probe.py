"""Linear POS probe: how much syntax each biLM layer holds (the ELMo paper, section 5.3).

A single linear layer (softmax regression) on frozen token vectors, trained per layer, so
that differences come from the representation, not from a task model; "elmo" puts a
trainable ScalarMix of all layers in front of the same linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from elmokit.tasks.common import Budget, RunResult, TaskHead, fit, seed_everything

PROBE_BUDGET = Budget(epochs=10, batch_size=256, lr=3e-3, patience=2, dropout=0.0)


class LinearProbe(TaskHead):
    """representation of one token -> linear -> tag."""

    def __init__(
        self, n_layers: int, mix: bool, input_dim: int, labels: Sequence[str], dropout: float = 0.0
    ) -> None:
        super().__init__(n_layers, mix, input_dim, dropout, labels)
        self.linear = nn.Linear(input_dim, len(self.vocab))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, n_layers, D] -> logits [N, n_tags]."""
        layers = tokens.float().unsqueeze(2)  # [N, n, 1, D]: one-step "sentences"
        mask = torch.ones(tokens.shape[0], 1, dtype=torch.bool)
        return self.linear(self.represent(layers, mask)[:, 0])

    def predict(self, tokens: torch.Tensor, chunk: int = 8192) -> list[int]:
        self.eval()
        with torch.no_grad():
            return torch.cat(
                [self(tokens[i : i + chunk]).argmax(-1) for i in range(0, len(tokens), chunk)]
            ).tolist()


def token_rows(
    features: Sequence[torch.Tensor], tags: Sequence[Sequence[str]], sentences: Sequence[int]
) -> tuple[torch.Tensor, list[str]]:
    """Stack the tokens of the given sentences: [N, n_layers, D] (stored dtype) and tags."""
    rows = torch.cat([features[i].transpose(0, 1) for i in sentences])  # [N, n, D]
    return rows, [tag for i in sentences for tag in tags[i]]


def score_probe(model: LinearProbe, tokens: torch.Tensor, gold: Sequence[str]) -> float:
    """Per-token accuracy (percent) of tokens [N, n_layers, D] against their tags."""
    predicted = model.vocab.decode(model.predict(tokens))
    return 100.0 * sum(p == g for p, g in zip(predicted, gold, strict=True)) / max(len(gold), 1)


def train_probe(
    features: Sequence[torch.Tensor],
    tags: Sequence[Sequence[str]],
    train: Sequence[int],
    dev: Sequence[int],
    test: Sequence[int],
    mix: bool,
    budget: Budget,
    seed: int,
) -> RunResult:
    """Fit the probe on the tokens of sentences `train`, select on `dev`, report per-token
    accuracy (percent) on `test`; tags unseen in training count as errors."""
    seed_everything(seed)
    train_x, train_tags = token_rows(features, tags, train)
    dev_x, dev_tags = token_rows(features, tags, dev)
    test_x, test_tags = token_rows(features, tags, test)
    model = LinearProbe(train_x.shape[1], mix, train_x.shape[2], sorted(set(train_tags)))
    train_y = torch.tensor(model.vocab.encode(train_tags))
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(batch: list[int]) -> torch.Tensor:
        index = torch.tensor(batch)
        return loss_fn(model(train_x[index]), train_y[index])

    def score(x: torch.Tensor, gold: Sequence[str]) -> float:
        return score_probe(model, x, gold)

    result = fit(
        model, [1] * len(train_tags), batch_loss, lambda: score(dev_x, dev_tags), budget, seed
    )
    return RunResult(
        score=score(test_x, test_tags),
        dev_score=result.best_dev,
        fit=result,
        layer_weights=model.mixer.layer_weights(),
        model=model,
    )

"""Sentence-pair classification head in the spirit of ESIM (Chen et al., 2017): SICK, RTE.

    a, b   = BiLSTM(representation(premise)), BiLSTM(representation(hypothesis))
    e_ij   = a_i . b_j                                   soft alignment
    a~_i   = sum_j softmax_j(e_ij) b_j,  b~_j = sum_i softmax_i(e_ij) a_i
    m_a    = [a; a~; a - a~; a * a~]   (same for b)       enhancement
    v_a    = BiLSTM(ReLU(W m_a)) -> mean and max pooling  composition
    logits = MLP([v_a; v_b])

Both sentences share the representation (one ScalarMix), the encoders and the composition.
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
    masked_mean,
    masked_softmax,
    pad_features,
    seed_everything,
)


class PairClassifier(TaskHead):
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
        # With an output mix, the encoder states carry ELMo beside them into the attention
        # (the paper's SNLI setting).
        width = self.encoder.output_dim + self.output_dim_extra
        self.enhance = nn.Sequential(nn.Linear(4 * width, hidden), nn.ReLU())
        self.composition = BiLSTMEncoder(hidden, hidden)
        self.classify = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(4 * self.composition.output_dim, hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, len(self.vocab)),
        )

    def forward(
        self,
        layers_a: torch.Tensor,
        mask_a: torch.Tensor,
        layers_b: torch.Tensor,
        mask_b: torch.Tensor,
    ) -> torch.Tensor:
        a, b = self._both(
            self.encoder,
            self.represent(layers_a, mask_a),
            mask_a,
            self.represent(layers_b, mask_b),
            mask_b,
        )  # [B, Ta|Tb, 2H]
        a = self.with_output_mix(a, layers_a, mask_a)  # [B, Ta, 2H (+ D)]
        b = self.with_output_mix(b, layers_b, mask_b)
        similarity = torch.bmm(a, b.transpose(1, 2))  # [B, Ta, Tb]
        a_aligned = torch.bmm(masked_softmax(similarity, mask_b.unsqueeze(1)), b)
        b_aligned = torch.bmm(masked_softmax(similarity.transpose(1, 2), mask_a.unsqueeze(1)), a)
        c_a, c_b = self._both(
            self.composition,
            self._enhance(a, a_aligned),
            mask_a,
            self._enhance(b, b_aligned),
            mask_b,
        )
        pooled = [masked_mean(c_a, mask_a), masked_max(c_a, mask_a)]
        pooled += [masked_mean(c_b, mask_b), masked_max(c_b, mask_b)]
        return self.classify(torch.cat(pooled, dim=-1))

    def _enhance(self, encoded: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        return self.enhance(
            torch.cat([encoded, aligned, encoded - aligned, encoded * aligned], dim=-1)
        )

    @staticmethod
    def _both(
        encoder: BiLSTMEncoder,
        a: torch.Tensor,
        mask_a: torch.Tensor,
        b: torch.Tensor,
        mask_b: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one BiLSTM over both sides in a single call (rows of a, then rows of b)."""
        steps = max(a.shape[1], b.shape[1])
        inputs = torch.cat([_pad_time(a, steps), _pad_time(b, steps)])
        mask = torch.cat([_pad_time(mask_a, steps), _pad_time(mask_b, steps)])
        out = encoder(inputs, mask)
        rows = a.shape[0]
        return out[:rows, : a.shape[1]], out[rows:, : b.shape[1]]

    def predict(
        self,
        features_a: Sequence[torch.Tensor],
        features_b: Sequence[torch.Tensor],
        batch_size: int = 128,
    ) -> list[str]:
        self.eval()
        predicted: list[str] = []
        with torch.no_grad():
            for start in range(0, len(features_a), batch_size):
                layers_a, mask_a = pad_features(features_a[start : start + batch_size])
                layers_b, mask_b = pad_features(features_b[start : start + batch_size])
                logits = self(layers_a, mask_a, layers_b, mask_b)
                predicted.extend(self.vocab.decode(logits.argmax(-1).tolist()))
        return predicted


def score_pairs(
    model: PairClassifier,
    features: Sequence[torch.Tensor],
    pairs: Sequence[tuple[int, int, str]],
    ids: Sequence[int],
) -> float:
    """Accuracy (percent) on the pairs `ids`."""
    predicted = model.predict(
        [features[pairs[i][0]] for i in ids], [features[pairs[i][1]] for i in ids]
    )
    return 100.0 * accuracy(predicted, [pairs[i][2] for i in ids])


def train_pair_classifier(
    features: Sequence[torch.Tensor],
    pairs: Sequence[tuple[int, int, str]],
    train: Sequence[int],
    dev: Sequence[int],
    test: Sequence[int],
    mix: bool,
    budget: Budget,
    seed: int,
    output_mix: bool = False,
) -> RunResult:
    """pairs: (premise sentence index, hypothesis sentence index, label); train/dev/test are
    indices into `pairs`. Reports accuracy (percent) on `test`."""
    seed_everything(seed)
    label_set = sorted({pairs[i][2] for i in train})
    n_layers, _, dim = features[pairs[train[0]][0]].shape
    model = PairClassifier(
        n_layers, mix, dim, label_set, budget.hidden, budget.dropout, output_mix=output_mix
    )
    train_ids = list(train)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(batch: list[int]) -> torch.Tensor:
        rows = [pairs[train_ids[i]] for i in batch]
        layers_a, mask_a = pad_features([features[a] for a, _, _ in rows])
        layers_b, mask_b = pad_features([features[b] for _, b, _ in rows])
        gold = torch.tensor(model.vocab.encode([label for _, _, label in rows]))
        return loss_fn(model(layers_a, mask_a, layers_b, mask_b), gold)

    def score(ids: Sequence[int]) -> float:
        return score_pairs(model, features, pairs, ids)

    lengths = [features[pairs[i][0]].shape[1] + features[pairs[i][1]].shape[1] for i in train_ids]
    result = fit(model, lengths, batch_loss, lambda: score(dev), budget, seed)
    return RunResult(
        score=score(test),
        dev_score=result.best_dev,
        fit=result,
        layer_weights=model.mixer.layer_weights(),
        model=model,
    )


def _pad_time(values: torch.Tensor, steps: int) -> torch.Tensor:
    """Zero-pad dim 1 of [B, T, ...] (or a [B, T] mask) to `steps`."""
    missing = steps - values.shape[1]
    if missing == 0:
        return values
    shape = (values.shape[0], missing, *values.shape[2:])
    return torch.cat([values, values.new_zeros(shape)], dim=1)

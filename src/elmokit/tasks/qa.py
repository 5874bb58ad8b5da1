"""Extractive QA head: a small BiDAF (Seo et al., 2017) over cached features (SQuAD JSON).

    c, q    = BiLSTM(representation(context)), BiLSTM(representation(question))  (shared)
    S_ij    = w . [c_i; q_j; c_i * q_j]                           similarity
    c2q_i   = sum_j softmax_j(S_ij) q_j                           context-to-question
    q2c     = sum_i softmax_i(max_j S_ij) c_i                     question-to-context
    G       = [c; c2q; c * c2q; c * q2c]
    M       = BiLSTM(G);  start = w_s . [G; M];  end = w_e . [G; BiLSTM(M)]

Training: cross-entropy on the first answer's start and end tokens. Decoding: the best span
with start <= end and at most `max_answer_tokens` tokens. Scores: SQuAD v1.1 exact match and
F1 (normalised strings, best over the gold answers), in percent.
"""

from __future__ import annotations

import re
import string
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
    masked_softmax,
    pad_features,
    seed_everything,
)
from elmokit.tasks.data import QAExample

MAX_ANSWER_TOKENS = 30


class SpanQA(TaskHead):
    def __init__(
        self, n_layers: int, mix: bool, input_dim: int, hidden: int = 64, dropout: float = 0.3
    ) -> None:
        super().__init__(n_layers, mix, input_dim, dropout, hidden=hidden)
        self.encoder = BiLSTMEncoder(input_dim, hidden)
        width = self.encoder.output_dim  # 2H
        self.sim_c = nn.Linear(width, 1)
        self.sim_q = nn.Linear(width, 1, bias=False)
        self.sim_cq = nn.Parameter(torch.zeros(width))
        self.modeling = BiLSTMEncoder(4 * width, hidden)
        self.end_encoder = BiLSTMEncoder(width, hidden)
        self.dropout = nn.Dropout(dropout)
        self.start_out = nn.Linear(5 * width, 1)
        self.end_out = nn.Linear(5 * width, 1)

    def forward(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        question: torch.Tensor,
        question_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached layers of context [B, n, Tc, D] and question [B, n, Tq, D] -> start and
        end logits [B, Tc] (padding at -1e4)."""
        c = self.encoder(self.represent(context, context_mask), context_mask)  # [B, Tc, 2H]
        q = self.encoder(self.represent(question, question_mask), question_mask)  # [B, Tq, 2H]
        similarity = (
            self.sim_c(c)  # [B, Tc, 1]
            + self.sim_q(q).transpose(1, 2)  # [B, 1, Tq]
            + torch.bmm(c * self.sim_cq, q.transpose(1, 2))  # [B, Tc, Tq]
        )
        c2q = torch.bmm(masked_softmax(similarity, question_mask.unsqueeze(1)), q)
        best = similarity.masked_fill(~question_mask.unsqueeze(1), -1e4).max(dim=2).values
        q2c = torch.bmm(masked_softmax(best, context_mask).unsqueeze(1), c)  # [B, 1, 2H]
        merged = torch.cat([c, c2q, c * c2q, c * q2c], dim=-1)  # [B, Tc, 8H]
        modeled = self.modeling(self.dropout(merged), context_mask)  # [B, Tc, 2H]
        end_modeled = self.end_encoder(self.dropout(modeled), context_mask)
        start = self.start_out(self.dropout(torch.cat([merged, modeled], -1))).squeeze(-1)
        end = self.end_out(self.dropout(torch.cat([merged, end_modeled], -1))).squeeze(-1)
        return start.masked_fill(~context_mask, -1e4), end.masked_fill(~context_mask, -1e4)


def best_spans(
    start: torch.Tensor, end: torch.Tensor, max_tokens: int = MAX_ANSWER_TOKENS
) -> list[tuple[int, int]]:
    """Highest start + end score with start <= end < start + max_tokens, per row."""
    steps = start.shape[1]
    scores = start.unsqueeze(2) + end.unsqueeze(1)  # [B, Tc, Tc]
    band = torch.ones(steps, steps, dtype=torch.bool).triu().tril(max_tokens - 1)
    scores = scores.masked_fill(~band, -1e9)
    flat = scores.flatten(1).argmax(dim=1)
    return [(int(i) // steps, int(i) % steps) for i in flat]


# -- SQuAD v1.1 evaluation ------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, squeeze whitespace (SQuAD v1.1 script)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"em", "f1"} in percent, each the best over a question's gold answers."""
    em = [
        max(exact_match(p, g) for g in gold) for p, gold in zip(predictions, answers, strict=True)
    ]
    f1 = [max(token_f1(p, g) for g in gold) for p, gold in zip(predictions, answers, strict=True)]
    n = max(len(em), 1)
    return {"em": 100.0 * sum(em) / n, "f1": 100.0 * sum(f1) / n}


def span_text(example: QAExample, span: tuple[int, int]) -> str:
    start, end = span
    return example.context_text[example.offsets[start][0] : example.offsets[end][1]]


# -- training -------------------------------------------------------------------------------


def _inputs(
    features: Sequence[torch.Tensor],
    context_index: Sequence[int],
    question_index: Sequence[int],
    ids: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    context, context_mask = pad_features([features[context_index[i]] for i in ids])
    question, question_mask = pad_features([features[question_index[i]] for i in ids])
    return context, context_mask, question, question_mask


def score_qa(
    model: SpanQA,
    features: Sequence[torch.Tensor],
    examples: Sequence[QAExample],
    context_index: Sequence[int],
    question_index: Sequence[int],
    ids: Sequence[int],
    batch_size: int = 32,
) -> dict[str, float]:
    """SQuAD {"em", "f1"} (percent) of the questions `ids`."""
    model.eval()
    predictions: list[str] = []
    with torch.no_grad():
        for begin in range(0, len(ids), batch_size):
            chunk = list(ids[begin : begin + batch_size])
            start, end = model(*_inputs(features, context_index, question_index, chunk))
            spans = best_spans(start, end)
            predictions.extend(span_text(examples[i], s) for i, s in zip(chunk, spans, strict=True))
    return squad_scores(predictions, [examples[i].answers for i in ids])


def train_qa(
    features: Sequence[torch.Tensor],
    examples: Sequence[QAExample],
    context_index: Sequence[int],
    question_index: Sequence[int],
    train: Sequence[int],
    dev: Sequence[int],
    test: Sequence[int],
    mix: bool,
    budget: Budget,
    seed: int,
) -> RunResult:
    """examples[i] has context features features[context_index[i]] and question features
    features[question_index[i]]; train/dev/test index `examples`. Score: F1 (extra: EM)."""
    seed_everything(seed)
    n_layers, _, dim = features[context_index[train[0]]].shape
    model = SpanQA(n_layers, mix, dim, budget.hidden, budget.dropout)
    train_ids = list(train)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(batch: list[int]) -> torch.Tensor:
        rows = [train_ids[i] for i in batch]
        start, end = model(*_inputs(features, context_index, question_index, rows))
        gold_start = torch.tensor([examples[r].span[0] for r in rows])
        gold_end = torch.tensor([examples[r].span[1] for r in rows])
        return loss_fn(start, gold_start) + loss_fn(end, gold_end)

    def evaluate(ids: Sequence[int]) -> dict[str, float]:
        return score_qa(model, features, examples, context_index, question_index, ids)

    lengths = [features[context_index[i]].shape[1] for i in train_ids]
    result = fit(model, lengths, batch_loss, lambda: evaluate(dev)["f1"], budget, seed)
    scores = evaluate(test)
    return RunResult(
        score=scores["f1"],
        dev_score=result.best_dev,
        fit=result,
        layer_weights=model.mixer.layer_weights(),
        extra={"em": scores["em"]},
        model=model,
    )

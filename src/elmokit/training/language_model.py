"""The biLM training objective: a shared softmax over the vocabulary for both directions.

The forward LM predicts the next word, the backward LM (fed reversed sentences) the previous
one; both read the same token encoder and write into the same softmax, and the loss is the
mean of the two directions' cross-entropies (bilm-tf). Large vocabularies use a sampled
softmax with a log-uniform sampler (ids must be in frequency order); evaluation always uses
the full softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from elmokit.bilm import BiLM
from elmokit.modules.lstm import LSTMState
from elmokit.training.data import LMBatch


class SoftmaxHead(nn.Module):
    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def full_nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood, hidden [N, P], targets [N] -> [N]."""
        logits = torch.addmm(self.bias, hidden, self.weight.t())  # [N, V], bf16 under autocast
        return ChunkedCrossEntropy.apply(logits, targets)

    def sampled_nll(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        n_negative: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Sampled-softmax NLL (Jean et al. 2015, as TF's sampled_softmax_loss with a
        log-uniform sampler): logits corrected by log expected counts, accidental hits removed."""
        vocab_size = self.weight.shape[0]
        negatives = log_uniform_sample(n_negative, vocab_size, generator).to(hidden.device)
        log_range = math.log(vocab_size + 1)

        def log_expected_count(ids: torch.Tensor) -> torch.Tensor:
            ids_f = ids.to(torch.float32)
            probability = (torch.log(ids_f + 2) - torch.log(ids_f + 1)) / log_range
            # Sampling with replacement: expected count of id among n_negative draws.
            return torch.log(-torch.expm1(n_negative * torch.log1p(-probability)))

        true_logits = (hidden * self.weight[targets]).sum(-1) + self.bias[targets]
        true_logits = true_logits - log_expected_count(targets)
        sampled_logits = torch.addmm(self.bias[negatives], hidden, self.weight[negatives].t())
        sampled_logits = sampled_logits - log_expected_count(negatives)
        accidental = targets.unsqueeze(1) == negatives.unsqueeze(0)
        sampled_logits = sampled_logits.masked_fill(accidental, float("-inf"))
        logits = torch.cat([true_logits.unsqueeze(1), sampled_logits], dim=1)
        return -torch.log_softmax(logits, dim=1)[:, 0]


class ChunkedCrossEntropy(torch.autograd.Function):
    """cross_entropy(logits.float(), targets, reduction="none"), computed a few rows at a time.

    Under bf16 autocast the plain form made four fp32 copies of the [N, V] logits per direction
    and step (the upcast, log-softmax's output kept for backward, the scattered one-hot gradient,
    its gradient) and then cast the gradient back to bf16: about a third of a training step
    with a 16k-word vocabulary (profiled, benchmarks/README.md). Here each block of rows is
    upcast while it is in cache, only the per-row log-sum-exp is kept, and the gradient is
    written once in the logits' dtype. The sums stay fp32 as before.
    """

    # 64 rows x 16k words x 4 bytes = 4 MB of fp32 at a time.
    BLOCK_ELEMENTS = 1 << 20

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n_rows, vocab_size = logits.shape
        rows_per_block = max(1, ChunkedCrossEntropy.BLOCK_ELEMENTS // max(vocab_size, 1))
        log_sum_exp = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        for start in range(0, n_rows, rows_per_block):
            block = logits[start : start + rows_per_block].float()
            log_sum_exp[start : start + rows_per_block] = torch.logsumexp(block, dim=1)
        target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1).float()
        ctx.save_for_backward(logits, targets, log_sum_exp)
        ctx.rows_per_block = rows_per_block
        return log_sum_exp - target_logits

    @staticmethod
    def backward(ctx, grad_nll: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, log_sum_exp = ctx.saved_tensors
        rows_per_block = ctx.rows_per_block
        grad_logits = torch.empty_like(logits)
        grad_nll = grad_nll.float()
        for start in range(0, logits.shape[0], rows_per_block):
            stop = start + rows_per_block
            # d nll / d logits = softmax - one_hot(target), scaled by the incoming gradient.
            probabilities = (logits[start:stop].float() - log_sum_exp[start:stop, None]).exp_()
            rows = torch.arange(probabilities.shape[0], device=logits.device)
            probabilities[rows, targets[start:stop]] -= 1.0
            probabilities.mul_(grad_nll[start:stop, None])
            grad_logits[start:stop] = probabilities
        return grad_logits, None


def log_uniform_sample(n: int, vocab_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """n ids from P(k) = log((k + 2) / (k + 1)) / log(V + 1), by inverting the CDF."""
    uniform = torch.rand(n, generator=generator, dtype=torch.float64)
    ids = torch.floor(torch.exp(uniform * math.log(vocab_size + 1))).long() - 1
    return ids.clamp_(0, vocab_size - 1)


@dataclass
class LMLoss:
    loss: torch.Tensor  # mean of the two directions' mean NLL (what is optimised)
    forward_nll_sum: torch.Tensor  # detached sums and counts for perplexity bookkeeping
    backward_nll_sum: torch.Tensor
    forward_tokens: torch.Tensor
    backward_tokens: torch.Tensor
    state: LSTMState


class BiLanguageModel(nn.Module):
    """BiLM + shared softmax; forward(batch, state) -> LMLoss. One module so DDP sees all."""

    def __init__(self, bilm: BiLM, vocab_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.bilm = bilm
        self.softmax = SoftmaxHead(vocab_size, bilm.config.projection_dim)
        self.dropout = dropout
        bilm.lstm.dropout = dropout

    def forward(
        self,
        batch: LMBatch,
        state: LSTMState | None,
        n_negative: int = 0,
        generator: torch.Generator | None = None,
    ) -> LMLoss:
        forward_top, backward_top, new_state = self.bilm.language_model_forward(
            batch.forward.char_ids, batch.backward.char_ids, state
        )
        sums, counts, means = [], [], []
        for top, direction in ((forward_top, batch.forward), (backward_top, batch.backward)):
            if self.training and self.dropout > 0:
                top = nn.functional.dropout(top, self.dropout, training=True)
            mask = direction.mask.reshape(-1)
            hidden = top.reshape(-1, top.shape[-1])[mask]
            targets = direction.target_ids.reshape(-1)[mask]
            if n_negative > 0 and self.training:
                nll = self.softmax.sampled_nll(hidden, targets, n_negative, generator)
            else:
                nll = self.softmax.full_nll(hidden, targets)
            total = nll.sum()
            count = mask.sum()
            sums.append(total.detach())
            counts.append(count)
            # A direction can be all padding in the final batch: it then adds nothing.
            means.append(total / count.clamp(min=1))
        return LMLoss(
            loss=(means[0] + means[1]) / 2,
            forward_nll_sum=sums[0],
            backward_nll_sum=sums[1],
            forward_tokens=counts[0],
            backward_tokens=counts[1],
            state=new_state,
        )

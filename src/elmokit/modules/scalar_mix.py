"""ScalarMix: the task-specific weighting of biLM layers from the ELMo paper (eq. 1).

    mix = gamma * sum_j softmax(w)_j * h_j

With `do_layer_norm`, each layer is first normalised as bilm-tf and AllenNLP do it: NOT a
per-token LayerNorm, but one mean and one variance per layer over all unmasked elements of the
whole batch, with no affine parameters (see FORMATS.md, "ScalarMix").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LAYER_NORM_EPS = 1e-12


class ScalarMix(nn.Module):
    """Softmax-weighted, gamma-scaled sum of `n_layers` tensors of equal shape [B, T, D].

    `scalar_parameters` [n_layers] holds w (softmax is taken in forward, so w = 0 is the
    uniform average) and `gamma` [1] the overall scale. With `trainable=False` both stay
    fixed, which is what AllenNLP does when explicit mixing weights are given.
    """

    def __init__(
        self,
        n_layers: int,
        do_layer_norm: bool = False,
        initial_scalar_parameters: Sequence[float] | None = None,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"ScalarMix needs at least one layer, got n_layers={n_layers}")
        if initial_scalar_parameters is None:
            initial = [0.0] * n_layers
        else:
            initial = [float(value) for value in initial_scalar_parameters]
            if len(initial) != n_layers:
                raise ValueError(
                    f"initial_scalar_parameters has {len(initial)} values for {n_layers} layers"
                )
        self.n_layers = n_layers
        self.do_layer_norm = do_layer_norm
        self.scalar_parameters = nn.Parameter(torch.tensor(initial), requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor([1.0]), requires_grad=trainable)

    def extra_repr(self) -> str:
        return f"n_layers={self.n_layers}, do_layer_norm={self.do_layer_norm}"

    def forward(
        self,
        tensors: torch.Tensor | Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tensors: a list of n_layers tensors [B, T, D] or one tensor [B, n_layers, T, D];
        mask [B, T] (bool or 0/1), required with do_layer_norm. Returns [B, T, D]."""
        stacked = self._stack(tensors)  # [n_layers, B, T, D]
        if self.do_layer_norm:
            if mask is None:
                raise ValueError("ScalarMix with do_layer_norm=True needs the mask [batch, time]")
            stacked = self._masked_layer_norm(stacked, mask)
        weights = torch.softmax(self.scalar_parameters, dim=0).to(stacked.dtype)  # [n_layers]
        mixed = torch.tensordot(weights, stacked, dims=([0], [0]))  # [B, T, D]
        return self.gamma.to(stacked.dtype) * mixed

    def l2_penalty(self) -> torch.Tensor:
        """||w||^2 (a scalar): the paper's regulariser is lambda * this, lambda up to the caller."""
        return (self.scalar_parameters**2).sum()

    def layer_weights(self) -> torch.Tensor:
        """softmax(w) [n_layers], detached: the current share of each layer (for plots)."""
        return torch.softmax(self.scalar_parameters.detach(), dim=0)

    # -- helpers ------------------------------------------------------------------------

    def _stack(self, tensors: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(tensors, torch.Tensor):
            if tensors.dim() != 4:
                raise ValueError(
                    "ScalarMix takes a list of [batch, time, dim] tensors or one tensor "
                    f"[batch, n_layers, time, dim], got a tensor of shape {list(tensors.shape)}"
                )
            if tensors.shape[1] != self.n_layers:
                raise ValueError(
                    f"ScalarMix was built for {self.n_layers} layers, got {tensors.shape[1]} "
                    f"(tensor of shape {list(tensors.shape)}, layers on dim 1)"
                )
            return tensors.transpose(0, 1)
        layers = list(tensors)
        if len(layers) != self.n_layers:
            raise ValueError(f"ScalarMix was built for {self.n_layers} layers, got {len(layers)}")
        shape = layers[0].shape
        if len(shape) != 3 or any(layer.shape != shape for layer in layers):
            raise ValueError(
                "ScalarMix needs layers of one shape [batch, time, dim], got "
                f"{[list(layer.shape) for layer in layers]}"
            )
        return torch.stack(layers)

    @staticmethod
    def _masked_layer_norm(stacked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """stacked [L, B, T, D], mask [B, T] -> each layer normalised by its own batch-wide
        masked mean and variance (the masked positions are not counted, but are normalised
        too, as AllenNLP does; callers zero them afterwards if they care)."""
        if mask.shape != stacked.shape[1:3]:
            raise ValueError(
                f"mask shape {list(mask.shape)} does not match the layers' [batch, time] "
                f"{list(stacked.shape[1:3])}"
            )
        weight = mask.to(stacked.dtype)[None, :, :, None]  # [1, B, T, 1]
        # Each unmasked token contributes D elements; clamp so an all-padding batch gives
        # zeros instead of NaN.
        count = (weight.sum() * stacked.shape[-1]).clamp(min=1.0)
        mean = (stacked * weight).sum(dim=(1, 2, 3), keepdim=True) / count  # [L, 1, 1, 1]
        variance = (((stacked - mean) * weight) ** 2).sum(dim=(1, 2, 3), keepdim=True) / count
        return (stacked - mean) / torch.sqrt(variance + LAYER_NORM_EPS)

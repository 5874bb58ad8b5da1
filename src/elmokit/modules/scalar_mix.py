"""ScalarMix: the task-specific weighting of biLM layers from the ELMo paper (eq. 1).

    mix = gamma * sum_j softmax(w)_j * h_j

With `do_layer_norm`, each layer is first normalised as bilm-tf and AllenNLP do it: NOT a
per-token LayerNorm, but one mean and one variance per layer over all unmasked elements of the
whole batch, with no affine parameters (see FORMATS.md, "ScalarMix").

Parameters are laid out as AllenNLP's ScalarMix lays them out, so AllenNLP code and state dicts
work unchanged: `scalar_parameters` is a ParameterList of `mixture_size` tensors of shape [1]
(keys `scalar_parameters.0`, `scalar_parameters.1`, ...) and `gamma` is [1]. A state dict of
elmokit 0.1, which kept w as one tensor `scalar_parameters` [n], still loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LAYER_NORM_EPS = 1e-12


class ScalarMix(nn.Module):
    """Softmax-weighted, gamma-scaled sum of `mixture_size` tensors of equal shape [B, T, D].

    `scalar_parameters[j]` [1] holds w_j (softmax is taken in forward, so w = 0 is the
    uniform average) and `gamma` [1] the overall scale. With `trainable=False` both stay
    fixed, which is what AllenNLP does when explicit mixing weights are given. `weights()`
    is w as one tensor [mixture_size].
    """

    def __init__(
        self,
        mixture_size: int,
        do_layer_norm: bool = False,
        initial_scalar_parameters: Sequence[float] | None = None,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        n_layers = mixture_size
        if n_layers < 1:
            raise ValueError(f"ScalarMix needs at least one layer, got mixture_size={n_layers}")
        if initial_scalar_parameters is None:
            initial = [0.0] * n_layers
        else:
            initial = [float(value) for value in initial_scalar_parameters]
            if len(initial) != n_layers:
                raise ValueError(
                    f"initial_scalar_parameters has {len(initial)} values for {n_layers} layers"
                )
        self.n_layers = self.mixture_size = n_layers
        self.do_layer_norm = do_layer_norm
        self.scalar_parameters = nn.ParameterList(
            nn.Parameter(torch.tensor([value]), requires_grad=trainable) for value in initial
        )
        self.gamma = nn.Parameter(torch.tensor([1.0]), requires_grad=trainable)
        self._register_load_state_dict_pre_hook(_split_old_scalar_parameters)

    def extra_repr(self) -> str:
        return f"mixture_size={self.n_layers}, do_layer_norm={self.do_layer_norm}"

    def weights(self) -> torch.Tensor:
        """w [mixture_size], the pre-softmax mixing weights as one tensor (differentiable)."""
        return torch.cat(list(self.scalar_parameters))

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
        weights = torch.softmax(self.weights(), dim=0).to(stacked.dtype)  # [n_layers]
        mixed = torch.tensordot(weights, stacked, dims=([0], [0]))  # [B, T, D]
        return self.gamma.to(stacked.dtype) * mixed

    def l2_penalty(self) -> torch.Tensor:
        """||w||^2 (a scalar): the paper's regulariser is lambda * this, lambda up to the caller."""
        return (self.weights() ** 2).sum()

    def layer_weights(self) -> torch.Tensor:
        """softmax(w) [n_layers], detached: the current share of each layer (for plots)."""
        return torch.softmax(self.weights().detach(), dim=0)

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


def _split_old_scalar_parameters(
    state_dict: dict[str, torch.Tensor], prefix: str, *args: object
) -> None:
    """elmokit 0.1 stored w as one tensor `scalar_parameters` [n]: split it into the
    ParameterList's `scalar_parameters.j` [1] entries before loading."""
    old = state_dict.pop(prefix + "scalar_parameters", None)
    if old is not None:
        for index, value in enumerate(old.reshape(-1)):
            state_dict[f"{prefix}scalar_parameters.{index}"] = value.reshape(1).clone()

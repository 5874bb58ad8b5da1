"""Forward and backward stacks of projected, clipped LSTMs, run together.

Both directions are processed in lockstep as a leading dimension of size 2, so each time step
is one batched matrix product for the pair. Sequences are sorted by length (longest first) and
the active batch shrinks as sequences end, so no work is spent on padding and each row's final
state is the state after its own last token.

Weights keep the published layout: `W_0[d]` is [input + P, 4H] with rows [input ; h_prev] and
gate columns in TF order [i, j, f, o]; `B[d]` has no forget bias (+1 is added at run time);
`W_P[d]` is the [H, P] projection. Direction d = 0 is forward, 1 backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from elmokit.config import BiLMConfig
from elmokit.modules import fast_lstm
from elmokit.modules.fast_inference import (  # MIN_GEMM_ROWS: see there
    DEFAULT_INFERENCE_MODE,
    MIN_GEMM_ROWS,
    InferenceMode,
    WeightCache,
    use_fast_path,
)

FORGET_BIAS = 1.0


@dataclass
class LSTMState:
    """Per layer and direction: h [n_layers, 2, batch, P] and c [n_layers, 2, batch, H]."""

    h: torch.Tensor
    c: torch.Tensor

    def detach(self) -> LSTMState:
        return LSTMState(self.h.detach(), self.c.detach())

    @property
    def batch_size(self) -> int:
        return int(self.h.shape[2])


class ProjectedLSTMLayer(nn.Module):
    """The forward and backward LSTM cells of one layer (parameters only; stepping is in
    BiLSTMStack so that all layers share one loop implementation)."""

    def __init__(self, input_dim: int, hidden_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.W_0 = nn.Parameter(torch.empty(2, input_dim + projection_dim, 4 * hidden_dim))
        self.B = nn.Parameter(torch.empty(2, 4 * hidden_dim))
        self.W_P = nn.Parameter(torch.empty(2, hidden_dim, projection_dim))

    def gate_bias(self) -> torch.Tensor:
        """B plus the forget-gate bias that the file does not store: [2, 1, 4H]."""
        hidden = self.B.shape[1] // 4
        forget = torch.zeros_like(self.B)
        forget[:, 2 * hidden : 3 * hidden] = FORGET_BIAS
        return (self.B + forget).unsqueeze(1)


class BiLSTMStack(nn.Module):
    def __init__(self, config: BiLMConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            ProjectedLSTMLayer(config.projection_dim, config.lstm_dim, config.projection_dim)
            for _ in range(config.n_layers)
        )
        self.dropout = 0.0  # set by training code; applied to every layer input when training
        # Without autograd, modes other than "reference" run fast_lstm.run_inference, on
        # weights it prepares once and keeps here (never part of state_dict).
        self.inference_mode: InferenceMode = DEFAULT_INFERENCE_MODE
        self.inference_weights = WeightCache()

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> LSTMState:
        n_layers, hidden, proj = (
            self.config.n_layers,
            self.config.lstm_dim,
            self.config.projection_dim,
        )
        return LSTMState(
            h=torch.zeros(n_layers, 2, batch_size, proj, device=device, dtype=dtype),
            c=torch.zeros(n_layers, 2, batch_size, hidden, device=device, dtype=dtype),
        )

    def forward(
        self, inputs: torch.Tensor, lengths: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[list[torch.Tensor], LSTMState]:
        """Run both directions over inputs already in each direction's processing order.

        inputs [2, B, T, P]: inputs[0] for the forward LSTM, inputs[1] for the backward one
        (the caller reverses it, or feeds an independent reversed stream when training).
        lengths [B]: real steps per row; rows are left-aligned.
        Returns each layer's output [2, B, T, P] (zero past a row's length, residual added) and
        the final state per row.
        """
        _, real_batch, steps, _ = inputs.shape
        if state is None:
            # The parameters' dtype, not the inputs': under autocast inputs are bf16.
            first_layer = cast(ProjectedLSTMLayer, self.layers[0])
            state = self.zero_state(real_batch, inputs.device, first_layer.W_0.dtype)
        lengths = lengths.to("cpu")
        if real_batch < MIN_GEMM_ROWS:
            inputs, lengths, state = _pad_batch(inputs, lengths, state, MIN_GEMM_ROWS)
        sorted_lengths, order = torch.sort(lengths, descending=True)
        # active[t] = number of rows still running at step t (sorted order).
        active = [
            int(n) for n in (sorted_lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1)
        ]
        order_dev = order.to(inputs.device)
        layer_input = inputs.index_select(1, order_dev)
        h_sorted = state.h.index_select(2, order_dev)
        c_sorted = state.c.index_select(2, order_dev)
        dropout = self.training and self.dropout > 0
        if not dropout and use_fast_path(self.inference_mode, self.parameters()):
            outputs, final_h, final_c = fast_lstm.run_inference(
                self, layer_input, active, h_sorted, c_sorted
            )
        else:
            unpack_index = _unpack_index(sorted_lengths, active, steps).to(inputs.device)
            outputs, final_h, final_c = [], [], []
            for index, layer in enumerate(cast(list[ProjectedLSTMLayer], list(self.layers))):
                if dropout:
                    layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
                stepped, h_last, c_last = self._run_layer(
                    layer, layer_input, active, unpack_index, h_sorted[index], c_sorted[index]
                )
                if index > 0 and self.config.use_skip_connections:
                    stepped = stepped + layer_input
                outputs.append(stepped)
                final_h.append(h_last)
                final_c.append(c_last)
                layer_input = stepped

        restore = torch.argsort(order_dev)[:real_batch]
        outputs = [output.index_select(1, restore) for output in outputs]
        final_state = LSTMState(
            h=torch.stack(final_h).index_select(2, restore),
            c=torch.stack(final_c).index_select(2, restore),
        )
        return outputs, final_state

    def _run_layer(
        self,
        layer: ProjectedLSTMLayer,
        layer_input: torch.Tensor,  # [2, B, T, in], rows sorted by length
        active: list[int],
        unpack_index: torch.Tensor,  # [B, T] into the packed step outputs
        h: torch.Tensor,  # [2, B, P]
        c: torch.Tensor,  # [2, B, H]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, batch, steps, input_dim = layer_input.shape
        hidden = layer.W_P.shape[1]
        w_input = layer.W_0[:, :input_dim]  # [2, in, 4H]
        # Cast once, not at every step: autocast caches its casts of parameters, but this is
        # a slice of one, which it would convert again for each step's product.
        w_hidden = _autocast_dtype(layer.W_0[:, input_dim:])  # [2, P, 4H]
        cell_clip, proj_clip = self.config.cell_clip, self.config.proj_clip
        state_dtype = layer.W_0.dtype
        # One large product for the input half of every step (the expensive part for long T).
        input_gates = torch.baddbmm(
            layer.gate_bias(), layer_input.reshape(2, batch * steps, input_dim), w_input
        ).view(2, batch, steps, 4 * hidden)
        # One tensor per step, made once: slicing step t out of the whole [2, B, T, 4H] tensor
        # inside the loop made autograd build a zero-filled [2, B, T, 4H] gradient for every
        # step (T^2 memory traffic: a quarter of a bf16 training step, measured).
        step_gates = input_gates.unbind(dim=2)

        step_outputs: list[torch.Tensor] = []
        finished_h: list[torch.Tensor] = []  # rows that ended, last rows first
        finished_c: list[torch.Tensor] = []
        running = batch
        for t in range(steps):
            n_active = active[t]
            if n_active < running:
                finished_h.append(h[:, n_active:running])
                finished_c.append(c[:, n_active:running])
                running = n_active
            if n_active == 0:
                break
            # Rows past n_active (if any) only keep the products at MIN_GEMM_ROWS rows.
            rows = max(n_active, MIN_GEMM_ROWS)
            h, c = h[:, :rows], c[:, :rows]
            # .to(): under bf16 autocast the products are bf16 but the cell state and gate
            # math stay in the parameters' dtype (bf16 cell state over hundreds of carried
            # steps loses too much); a no-op without autocast.
            gates = torch.baddbmm(step_gates[t][:, :rows], h, w_hidden).to(state_dtype)
            in_gate, new_input, forget_gate, out_gate = gates.chunk(4, dim=2)
            c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(new_input)
            if cell_clip is not None:
                c = c.clamp(-cell_clip, cell_clip)
            h = torch.bmm(torch.sigmoid(out_gate) * torch.tanh(c), layer.W_P).to(state_dtype)
            if proj_clip is not None:
                h = h.clamp(-proj_clip, proj_clip)
            step_outputs.append(h[:, :n_active])
        if running > 0:
            finished_h.append(h[:, :running])
            finished_c.append(c[:, :running])
        h_last = torch.cat(finished_h[::-1], dim=1)
        c_last = torch.cat(finished_c[::-1], dim=1)

        projection = layer.W_P.shape[2]
        # Packed outputs plus one zero row that padding positions point at.
        packed = torch.cat([*step_outputs, layer_input.new_zeros(2, 1, projection)], dim=1)
        unpacked = packed[:, unpack_index.reshape(-1)].view(2, batch, steps, projection)
        return unpacked, h_last, c_last


def _autocast_dtype(weight: torch.Tensor) -> torch.Tensor:
    """`weight` in autocast's dtype when autocast is on for its device, else unchanged."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def _unpack_index(sorted_lengths: torch.Tensor, active: list[int], steps: int) -> torch.Tensor:
    """[B, T] index into the time-major packed outputs; padding points at the final zero row."""
    offsets = torch.tensor([0, *active], dtype=torch.long).cumsum(0)  # start of each step
    total = int(offsets[-1])
    batch = sorted_lengths.shape[0]
    rows = torch.arange(batch).unsqueeze(1)
    times = torch.arange(steps).unsqueeze(0)
    index = offsets[:steps].unsqueeze(0) + rows
    return torch.where(times < sorted_lengths.unsqueeze(1), index, torch.full_like(index, total))


def _pad_batch(
    inputs: torch.Tensor, lengths: torch.Tensor, state: LSTMState, rows: int
) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
    """Add zero-length rows (zero input, zero state) up to `rows`."""
    extra = rows - inputs.shape[1]
    pad_input = inputs.new_zeros(2, extra, *inputs.shape[2:])
    pad_h = state.h.new_zeros(*state.h.shape[:2], extra, state.h.shape[3])
    pad_c = state.c.new_zeros(*state.c.shape[:2], extra, state.c.shape[3])
    return (
        torch.cat([inputs, pad_input], dim=1),
        torch.cat([lengths, lengths.new_zeros(extra)]),
        LSTMState(torch.cat([state.h, pad_h], dim=2), torch.cat([state.c, pad_c], dim=2)),
    )

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

import bisect
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from elmokit.config import BiLMConfig
from elmokit.modules.fast_inference import (  # MIN_GEMM_ROWS: see there
    MIN_GEMM_ROWS,
    InferenceMode,
    PackedLinear,
    WeightCache,
    use_fast_path,
)

# The inference path computes the input half of the gates for this many values at a time
# (rows x 4H), bounding its memory (16 MB) instead of holding [B, T, 4H] for the whole batch.
_INPUT_GATE_CHUNK = 4 * 1024 * 1024

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
        # Without autograd the stack runs `_run_inference` (see fast_inference.py).
        # The exact autograd path by default; "fp32" (oneDNN, 3x faster, within ~1.2e-5) is
        # opt-in until its memory growth over many batch shapes is bounded.
        self.inference_mode: InferenceMode = "reference"
        self._inference_weights = WeightCache()

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
            outputs, final_h, final_c = self._run_inference(layer_input, active, h_sorted, c_sorted)
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
        w_hidden = layer.W_0[:, input_dim:]  # [2, P, 4H]
        cell_clip, proj_clip = self.config.cell_clip, self.config.proj_clip
        state_dtype = layer.W_0.dtype
        # One large product for the input half of every step (the expensive part for long T).
        input_gates = torch.baddbmm(
            layer.gate_bias(), layer_input.reshape(2, batch * steps, input_dim), w_input
        ).view(2, batch, steps, 4 * hidden)

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
            gates = torch.baddbmm(input_gates[:, :rows, t], h, w_hidden).to(state_dtype)
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

    # -- inference ----------------------------------------------------------------------

    def _run_inference(
        self,
        layer_input: torch.Tensor,  # [2, B, T, P], rows sorted by length
        active: list[int],
        h: torch.Tensor,  # [n_layers, 2, B, P]
        c: torch.Tensor,  # [n_layers, 2, B, H]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The same recurrence without autograd, on prepared weights, one direction at a time.

        Time-major and packed: step t works on its first rows[t] rows only, so padding costs
        nothing in the input product either (the autograd path multiplies all B x T rows).
        """
        weights = self._inference_weights.get(
            self.inference_mode, self.parameters(), self._prepare_inference_weights
        )
        _, batch, steps, _ = layer_input.shape
        rows = [min(max(n, MIN_GEMM_ROWS), batch) for n in active if n > 0]
        x = layer_input.transpose(1, 2)  # [2, T, B, P] time-major (a view)
        outputs: list[torch.Tensor] = []
        final_h: list[torch.Tensor] = []
        final_c: list[torch.Tensor] = []
        for index, layer_weights in enumerate(weights):
            out = x.new_zeros(2, steps, batch, x.shape[-1])
            h_last, c_last = [], []
            for direction, (w_input, w_hidden, w_proj) in enumerate(layer_weights):
                h_d, c_d = self._run_direction(
                    w_input,
                    w_hidden,
                    w_proj,
                    x[direction],
                    out[direction],
                    active,
                    rows,
                    h[index, direction],
                    c[index, direction],
                )
                h_last.append(h_d)
                c_last.append(c_d)
            if index > 0 and self.config.use_skip_connections:
                out += x
            outputs.append(out.transpose(1, 2))
            final_h.append(torch.stack(h_last))
            final_c.append(torch.stack(c_last))
            x = out
        return outputs, final_h, final_c

    def _run_direction(
        self,
        w_input: PackedLinear,
        w_hidden: PackedLinear,
        w_proj: PackedLinear,
        x: torch.Tensor,  # [T, B, in] time-major, rows sorted by length
        out: torch.Tensor,  # [T, B, P] zeros, written for each row's real steps
        active: list[int],
        rows: list[int],  # rows computed at each real step
        h: torch.Tensor,  # [B, P]
        c: torch.Tensor,  # [B, H]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = c.shape[1]
        cell_clip, proj_clip = self.config.cell_clip, self.config.proj_clip
        starts = [0]
        for n in rows:
            starts.append(starts[-1] + n)
        packed = torch.cat([x[t, :n] for t, n in enumerate(rows)]) if rows else x[0, :0]
        chunk_rows = max(1, _INPUT_GATE_CHUNK // (4 * hidden))
        input_gates, chunk_start, chunk_end = packed, 0, 0
        finished_h: list[torch.Tensor] = []  # rows that ended, last rows first
        finished_c: list[torch.Tensor] = []
        running = h.shape[0]
        # The cell state and tanh(c) o are updated in place in two buffers: fewer allocations
        # of varying size, which otherwise fragment the heap (+200 MB peak RSS measured on the
        # original model over 1,000 sentences).
        c = c.clone()
        cell_out = torch.empty_like(c)
        for t, n_rows in enumerate(rows):
            if starts[t] >= chunk_end:  # the input half of the next steps' gates, bias included
                chunk_start = starts[t]
                last = bisect.bisect_right(starts, chunk_start + chunk_rows) - 1
                chunk_end = max(starts[last], starts[t + 1])
                input_gates = w_input(packed[chunk_start:chunk_end])
            n_active = active[t]
            if n_active < running:
                finished_h.append(h[n_active:running])
                finished_c.append(c[n_active:running].clone())
                running = n_active
            h, c = h[:n_rows], c[:n_rows]
            gates = w_hidden(h)
            gates += input_gates[starts[t] - chunk_start : starts[t + 1] - chunk_start]
            in_gate, new_input, forget_gate, out_gate = gates.split(hidden, dim=1)
            gates[:, 2 * hidden :].sigmoid_()  # forget and output gates, adjacent
            in_gate.sigmoid_()
            # tanh(x) = 2 sigmoid(2x) - 1: float32 tanh is ~10x slower than sigmoid on CPU
            # (measured 0.56 ms vs 0.06 ms for 64 x 4096 values), and each step needs two of
            # them; the result differs from tanh by < 2e-7.
            c.mul_(forget_gate).addcmul_(in_gate, _tanh_(new_input))
            if cell_clip is not None:
                c.clamp_(-cell_clip, cell_clip)
            hidden_out = _tanh_(torch.mul(c, 2.0, out=cell_out[:n_rows]), doubled=True)
            h = w_proj(hidden_out.mul_(out_gate))
            if proj_clip is not None:
                h.clamp_(-proj_clip, proj_clip)
            out[t, :n_active] = h[:n_active]
        if running > 0:
            finished_h.append(h[:running])
            finished_c.append(c[:running])
        return torch.cat(finished_h[::-1]), torch.cat(finished_c[::-1])

    def _prepare_inference_weights(
        self,
    ) -> list[list[tuple[PackedLinear, PackedLinear, PackedLinear]]]:
        """Per layer and direction: (input half with the gate bias, hidden half, projection)."""
        mode = self.inference_mode
        prepared = []
        for layer in cast(list[ProjectedLSTMLayer], list(self.layers)):
            bias = layer.gate_bias().detach()
            input_dim = layer.input_dim
            prepared.append(
                [
                    (
                        # Used on hundreds of rows at once: read in place, no copy (fp32).
                        PackedLinear(layer.W_0[d, :input_dim], bias[d, 0], mode, prepack=False),
                        PackedLinear(layer.W_0[d, input_dim:], None, mode),
                        PackedLinear(layer.W_P[d], None, mode),
                    )
                    for d in range(2)
                ]
            )
        return prepared


def _tanh_(x: torch.Tensor, doubled: bool = False) -> torch.Tensor:
    """tanh(x) in place, as 2 sigmoid(2x) - 1; `doubled`: x already holds 2x."""
    if not doubled:
        x.mul_(2.0)
    return x.sigmoid_().mul_(2.0).sub_(1.0)


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

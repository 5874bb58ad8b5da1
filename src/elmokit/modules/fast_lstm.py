"""The LSTM stack's inference engine: the recurrence of lstm.py without autograd, fast.

`BiLSTMStack.forward` switches here when no gradient can be needed (fast_inference.
use_fast_path). Same arithmetic as the autograd path up to float rounding, organised for speed:
- time-major and packed: step t works on its first rows[t] rows only, so padding costs nothing
  in the input product either (the autograd path multiplies all B x T rows);
- products on weights prepared once per mode (fast_inference.PackedLinear), rebuilt when the
  parameters change; the per-step weights prepacked only while the copies are small
  (PREPACK_LIMIT_BYTES: not for the original shape, where they would add 160 MB);
- the input half of the gates in chunks of _INPUT_GATE_CHUNK values (16 MB) instead of
  [B, T, 4H] for the whole batch;
- the cell state updated in place, tanh computed as 2 sigmoid(2x) - 1.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, cast

import torch

from elmokit.config import BiLMConfig
from elmokit.modules.fast_inference import MIN_GEMM_ROWS, PackedLinear

if TYPE_CHECKING:
    from elmokit.modules.lstm import BiLSTMStack, ProjectedLSTMLayer

# The input half of the gates is computed for this many values at a time (rows x 4H),
# bounding the memory (16 MB) instead of holding [B, T, 4H] for the whole batch.
_INPUT_GATE_CHUNK = 4 * 1024 * 1024
# The per-step weights (recurrent half and projection) are prepacked into oneDNN's layout, a
# copy beside the parameters, only while the copies stay this small. Measured on the original
# shape (1 thread, 320 sentences, batch 64): prepacked 160 MB more peak RSS (1,047 vs 843 MB)
# for 7% more speed (409 vs 380 tokens/s); the small shape's copies are 10 MB.
PREPACK_LIMIT_BYTES = 64 * 1024 * 1024


def run_inference(
    stack: BiLSTMStack,
    layer_input: torch.Tensor,  # [2, B, T, P], rows sorted by length
    active: list[int],
    h: torch.Tensor,  # [n_layers, 2, B, P]
    c: torch.Tensor,  # [n_layers, 2, B, H]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The same recurrence without autograd, on prepared weights, one direction at a time.

    Time-major and packed: step t works on its first rows[t] rows only, so padding costs
    nothing in the input product either (the autograd path multiplies all B x T rows).
    """
    weights = stack.inference_weights.get(
        stack.inference_mode, stack.parameters(), lambda: _prepare_weights(stack)
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
            h_d, c_d = _run_direction(
                stack.config,
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
        if index > 0 and stack.config.use_skip_connections:
            out += x
        outputs.append(out.transpose(1, 2))
        final_h.append(torch.stack(h_last))
        final_c.append(torch.stack(c_last))
        x = out
    return outputs, final_h, final_c


def _run_direction(
    config: BiLMConfig,
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
    cell_clip, proj_clip = config.cell_clip, config.proj_clip
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


def _prepare_weights(
    stack: BiLSTMStack,
) -> list[list[tuple[PackedLinear, PackedLinear, PackedLinear]]]:
    """Per layer and direction: (input half with the gate bias, hidden half, projection)."""
    mode = stack.inference_mode
    layers = cast("list[ProjectedLSTMLayer]", list(stack.layers))
    per_step_bytes = sum(
        (layer.W_0[:, layer.input_dim :].numel() + layer.W_P.numel()) * layer.W_P.element_size()
        for layer in layers
    )
    prepack = per_step_bytes <= PREPACK_LIMIT_BYTES
    prepared = []
    for layer in layers:
        bias = layer.gate_bias().detach()
        input_dim = layer.input_dim
        prepared.append(
            [
                (
                    # Used on hundreds of rows at once: read in place, no copy (fp32).
                    PackedLinear(layer.W_0[d, :input_dim], bias[d, 0], mode, prepack=False),
                    PackedLinear(layer.W_0[d, input_dim:], None, mode, prepack=prepack),
                    PackedLinear(layer.W_P[d], None, mode, prepack=prepack),
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

"""The token encoder's inference engine: the char CNN of token_encoder.py without autograd, fast.

`CharCNNTokenEncoder.forward` switches here when no gradient can be needed (fast_inference.
use_fast_path). The autograd path runs 7 convolutions over all 50 positions of every token;
measured on the small model (1 core), that was 30% of the whole biLM's time, at ~40 GFLOP/s.
Here:
- positions: a token of L characters (with its begin/end-of-word marks) is followed by
  50 - L padding characters, and every window lying in that padding has the same value for
  every token. So only windows starting before L are computed; the max over the rest is one
  precomputed vector per filter. Tokens are sorted by L and run in chunks cut at the chunk's
  longest token (ordinary English: L ~ 8 instead of 50).
- all widths in one product: each filter is zero-padded to the widest width and the windows
  of the chunk, unfolded, are multiplied by all filters at once (oneDNN).
The maximum is taken over the same windows as in the autograd path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from elmokit.chars import MAX_CHARS_PER_TOKEN, PADDING_CHAR
from elmokit.modules.fast_inference import PackedLinear

if TYPE_CHECKING:
    from elmokit.modules.token_encoder import CharCNNTokenEncoder, Highway

# The CNN output of a chunk of tokens is [rows x n_filters]; rows (tokens x positions) are
# limited to this many (16 MB at 2048 filters).
_CNN_CHUNK_ROWS = 2048


def encode(encoder: CharCNNTokenEncoder, char_ids: torch.Tensor) -> torch.Tensor:
    """char_ids [N, 50] -> token vectors [N, projection_dim], as encoder.forward computes."""
    prepared = encoder.inference_weights.get(
        encoder.inference_mode, encoder.parameters(), lambda: _prepare_weights(encoder)
    )
    positions = torch.arange(1, MAX_CHARS_PER_TOKEN + 1, device=char_ids.device)
    lengths = ((char_ids != PADDING_CHAR) * positions).amax(dim=1)  # L: last non-padding + 1
    sorted_values, order = torch.sort(lengths)
    sorted_lengths: list[int] = sorted_values.tolist()
    pooled = char_ids.new_empty(
        char_ids.shape[0], encoder.config.n_filters, dtype=prepared.pad_windows.dtype
    )
    start = 0
    while start < len(sorted_lengths):
        end = start + 1
        while (
            end < len(sorted_lengths)
            and (end + 1 - start) * max(1, sorted_lengths[end]) <= _CNN_CHUNK_ROWS
        ):
            end += 1
        chunk = order[start:end]
        pooled[chunk] = _pool_chunk(
            encoder, prepared, char_ids[chunk], max(1, sorted_lengths[end - 1])
        )
        start = end
    features = encoder.activation(pooled)
    for carry, transform in prepared.highways:
        gate, transformed = torch.sigmoid(carry(features)), torch.relu(transform(features))
        features = gate * transformed + (1.0 - gate) * features
    if prepared.projection is not None:
        features = prepared.projection(features)
    return features


def _pool_chunk(
    encoder: CharCNNTokenEncoder, prepared: _PreparedEncoder, char_ids: torch.Tensor, n_windows: int
) -> torch.Tensor:
    """Max over positions of every filter for tokens whose characters past the first
    `n_windows` are all padding: [n, 50] -> [n, n_filters] (before the activation)."""
    width = prepared.max_width
    n_chars = n_windows + width - 1
    if n_chars > MAX_CHARS_PER_TOKEN:  # windows past the end are masked below
        extra = char_ids.new_full((char_ids.shape[0], n_chars - MAX_CHARS_PER_TOKEN), PADDING_CHAR)
        char_ids = torch.cat([char_ids, extra], dim=1)
    embedded = encoder.char_embed(char_ids[:, :n_chars])  # [n, n_chars, char_dim]
    windows = embedded.unfold(1, width, 1)  # [n, n_windows, char_dim, width]
    n = char_ids.shape[0]
    values = prepared.conv(windows.reshape(n * n_windows, -1)).view(n, n_windows, -1)
    if n_windows > prepared.all_valid:
        values = values + prepared.window_mask[:n_windows]  # -inf past each filter's end
    pooled = values.amax(dim=1)
    # The windows not computed all lie in the padding; they exist for width w if
    # n_windows <= 50 - w.
    skipped = prepared.pad_windows.masked_fill(n_windows > 50 - prepared.widths, float("-inf"))
    return torch.maximum(pooled, skipped)


def _prepare_weights(encoder: CharCNNTokenEncoder) -> _PreparedEncoder:
    mode = encoder.inference_mode
    convs = cast(list[nn.Conv1d], list(encoder.convs))
    widths = [width for width, _ in encoder.config.filters]
    max_width = max(widths)
    # One [char_dim * max_width, n_filters] matrix; narrow filters padded with zeros.
    # Its rows follow the unfolded window layout (character dimension, then position).
    char_dim = encoder.config.char_embedding_dim
    kernel = torch.cat(
        [
            nn.functional.pad(conv.weight.detach(), (0, max_width - conv.weight.shape[2]))
            for conv in convs
        ]
    )  # [n_filters, char_dim, max_width]
    bias = torch.cat([cast(torch.Tensor, conv.bias).detach() for conv in convs])
    conv = PackedLinear(kernel.reshape(-1, char_dim * max_width).t(), bias, mode)
    filter_widths = torch.cat(
        [torch.full((conv_.weight.shape[0],), w) for conv_, w in zip(convs, widths, strict=True)]
    ).to(bias.device)
    # Window p of a width-w filter exists if p <= 50 - w.
    positions = torch.arange(MAX_CHARS_PER_TOKEN, device=bias.device).unsqueeze(1)
    window_mask = torch.zeros(
        MAX_CHARS_PER_TOKEN, bias.shape[0], device=bias.device, dtype=bias.dtype
    )
    window_mask = window_mask.masked_fill(
        positions > MAX_CHARS_PER_TOKEN - filter_widths, float("-inf")
    )
    # The value of an all-padding window, computed by the same product.
    pad_ids = torch.full((1, max_width), PADDING_CHAR, device=bias.device)
    pad_windows = conv(encoder.char_embed(pad_ids).transpose(1, 2).reshape(1, -1))[0]
    # Large one-shot products: the parameters are read in place (no fp32 copy, -64 MB
    # on the original model for ~10% more time in these products).
    highways = [
        (
            PackedLinear(highway.W_carry, highway.b_carry, mode, prepack=False),
            PackedLinear(highway.W_transform, highway.b_transform, mode, prepack=False),
        )
        for highway in cast("list[Highway]", list(encoder.highways))
    ]
    projection = (
        PackedLinear(encoder.W_proj, encoder.b_proj, mode) if encoder.use_projection else None
    )
    return _PreparedEncoder(
        conv=conv,
        max_width=max_width,
        all_valid=MAX_CHARS_PER_TOKEN - max_width + 1,
        widths=filter_widths,
        window_mask=window_mask,
        pad_windows=pad_windows,
        highways=highways,
        projection=projection,
    )


@dataclass
class _PreparedEncoder:
    conv: PackedLinear  # all filters, [char_dim * max_width] -> [n_filters]
    max_width: int
    all_valid: int  # windows every filter has (50 - max_width + 1)
    widths: torch.Tensor  # [n_filters] width of each filter
    window_mask: torch.Tensor  # [50, n_filters] 0, or -inf where the window does not exist
    pad_windows: torch.Tensor  # [n_filters] value of an all-padding window
    highways: list[tuple[PackedLinear, PackedLinear]]  # carry gate, transform
    projection: PackedLinear | None

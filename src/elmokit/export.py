"""`elmokit export`: the stateless biLM as a TorchScript file, for serving without elmokit.

The eager model (bilm.py) is fast because of data-dependent machinery: distinct tokens only,
rows sorted by length with a shrinking batch, oneDNN-prepared weights, carried state. None of
that scripts. `ScriptableBiLM` is the same computation written for TorchScript instead: every
token slot through the char CNN, every row for every step (a row's padding comes after its
last token, so it cannot reach a real position), both directions in one product per step, the
sentence boundaries from vectors computed once at export. Zero initial state ("reset"). It
agrees with the eager model to float rounding (tests: 1e-5), and `torch.jit.load` runs it in a
process without elmokit (or from C++ through libtorch).

The file takes ids and, for byte-scheme models, token strings too:
- `forward(ids [B, T, width]) -> layers [B, L+1, T, 2P]` (zero past each sentence's end);
- `embed(sentences: List[List[str]]) -> layers`, the byte scheme's `batch_to_ids` in
  TorchScript (whose strings iterate over their UTF-8 bytes: the same ids as
  `token.encode("utf-8")` gives, cut at 48 bytes).

Why TorchScript: the recurrence is a loop over a sentence's tokens, and TorchScript keeps it a
loop for any length. torch 2.13 marks TorchScript deprecated (a DeprecationWarning at load) but
runs it. torch.export traces the Python loop for one sequence length, so it would need one
export per length; not tried here. Not exported: ONNX (not built or tested here), carried
state, the bf16/int8 modes.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from elmokit.bilm import BiLM
from elmokit.chars import (
    BEGIN_SENTENCE_CHAR,
    BEGIN_WORD_CHAR,
    BOS_TOKEN,
    END_SENTENCE_CHAR,
    END_WORD_CHAR,
    EOS_TOKEN,
    MAX_CHARS_PER_TOKEN,
    PADDING_CHAR,
)
from elmokit.io.files import atomic_path
from elmokit.modules.lstm import ProjectedLSTMLayer


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    # Parameters, not buffers, only so that type checkers see tensors; nothing trains them.
    return nn.Parameter(tensor, requires_grad=False)


class _Projection(nn.Module):
    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.enabled = weight is not None
        self.weight = _frozen(weight if weight is not None else torch.zeros(0, 0))
        self.bias = _frozen(bias if bias is not None else torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            return torch.addmm(self.bias, x, self.weight)
        return x


class _LSTMLayer(nn.Module):
    """One layer, both directions: weights split into the input and recurrent halves."""

    def __init__(self, layer: ProjectedLSTMLayer, cell_clip: float, proj_clip: float) -> None:
        super().__init__()
        self.cell_clip, self.proj_clip = cell_clip, proj_clip  # <= 0: no clip
        input_dim = layer.input_dim
        self.w_input = _frozen(layer.W_0[:, :input_dim].detach().clone())  # [2, in, 4H]
        self.w_hidden = _frozen(layer.W_0[:, input_dim:].detach().clone())  # [2, P, 4H]
        self.bias = _frozen(layer.gate_bias().detach().clone())  # [2, 1, 4H]
        self.w_projection = _frozen(layer.W_P.detach().clone())  # [2, H, P]

    def forward(self, layer_input: torch.Tensor) -> torch.Tensor:
        """[2, B, S, in] -> [2, B, S, P], zero state, every row for every step."""
        batch, span, input_dim = layer_input.shape[1], layer_input.shape[2], layer_input.shape[3]
        hidden = self.w_projection.shape[1]
        flat = layer_input.reshape(2, batch * span, input_dim)
        gates_in = torch.baddbmm(self.bias, flat, self.w_input).view(2, batch, span, 4 * hidden)
        h = layer_input.new_zeros(2, batch, self.w_projection.shape[2])
        c = layer_input.new_zeros(2, batch, hidden)
        steps: list[torch.Tensor] = []
        for t in range(span):
            gates = torch.baddbmm(gates_in[:, :, t], h, self.w_hidden)
            in_gate, new_input, forget_gate, out_gate = gates.chunk(4, dim=2)
            c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(new_input)
            if self.cell_clip > 0:
                c = c.clamp(-self.cell_clip, self.cell_clip)
            h = torch.bmm(torch.sigmoid(out_gate) * torch.tanh(c), self.w_projection)
            if self.proj_clip > 0:
                h = h.clamp(-self.proj_clip, self.proj_clip)
            steps.append(h)
        return torch.stack(steps, dim=2)


class ScriptableBiLM(nn.Module):
    """BiLM's stateless inference in TorchScript-compatible form (module doc)."""

    def __init__(self, model: BiLM) -> None:
        super().__init__()
        config, encoder = model.config, model.token_encoder
        self.n_chars = config.max_characters_per_token
        self.byte_scheme = config.characters == "bytes"
        self.has_words = encoder.word_embed is not None
        self.relu_activation = config.activation == "relu"
        cell_clip = float(config.cell_clip) if config.cell_clip is not None else -1.0
        proj_clip = float(config.proj_clip) if config.proj_clip is not None else -1.0
        self.skip_connections = config.use_skip_connections
        self.char_embed = _frozen(encoder.char_embed.weight.detach().clone())
        words = encoder.word_embed.weight.detach().clone() if encoder.word_embed else None
        self.word_embed = _frozen(words if words is not None else torch.zeros(0, 0))
        self.convs = nn.ModuleList(copy.deepcopy(conv) for conv in encoder.convs)
        self.highways = nn.ModuleList(copy.deepcopy(h) for h in encoder.highways)
        self.projection = _Projection(
            encoder.W_proj.detach().clone() if encoder.use_projection else None,
            encoder.b_proj.detach().clone() if encoder.use_projection else None,
        )
        self.layers = nn.ModuleList(
            _LSTMLayer(layer, cell_clip, proj_clip)  # type: ignore[arg-type]
            for layer in model.lstm.layers
        )
        with torch.no_grad():
            bos, eos = model.boundary_vectors(torch.device("cpu"))
        self.bos = _frozen(bos.detach().clone().float())
        self.eos = _frozen(eos.detach().clone().float())
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [N, width] -> token vectors [N, P]: char CNN, highways, projection."""
        embedded = nn.functional.embedding(ids[:, : self.n_chars], self.char_embed)
        embedded = embedded.transpose(1, 2)  # [N, char_dim, n_chars]
        pooled = [conv(embedded).amax(dim=2) for conv in self.convs]
        features = torch.cat(pooled, dim=1)
        features = torch.relu(features) if self.relu_activation else torch.tanh(features)
        for highway in self.highways:
            features = highway(features)
        if self.has_words:
            words = nn.functional.embedding(ids[:, self.n_chars], self.word_embed)
            features = torch.cat([words, features], dim=1)
        return self.projection(features)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T, width] (left-aligned, 0 = padding) -> layers [B, L+1, T, 2P]."""
        batch, steps, width = ids.shape[0], ids.shape[1], ids.shape[2]
        mask = (ids > 0).any(dim=2)  # [B, T]
        lengths = mask.sum(dim=1)
        tokens = self.encode(ids.reshape(batch * steps, width)).view(batch, steps, -1)
        tokens = tokens * mask.unsqueeze(2).to(tokens.dtype)
        size = tokens.shape[2]
        span = steps + 2
        wrapped = tokens.new_zeros(batch, span, size)
        wrapped[:, 1 : steps + 1] = tokens
        wrapped[:, 0] = self.bos
        wrapped[torch.arange(batch), lengths + 1] = self.eos
        positions = torch.arange(span).unsqueeze(0)
        full = lengths.unsqueeze(1) + 2
        # Each row reversed within its own length (padding stays): the backward stream.
        reverse = torch.where(positions < full, full - 1 - positions, positions)
        backward = wrapped.gather(1, reverse.unsqueeze(2).expand(-1, -1, size))
        layer_input = torch.stack([wrapped, backward])  # [2, B, S, P]
        outputs = [torch.cat([wrapped, wrapped], dim=2)]
        for index, layer in enumerate(self.layers):
            stepped = layer(layer_input)
            if index > 0 and self.skip_connections:
                stepped = stepped + layer_input
            back = stepped[1].gather(1, reverse.unsqueeze(2).expand(-1, -1, size))
            outputs.append(torch.cat([stepped[0], back], dim=2))
            layer_input = stepped
        layers = torch.stack(outputs, dim=1)[:, :, 1 : steps + 1]  # [B, L+1, T, 2P]
        return layers * mask.unsqueeze(1).unsqueeze(3).to(layers.dtype)

    @torch.jit.export
    def embed(self, sentences: list[list[str]]) -> torch.Tensor:
        """Token strings -> layers, for byte-scheme models (elmokit.batch_to_ids in TorchScript)."""
        if not self.byte_scheme:
            raise RuntimeError("this model has its own character dictionary: pass its ids")
        longest = 0
        for sentence in sentences:
            longest = max(longest, len(sentence))
        ids = torch.zeros(len(sentences), longest, 50, dtype=torch.long)
        for row, sentence in enumerate(sentences):
            for position, token in enumerate(sentence):
                ids[row, position] = torch.tensor(_byte_ids(token), dtype=torch.long)
        return self.forward(ids)


def _utf8(code: int) -> list[int]:
    if code < 0x80:
        return [code]
    if code < 0x800:
        return [0xC0 | (code >> 6), 0x80 | (code & 0x3F)]
    if code < 0x10000:
        if 0xD800 <= code < 0xE000:
            return []  # a lone surrogate: what encode("utf-8", "ignore") drops
        return [0xE0 | (code >> 12), 0x80 | ((code >> 6) & 0x3F), 0x80 | (code & 0x3F)]
    return [
        0xF0 | (code >> 18),
        0x80 | ((code >> 12) & 0x3F),
        0x80 | ((code >> 6) & 0x3F),
        0x80 | (code & 0x3F),
    ]


def _byte_ids(token: str) -> list[int]:
    """chars.token_to_char_ids, in TorchScript (which cannot read module constants: the
    numbers are chars.py's, checked against it below)."""
    ids = [261] * 50  # PADDING_CHAR, MAX_CHARS_PER_TOKEN
    ids[0] = 259  # BEGIN_WORD_CHAR
    if token == "<S>" or token == "</S>":
        ids[1] = 257 if token == "<S>" else 258  # BEGIN_SENTENCE_CHAR, END_SENTENCE_CHAR
        ids[2] = 260  # END_WORD_CHAR
        return ids
    encoded: list[int] = []
    for char in token:
        if torch.jit.is_scripting():
            encoded.append(ord(char))  # TorchScript strings iterate over their UTF-8 bytes
        else:
            encoded.extend(_utf8(ord(char)))
    encoded = encoded[:48]
    for position, byte in enumerate(encoded):
        ids[position + 1] = byte + 1
    ids[len(encoded) + 1] = 260
    return ids


assert (PADDING_CHAR, MAX_CHARS_PER_TOKEN, BEGIN_WORD_CHAR, END_WORD_CHAR) == (261, 50, 259, 260)
assert (BEGIN_SENTENCE_CHAR, END_SENTENCE_CHAR, BOS_TOKEN, EOS_TOKEN) == (257, 258, "<S>", "</S>")


def export_torchscript(model: BiLM, path: str | Path) -> Path:
    """Script `model`'s stateless inference (float32, CPU) and save it to `path` atomically."""
    model = copy.deepcopy(model).float().cpu().eval()
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still what runs a loop over a
        # sentence's tokens for any length (module doc).
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(ScriptableBiLM(model))
    path = Path(path)
    with atomic_path(path, suffix=".pt.tmp") as temporary:
        scripted.save(str(temporary))
    return path


__all__ = ["ScriptableBiLM", "export_torchscript"]

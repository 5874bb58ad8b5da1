"""BiLM: char-CNN token encoder + forward/backward LSTM stacks -> every ELMo layer.

State policy (who owns the LSTM state between calls):
- "reset": every sentence starts from zero state; outputs do not depend on the batch.
- "carry": each batch row's final (h, c) is the next call's initial state for that row, as
  bilm-tf and AllenNLP do; needed to reproduce their published outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from elmokit.chars import BYTE_CHARACTERS, CharacterScheme
from elmokit.config import BiLMConfig
from elmokit.modules.fast_inference import InferenceMode, bucket_rows, check_inference_mode
from elmokit.modules.lstm import BiLSTMStack, LSTMState
from elmokit.modules.token_encoder import CharCNNTokenEncoder

StatePolicy = Literal["reset", "carry"]
# Distinct tokens per char-CNN call (see BiLM.encode_tokens).
ENCODE_ROWS = 512
STATE_POLICIES: tuple[str, ...] = ("reset", "carry")


@dataclass
class BiLMOutput:
    """layers [B, n_layers + 1, T, 2P] (layer 0 = token vector twice); mask [B, T] bool."""

    layers: torch.Tensor
    mask: torch.Tensor


class BiLM(nn.Module):
    def __init__(
        self,
        config: BiLMConfig,
        state_policy: StatePolicy = "reset",
        characters: CharacterScheme | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        # How tokens become ids: the byte scheme, or a model's own dictionaries (EFML).
        self.characters = _check_characters(config, characters)
        self.token_encoder = CharCNNTokenEncoder(config)
        self.lstm = BiLSTMStack(config)
        self.state_policy: StatePolicy = state_policy
        self._carried: LSTMState | None = None
        self._boundary: tuple[torch.Tensor, torch.Tensor] | None = None  # boundary_vectors
        self._boundary_key: tuple[object, ...] | None = None

    # -- inference precision ------------------------------------------------------------

    @property
    def inference_mode(self) -> InferenceMode:
        """How forward computes when no gradient is needed (see optimize_for_inference)."""
        return self.lstm.inference_mode

    def optimize_for_inference(self, mode: InferenceMode = "fp32") -> BiLM:
        """Choose the arithmetic used when no gradient is needed (under torch.no_grad or
        inference_mode, or with frozen parameters); with gradients the autograd path runs.

        - "fp32" (the default): the same computation as the autograd path up to float
          rounding (~1e-5), on weights prepared once for fast products; batch invariant.
        - "bf16": bfloat16 products with float32 accumulation and state; faster on CPUs with
          AVX512-BF16/AMX and on GPUs; per-token cosine to the exact path >= 0.9996.
        - "int8": dynamically quantised int8 products (CPU only); fastest; per-token cosine
          >= 0.997, and vectors depend slightly on the batch.
        - "reference": the exact autograd code path, also without gradients (what the
          parity tests against published outputs use).

        Measured speeds and errors: benchmarks/README.md (fp32 is ~3x the reference path).

        The prepared weights are rebuilt automatically when the parameters change and are
        never part of state_dict. Returns self.
        """
        mode = check_inference_mode(mode)
        self.token_encoder.inference_mode = mode
        self.lstm.inference_mode = mode
        return self

    # -- publishing ---------------------------------------------------------------------

    def push_to_hub(self, repo_id: str, **options: object) -> str:
        """Upload to the Hugging Face Hub (elmokit[hub]); see elmokit.io.hub.push_to_hub."""
        from elmokit.io.hub import push_to_hub

        return push_to_hub(self, repo_id, **options)  # type: ignore[arg-type]

    # -- state --------------------------------------------------------------------------

    @property
    def state_policy(self) -> StatePolicy:
        return self._state_policy

    @state_policy.setter
    def state_policy(self, policy: StatePolicy) -> None:
        if policy not in STATE_POLICIES:
            raise ValueError(f"state_policy must be one of {STATE_POLICIES}, got {policy!r}")
        self._state_policy = policy
        self._carried = None

    def reset_states(self) -> None:
        """Forget carried LSTM state (the next batch starts from zeros)."""
        self._carried = None

    def _initial_state(self, batch: int, like: torch.Tensor) -> LSTMState | None:
        if self.state_policy == "reset" or self._carried is None:
            return None
        carried = self._carried
        if carried.h.device != like.device or carried.h.dtype != like.dtype:
            carried = LSTMState(carried.h.to(like), carried.c.to(like))
        if carried.batch_size >= batch:
            return LSTMState(carried.h[:, :, :batch], carried.c[:, :, :batch])
        # More rows than ever seen: the new rows start from zero.
        zeros = self.lstm.zero_state(batch - carried.batch_size, like.device, like.dtype)
        return LSTMState(torch.cat([carried.h, zeros.h], 2), torch.cat([carried.c, zeros.c], 2))

    def _store_state(self, final: LSTMState) -> None:
        final = final.detach()
        batch = final.batch_size
        if self._carried is None or self._carried.batch_size <= batch:
            self._carried = final
            return
        # Rows beyond this batch keep what they had, as AllenNLP's stateful encoder does.
        h, c = self._carried.h.clone(), self._carried.c.clone()
        h[:, :, :batch] = final.h.to(h)
        c[:, :, :batch] = final.c.to(c)
        self._carried = LSTMState(h, c)

    # -- encoding -----------------------------------------------------------------------

    def batch_to_ids(self, batch: Sequence[Sequence[str]]) -> torch.Tensor:
        """This model's ids for tokenised sentences: LongTensor [B, T, width] (width 50 in the
        byte scheme, where it equals elmokit.batch_to_ids)."""
        return self.characters.batch_to_ids(batch)

    def encode_tokens(self, char_ids: torch.Tensor) -> torch.Tensor:
        """Token vectors for token ids [..., width] -> [..., P]; each distinct token is encoded
        once and padding slots (all ids 0) give zero vectors.

        The one char-CNN batching policy: distinct tokens in calls of at most ENCODE_ROWS
        rows, each padded to a bucketed row count (fast_inference.bucket_rows). The bound keeps
        the CNN's working memory small (its activations are ~400 KB per token at 2048 filters),
        and bucketing keeps the number of call shapes small: the allocator and the kernels keep
        buffers per shape, and with one shape per batch a long embedding run grew by hundreds
        of MB. At least MIN_GEMM_ROWS rows also keep results independent of the batch.
        """
        flat = char_ids.reshape(-1, self.characters.width)
        is_token = (flat > 0).any(dim=1)
        dtype = self.token_encoder.char_embed.weight.dtype
        size = self.config.projection_dim
        out = torch.zeros(flat.shape[0], size, device=flat.device, dtype=dtype)
        token_rows = flat[is_token]
        if token_rows.shape[0] > 0:
            unique_rows, inverse = torch.unique(token_rows, dim=0, return_inverse=True)
            encoded = torch.cat(
                [
                    self._encode_rows(unique_rows[start : start + ENCODE_ROWS])
                    for start in range(0, unique_rows.shape[0], ENCODE_ROWS)
                ]
            )
            # Under autocast the encoder yields bf16/fp16: keep that dtype downstream.
            out = out.to(encoded.dtype)
            out[is_token] = encoded[inverse]
        return out.view(*char_ids.shape[:-1], size)

    def _encode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """[n, width] -> [n, P], run on bucket_rows(n) rows (spare rows of padding characters,
        the cheapest input for the inference path)."""
        n_rows = rows.shape[0]
        spare = bucket_rows(n_rows) - n_rows
        if spare:
            filler = torch.tensor(self.characters.filler_ids, device=rows.device)
            rows = torch.cat([rows, filler.expand(spare, -1)])
        return self.token_encoder(rows)[:n_rows]

    def boundary_vectors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The token vectors of <S> and </S>, each [P]. Without gradients they are computed
        once and kept until a parameter, the mode, the device or autocast changes: otherwise
        every batch pays a char-CNN call for two constant tokens."""

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.tensor([self.characters.bos_ids, self.characters.eos_ids], device=device)
            bos, eos = self.encode_tokens(ids)
            return bos, eos

        parameters = list(self.token_encoder.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return compute()
        key = (
            self.inference_mode,
            str(device),
            torch.is_autocast_enabled(device.type),
            *((p.data_ptr(), p._version) for p in parameters),
        )
        if self._boundary is None or self._boundary_key != key:
            self._boundary = compute()
            self._boundary_key = key
        return self._boundary

    def forward(
        self,
        char_ids: torch.Tensor,
        keep_sentence_boundaries: bool = False,
        *,
        time_chunk: int | None = None,
    ) -> BiLMOutput:
        """char_ids [B, T, width] from `batch_to_ids` (no <S>/</S>) -> all layers and mask.

        With keep_sentence_boundaries the <S> and </S> positions stay in the output:
        layers [B, L+1, T+2, 2P] and the mask covers them. time_chunk: see
        layers_from_token_vectors.
        """
        char_ids = self._check_char_ids(char_ids)
        token_mask = (char_ids > 0).any(dim=-1)  # [B, T]
        tokens = self.encode_tokens(char_ids)  # [B, T, P]
        layers, boundary_mask = self.layers_from_token_vectors(
            tokens, token_mask, time_chunk=time_chunk
        )  # [B, L+1, T+2, 2P], [B, T+2]
        if keep_sentence_boundaries:
            return BiLMOutput(layers=layers, mask=boundary_mask)
        steps = char_ids.shape[1]
        trimmed = layers[:, :, 1 : steps + 1] * token_mask[:, None, :, None].to(layers.dtype)
        return BiLMOutput(layers=trimmed, mask=token_mask)

    def layers_from_token_vectors(
        self, tokens: torch.Tensor, mask: torch.Tensor, *, time_chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The biLM's second half: token vectors -> <S>/</S> added -> both directions -> layers.

        tokens [B, T, P] (left-aligned, zeros at padding), mask [B, T] bool. Returns layers
        [B, L+1, T+2, 2P] (layer 0 = the token vector twice) and the mask [B, T+2] of the
        positions with <S> and </S>. Callers with their own token vectors (a cached
        vocabulary) get exactly what forward(..., keep_sentence_boundaries=True) gives.

        time_chunk: run the LSTMs that many steps at a time, carrying each direction's state
        from chunk to chunk (the backward direction reads the reversed sentence, so its chunks
        are in its own processing order). The same computation as one call, in the working
        memory of `time_chunk` steps: for very long sentences.
        """
        batch, steps, _ = tokens.shape
        lengths = mask.sum(dim=1)  # [B]
        positions = torch.arange(steps + 2, device=tokens.device)
        if not torch.equal(mask, positions[:steps].unsqueeze(0) < lengths.unsqueeze(1)):
            raise ValueError(
                "a padding slot comes before a real token; each row's tokens must be "
                "left-aligned (as batch_to_ids makes them)"
            )
        if time_chunk is not None and time_chunk < 1:
            raise ValueError(f"time_chunk must be >= 1, got {time_chunk}")
        wrapped, boundary_mask = self.add_boundaries(tokens, lengths)
        layers = self._run_bidirectional(wrapped, lengths + 2, time_chunk or steps + 2)
        return layers, boundary_mask

    def add_boundaries(
        self, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T, P], lengths [B] -> [B, T+2, P] with the <S> vector first and </S>
        after each row's last token (zeros past it), and the mask [B, T+2] of those positions."""
        batch, steps, size = tokens.shape
        bos, eos = self.boundary_vectors(tokens.device)
        wrapped = tokens.new_zeros(batch, steps + 2, size)
        wrapped[:, 1 : steps + 1] = tokens
        wrapped[:, 0] = bos.to(wrapped.dtype)
        wrapped[torch.arange(batch, device=tokens.device), lengths + 1] = eos.to(wrapped.dtype)
        positions = torch.arange(steps + 2, device=tokens.device)
        boundary_mask = positions.unsqueeze(0) < (lengths + 2).unsqueeze(1)  # [B, T+2]
        return wrapped * boundary_mask.unsqueeze(-1).to(wrapped.dtype), boundary_mask

    def _run_bidirectional(
        self, tokens: torch.Tensor, lengths: torch.Tensor, time_chunk: int
    ) -> torch.Tensor:
        """tokens [B, T, P] with boundaries, lengths [B] -> layers [B, L+1, T, 2P]."""
        batch, steps, size = tokens.shape
        reverse_index = _reverse_index(lengths, steps).to(tokens.device)
        inputs = torch.stack([tokens, _gather_time(tokens, reverse_index)])  # [2, B, T, P]
        state = self._initial_state(batch, tokens)
        lengths = lengths.to("cpu")
        chunk_outputs: list[list[torch.Tensor]] = []  # per chunk, per layer [2, B, chunk, P]
        for start in range(0, steps, time_chunk):
            chunk_lengths = (lengths - start).clamp(0, time_chunk)
            outputs, state = self.lstm(
                inputs[:, :, start : start + time_chunk], chunk_lengths, state
            )
            chunk_outputs.append(outputs)
        if self.state_policy == "carry" and state is not None:
            self._store_state(state)
        # Written in place: cat + stack held every layer twice (~90 MB at batch 64, P = 512).
        layers = tokens.new_empty(batch, self.config.n_layers + 1, steps, 2 * size)
        layers[:, 0, :, :size] = tokens
        layers[:, 0, :, size:] = tokens
        for index in range(self.config.n_layers):
            pieces = [outputs[index] for outputs in chunk_outputs]
            output = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
            layers[:, index + 1, :, :size] = output[0]
            layers[:, index + 1, :, size:] = _gather_time(output[1], reverse_index)
        return layers

    def language_model_forward(
        self,
        forward_char_ids: torch.Tensor,
        backward_char_ids: torch.Tensor,
        state: LSTMState | None,
    ) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        """Training path: two independent streams, each already in its processing order
        (the backward stream holds reversed sentences), all rows full length.

        Returns the top layer of each direction [B, T, P] and the final state to carry.
        """
        # One char-CNN call for both streams: a word in both is encoded (and back-propagated
        # through the CNN) once.
        inputs = self.encode_tokens(torch.stack([forward_char_ids, backward_char_ids]))
        batch, steps = forward_char_ids.shape[:2]
        lengths = torch.full((batch,), steps, dtype=torch.long)
        outputs, final = self.lstm(inputs, lengths, state)
        top = outputs[-1]
        return top[0], top[1], final

    def _check_char_ids(self, char_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(char_ids, torch.Tensor):
            raise TypeError(
                "BiLM expects a LongTensor of character ids [batch, time, 50] "
                f"(use elmokit.batch_to_ids), got {type(char_ids).__name__}"
            )
        width = self.characters.width
        if char_ids.dim() != 3 or char_ids.shape[-1] != width:
            raise ValueError(
                f"character ids must have shape [batch, time, {width}], "
                f"got {list(char_ids.shape)}"
                + ("" if width == 50 else " (this model's own ids: use model.batch_to_ids)")
            )
        if char_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"character ids must be integers, got {char_ids.dtype}")
        n_chars = self.config.max_characters_per_token
        char_part, word_part = char_ids[..., :n_chars], char_ids[..., n_chars:]
        top = self.token_encoder.char_embed.num_embeddings - 1
        if char_part.numel() and (int(char_part.min()) < 0 or int(char_part.max()) > top):
            raise ValueError(f"character ids must be in 0..{top} (see elmokit.chars)")
        if word_part.numel() and (
            int(word_part.min()) < 0 or int(word_part.max()) > self.config.n_words
        ):
            raise ValueError(f"word ids must be in 0..{self.config.n_words}")
        device = self.token_encoder.char_embed.weight.device
        return char_ids.to(device=device, dtype=torch.long)


def _check_characters(config: BiLMConfig, characters: CharacterScheme | None) -> CharacterScheme:
    if characters is None:
        if config.characters != "bytes":
            raise ValueError(
                f"a model with the {config.characters!r} character scheme needs its "
                "dictionaries (BiLM(config, characters=...))"
            )
        return BYTE_CHARACTERS
    if characters.kind != config.characters:
        raise ValueError(
            f"the model's config says {config.characters!r} characters, got {characters.kind!r}"
        )
    expected_width = config.max_characters_per_token + (1 if config.word_embedding_dim else 0)
    problems = []
    if characters.width != expected_width:
        problems.append(f"{characters.width} ids per token, the config needs {expected_width}")
    if characters.kind == "dictionary" and characters.n_ids - 1 > config.n_characters:
        problems.append(
            f"character ids up to {characters.n_ids - 2}, the config has {config.n_characters}"
        )
    n_word_ids = getattr(characters, "n_word_ids", 0)
    if n_word_ids - 1 > config.n_words:
        problems.append(f"word ids up to {n_word_ids - 2}, the config has {config.n_words}")
    if problems:
        raise ValueError("the dictionaries do not fit the model: " + "; ".join(problems))
    return characters


def _reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, T] index that reverses each row within its own length (padding stays in place)."""
    positions = torch.arange(steps).unsqueeze(0)
    lengths = lengths.to("cpu").unsqueeze(1)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def _gather_time(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [B, T, D] gathered along time by index [B, T]."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))

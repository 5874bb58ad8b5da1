"""`Elmo`: ELMo representations for a downstream model, a drop-in for AllenNLP's `Elmo`.

The biLM runs once per batch; each of the `num_output_representations` outputs is its own
ScalarMix of the biLM layers followed by dropout (the paper uses one mix at the input of the
task model and sometimes a second at its output).

Differences from AllenNLP worth knowing:
- positions past a sentence's end are zero in every output (AllenNLP left layer-normed
  garbage there when keep_sentence_boundaries=True);
- with vocab_to_cache and requires_grad=True the cache is not used: word ids are mapped back to
  characters so the char CNN keeps being fine-tuned (AllenNLP trained a detached copy of it).

As in AllenNLP, the layer-norm statistics of a mix include the <S> and </S> positions even when
they are removed from the output (bilm-tf computed them without the boundaries).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from elmokit.bilm import BiLM, StatePolicy
from elmokit.chars import MAX_CHARS_PER_TOKEN, batch_to_ids
from elmokit.loading import load
from elmokit.modules.scalar_mix import ScalarMix


class Elmo(nn.Module):
    """ELMo representations: biLM layers -> k scalar mixes -> dropout.

    `options_file_or_model_path` is anything `elmokit.load` accepts (bundled name, native
    model directory, published options.json with `weight_file`, or a published-format
    directory); alternatively pass a ready `bilm` (and None as the first argument).

    The biLM is frozen (no gradients, kept in eval mode, run under no_grad) unless
    `requires_grad`, in which case it is fine-tuned with the task model. Its weights are in
    `state_dict()` either way, so a saved task model reloads without the original files.

    `scalar_mix_parameters` fixes the (pre-softmax) mixing weights and makes them, and gamma,
    non-trainable, as in AllenNLP. `state_policy` is applied to a loaded biLM ("reset" if
    None); a passed `bilm` keeps its own policy unless one is given. `device` defaults to cpu
    for a loaded model and to the passed biLM's device.

    `vocab_to_cache`: word i of the list is word id i, id 0 is padding (so put a placeholder
    such as "@@PADDING@@" first, as AllenNLP vocabularies do). The token vector of every word
    is computed once, and forward then accepts word ids [B, T] instead of character ids.
    """

    def __init__(
        self,
        options_file_or_model_path: str | Path | None,
        weight_file: str | Path | None = None,
        num_output_representations: int = 1,
        requires_grad: bool = False,
        do_layer_norm: bool = False,
        dropout: float = 0.5,
        keep_sentence_boundaries: bool = False,
        scalar_mix_parameters: Sequence[float] | None = None,
        vocab_to_cache: Sequence[str] | None = None,
        state_policy: StatePolicy | None = None,
        bilm: BiLM | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        if bilm is not None:
            if options_file_or_model_path is not None or weight_file is not None:
                raise ValueError("pass either a model path (and weight_file) or bilm=, not both")
            if device is not None:
                bilm = bilm.to(device)
            if state_policy is not None:
                bilm.state_policy = state_policy
        elif options_file_or_model_path is None:
            raise ValueError("Elmo needs a model (name, directory or options.json) or bilm=")
        else:
            bilm = load(
                options_file_or_model_path,
                weights=weight_file,
                state_policy=state_policy or "reset",
                device=device or "cpu",
            )
        if num_output_representations < 1:
            raise ValueError(
                f"num_output_representations must be >= 1, got {num_output_representations}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.bilm = bilm
        self.requires_grad = requires_grad
        self.keep_sentence_boundaries = keep_sentence_boundaries
        self.bilm.requires_grad_(requires_grad)
        if not requires_grad:
            self.bilm.eval()
        n_layers = bilm.config.n_layers + 1  # the token layer and each LSTM layer
        self.scalar_mixes = nn.ModuleList(
            ScalarMix(
                n_layers,
                do_layer_norm=do_layer_norm,
                initial_scalar_parameters=scalar_mix_parameters,
                trainable=scalar_mix_parameters is None,
            )
            for _ in range(num_output_representations)
        )
        self.dropout = nn.Dropout(dropout)

        self.vocab_size = 0
        # Non-persistent: derived from the vocabulary and the biLM weights, so they stay out of
        # state_dict (100k words at P = 512 would add 200 MB) and are rebuilt after a load.
        self._vocab_char_ids: torch.Tensor
        self._token_cache: torch.Tensor
        no_words = torch.zeros(0, MAX_CHARS_PER_TOKEN, dtype=torch.long)
        self.register_buffer("_vocab_char_ids", no_words, persistent=False)
        self.register_buffer("_token_cache", torch.zeros(0), persistent=False)
        if vocab_to_cache is not None:
            words = list(vocab_to_cache)
            if not words:
                raise ValueError("vocab_to_cache is empty")
            char_ids = batch_to_ids([words])[0]  # [V, 50]
            char_ids[0] = 0  # word id 0 is padding whatever word sits there
            self._vocab_char_ids = char_ids
            self.vocab_size = len(words)
        param = next(self.bilm.parameters())
        self.to(device=param.device, dtype=param.dtype)
        self.refresh_token_cache()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    # -- configuration ------------------------------------------------------------------

    @property
    def has_cached_vocab(self) -> bool:
        return self.vocab_size > 0

    @property
    def num_layers(self) -> int:
        """Layers mixed by each ScalarMix (token layer + LSTM layers)."""
        return self.bilm.config.n_layers + 1

    @property
    def mixes(self) -> list[ScalarMix]:
        """The ScalarMix of each output representation, in order."""
        return [cast(ScalarMix, mix) for mix in self.scalar_mixes]

    def get_output_dim(self) -> int:
        return 2 * self.bilm.config.projection_dim

    def train(self, mode: bool = True) -> Elmo:
        super().train(mode)
        if not self.requires_grad:
            # A frozen biLM must stay deterministic even if its LSTM has dropout configured.
            self.bilm.eval()
        return self

    @torch.no_grad()
    def refresh_token_cache(self) -> None:
        """Recompute the cached token vectors from the current biLM weights (done at
        construction and after load_state_dict; call it after editing bilm weights by hand)."""
        if not self.has_cached_vocab or self.requires_grad:
            return
        # [V, P]; row 0 is zero (all-zero char ids). encode_tokens bounds the CNN's memory.
        self._token_cache = self.bilm.encode_tokens(self._vocab_char_ids)

    # -- forward ------------------------------------------------------------------------

    def forward(
        self, inputs: torch.Tensor | None, word_inputs: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """inputs: character ids [B, T, 50] (or [..., T, 50]), or word ids [B, T] when
        vocab_to_cache was given; word_inputs: word ids [B, T] (or [..., T]), used instead of
        `inputs` when given (AllenNLP's calling convention).

        Returns {"elmo_representations": k tensors [B, T, 2P], "mask": [B, T] bool}; with
        keep_sentence_boundaries T becomes T+2 (<S> first, </S> after each sentence).
        """
        words = word_inputs
        if words is not None and not self.has_cached_vocab:
            if inputs is None:
                raise ValueError("word ids need Elmo(..., vocab_to_cache=[...]); pass char ids")
            # AllenNLP's behaviour: warn and fall back to the character ids.
            warnings.warn(
                "word_inputs passed to an Elmo without vocab_to_cache; using the character ids",
                stacklevel=2,
            )
            words = None
        if words is None and inputs is not None and self.has_cached_vocab and inputs.dim() == 2:
            words = inputs
        if words is not None:
            lead_shape = words.shape[:-1]
            layers, mask = self._bilm_layers_from_words(words.reshape(-1, words.shape[-1]))
        elif inputs is None:
            raise ValueError("Elmo.forward needs character ids (or word ids with a cached vocab)")
        else:
            if inputs.dim() < 3:
                raise ValueError(
                    f"character ids must have shape [batch, time, {MAX_CHARS_PER_TOKEN}], got "
                    f"{list(inputs.shape)}"
                    + (" (word ids need vocab_to_cache)" if inputs.dim() == 2 else "")
                )
            lead_shape = inputs.shape[:-2]
            layers, mask = self._bilm_layers_from_chars(inputs.reshape(-1, *inputs.shape[-2:]))

        # layers [N, L+1, T+2, 2P], mask [N, T+2]
        # Without boundaries, token t of a row is real iff position t + 2 (its </S> or a later
        # token) is.
        out_mask = mask if self.keep_sentence_boundaries else mask[:, 2:]
        keep = out_mask.unsqueeze(-1).to(layers.dtype)  # [N, T', 1]
        representations = []
        for mix in self.mixes:
            mixed = mix(layers, mask)  # [N, T+2, 2P]
            if not self.keep_sentence_boundaries:
                mixed = mixed[:, 1:-1]
            representations.append(self.dropout(mixed * keep))
        steps = out_mask.shape[-1]
        return {
            "elmo_representations": [
                r.reshape(*lead_shape, steps, r.shape[-1]) for r in representations
            ],
            "mask": out_mask.reshape(*lead_shape, steps),
        }

    def l2_penalty(self) -> torch.Tensor:
        """Sum of every mix's ||w||^2; add lambda * this to the task loss (paper, eq. 1)."""
        return torch.stack([mix.l2_penalty() for mix in self.mixes]).sum()

    # The biLM has data-dependent control flow (per-step active rows, unique tokens, carried
    # state), which dynamo would specialise on and recompile for every new batch shape; it is
    # run eagerly and only the mixing around it is compiled.
    @torch.compiler.disable
    def _bilm_layers_from_chars(self, char_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """char ids [N, T, 50] -> layers [N, L+1, T+2, 2P], mask [N, T+2]."""
        with torch.set_grad_enabled(self.requires_grad and torch.is_grad_enabled()):
            output = self.bilm(char_ids, keep_sentence_boundaries=True)
        return output.layers, output.mask

    @torch.compiler.disable
    def _bilm_layers_from_words(self, word_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """word ids [N, T] -> layers [N, L+1, T+2, 2P], mask [N, T+2]."""
        word_ids = self._check_word_ids(word_ids)
        if self.requires_grad:
            # The char CNN is being trained, so a cache would go stale: run it on the words.
            return self._bilm_layers_from_chars(self._vocab_char_ids[word_ids])
        with torch.no_grad():
            return self.bilm.layers_from_token_vectors(self._token_cache[word_ids], word_ids > 0)

    def _check_word_ids(self, word_ids: torch.Tensor) -> torch.Tensor:
        if word_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"word ids must be integers, got {word_ids.dtype}")
        if word_ids.numel() and (int(word_ids.min()) < 0 or int(word_ids.max()) >= self.vocab_size):
            raise ValueError(
                f"word ids must be in 0..{self.vocab_size - 1} (0 = padding), got "
                f"{int(word_ids.min())}..{int(word_ids.max())}"
            )
        return word_ids.to(device=self._vocab_char_ids.device, dtype=torch.long)


def elmo_layer_weights(elmo: Elmo) -> list[list[float]]:
    """softmax(w) of each output representation's mix, e.g. to plot which layers a task uses."""
    return [[float(v) for v in mix.layer_weights().tolist()] for mix in elmo.mixes]


def _refresh_after_load(module: nn.Module, incompatible_keys: object) -> None:
    # The biLM weights may have just changed, so the derived token cache must follow.
    if isinstance(module, Elmo):
        module.refresh_token_cache()

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
from typing import Any

import torch
from torch import nn

from elmokit.bilm import BiLM, StatePolicy
from elmokit.compat.state_dict import translate_allennlp_elmo_keys
from elmokit.loading import load
from elmokit.modules.fast_inference import InferenceMode
from elmokit.modules.scalar_mix import ScalarMix


class Elmo(nn.Module):
    """ELMo representations: biLM layers -> k scalar mixes -> dropout.

    AllenNLP's signature, positional order and defaults, so AllenNLP code runs unchanged:
    `Elmo(options_file, weight_file, num_output_representations, requires_grad, do_layer_norm,
    dropout, vocab_to_cache, keep_sentence_boundaries, scalar_mix_parameters, module)`.
    `options_file` may also be anything `elmokit.load` accepts (a bundled name, a native model
    directory, a published-format directory), with weight_file None. `module`: a ready BiLM
    (or an object with a `.bilm`), with None for both files, as AllenNLP's `module=`.

    elmokit's own extras are keyword-only: `state_policy` ("carry" by default, AllenNLP's
    stateful behaviour, so migrated code reproduces its numbers; "reset" makes every sentence
    independent of the batches before it; docs/migrating.md), `bilm` (= module), `device`,
    `precision` (the biLM's inference mode, see BiLM.optimize_for_inference).

    The biLM is frozen (no gradients, kept in eval mode, run under no_grad) unless
    `requires_grad`, in which case it is fine-tuned with the task model. Its weights are in
    `state_dict()` either way, so a saved task model reloads without the original files; a
    state dict with AllenNLP's keys (`_elmo_lstm...`, `scalar_mix_0.scalar_parameters.0`) or
    with elmokit 0.1's (`scalar_mixes.0...`) loads too.

    `scalar_mix_parameters` fixes the (pre-softmax) mixing weights and makes them, and gamma,
    non-trainable, as in AllenNLP.

    `vocab_to_cache`: word i of the list is word id i, id 0 is padding (so put a placeholder
    such as "@@PADDING@@" first, as AllenNLP vocabularies do). The token vector of every word
    is computed once, and forward then accepts word ids [B, T] instead of character ids; a
    batch with an id outside the cache falls back to the character ids, as AllenNLP does.
    """

    def __init__(
        self,
        options_file: str | Path | None,
        weight_file: str | Path | None = None,
        num_output_representations: int = 1,
        requires_grad: bool = False,
        do_layer_norm: bool = False,
        dropout: float = 0.5,
        vocab_to_cache: Sequence[str] | None = None,
        keep_sentence_boundaries: bool = False,
        scalar_mix_parameters: Sequence[float] | None = None,
        module: nn.Module | None = None,
        *,
        state_policy: StatePolicy | None = None,
        bilm: BiLM | None = None,
        device: str | torch.device | None = None,
        precision: InferenceMode | None = None,
    ) -> None:
        super().__init__()
        if module is not None:
            if bilm is not None:
                raise ValueError("pass the biLM as module= or bilm=, not both")
            bilm = _bilm_of(module)
        if bilm is not None:
            if options_file is not None or weight_file is not None:
                raise ValueError("pass either a model path (and weight_file) or bilm=, not both")
            if device is not None:
                bilm = bilm.to(device)
            if state_policy is not None:
                bilm.state_policy = state_policy
        elif options_file is None:
            raise ValueError("Elmo needs a model (name, directory or options.json) or bilm=")
        else:
            bilm = load(
                options_file,
                weights=weight_file,
                state_policy=state_policy or "carry",
                device=device or "cpu",
            )
        if precision is not None:
            bilm.optimize_for_inference(precision)
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
        # AllenNLP's attribute names (scalar_mix_0, scalar_mix_1, ...): the state-dict keys of
        # AllenNLP task models.
        self._scalar_mixes: list[ScalarMix] = []
        for index in range(num_output_representations):
            mix = ScalarMix(
                n_layers,
                do_layer_norm=do_layer_norm,
                initial_scalar_parameters=scalar_mix_parameters,
                trainable=scalar_mix_parameters is None,
            )
            self.add_module(f"scalar_mix_{index}", mix)
            self._scalar_mixes.append(mix)
        self.dropout = nn.Dropout(dropout)
        self._register_load_state_dict_pre_hook(_translate_state_dict_keys, with_module=True)

        self.vocab_size = 0
        # Non-persistent: derived from the vocabulary and the biLM weights, so they stay out of
        # state_dict (100k words at P = 512 would add 200 MB) and are rebuilt after a load.
        self._vocab_char_ids: torch.Tensor
        self._token_cache: torch.Tensor
        no_words = torch.zeros(0, self.bilm.characters.width, dtype=torch.long)
        self.register_buffer("_vocab_char_ids", no_words, persistent=False)
        self.register_buffer("_token_cache", torch.zeros(0), persistent=False)
        if vocab_to_cache is not None:
            words = list(vocab_to_cache)
            if not words:
                raise ValueError("vocab_to_cache is empty")
            char_ids = self.bilm.batch_to_ids([words])[0]  # [V, width]
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
        return list(self._scalar_mixes)

    @property
    def scalar_mixes(self) -> list[ScalarMix]:
        """elmokit 0.1's name for `mixes`."""
        return self.mixes

    @property
    def _elmo_lstm(self) -> _AllenNLPStatePaths:
        """AllenNLP's path to the LSTM state: `elmo._elmo_lstm._elmo_lstm.reset_states()`."""
        return _AllenNLPStatePaths(self.bilm)

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
        layers, mask, lead_shape = self._bilm_layers(inputs, word_inputs)
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

    def bilm_layers(
        self, inputs: torch.Tensor | None, word_inputs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The biLM layers forward mixes: [N, L+1, T+2, 2P] and the mask [N, T+2], with <S>
        and </S>, for the inputs flattened to N rows (same arguments as forward)."""
        layers, mask, _ = self._bilm_layers(inputs, word_inputs)
        return layers, mask

    def _bilm_layers(
        self, inputs: torch.Tensor | None, word_inputs: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
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
        usable_chars = inputs is not None and inputs.dim() >= 3
        if words is not None and usable_chars and not self._in_cache(words):
            words = None  # AllenNLP's back-off: an id outside the cache -> the char ids
        if words is not None:
            lead_shape = words.shape[:-1]
            return (*self._bilm_layers_from_words(words.reshape(-1, words.shape[-1])), lead_shape)
        if inputs is None:
            raise ValueError("Elmo.forward needs character ids (or word ids with a cached vocab)")
        if inputs.dim() < 3:
            raise ValueError(
                f"character ids must have shape [batch, time, {self.bilm.characters.width}], got "
                f"{list(inputs.shape)}"
                + (" (word ids need vocab_to_cache)" if inputs.dim() == 2 else "")
            )
        lead_shape = inputs.shape[:-2]
        return (*self._bilm_layers_from_chars(inputs.reshape(-1, *inputs.shape[-2:])), lead_shape)

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

    def _in_cache(self, word_ids: torch.Tensor) -> bool:
        if word_ids.dtype not in (torch.int64, torch.int32):
            return False
        return not word_ids.numel() or (
            int(word_ids.min()) >= 0 and int(word_ids.max()) < self.vocab_size
        )

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


def _bilm_of(module: nn.Module) -> BiLM:
    """The BiLM behind AllenNLP's `module=`: a BiLM, or a wrapper with a `.bilm` (compat)."""
    bilm = module if isinstance(module, BiLM) else getattr(module, "bilm", None)
    if not isinstance(bilm, BiLM):
        raise TypeError(
            "module= must be an elmokit BiLM (or elmokit.compat.allennlp._ElmoBiLm), got "
            f"{type(module).__name__}"
        )
    return bilm


class _AllenNLPStatePaths:
    """`elmo._elmo_lstm._elmo_lstm.reset_states()` as AllenNLP users call it."""

    def __init__(self, bilm: BiLM) -> None:
        self._elmo_lstm = bilm
        self.bilm = bilm

    def reset_states(self) -> None:
        self.bilm.reset_states()


def _translate_state_dict_keys(
    module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: object
) -> None:
    """Load AllenNLP's keys and elmokit 0.1's as today's: `scalar_mixes.k.` (0.1) becomes
    `scalar_mix_k.`; AllenNLP's `_elmo_lstm.` biLM tensors become `bilm.` ones."""
    for key in [k for k in state_dict if k.startswith(prefix + "scalar_mixes.")]:
        rest = key[len(prefix + "scalar_mixes.") :]
        index, _, name = rest.partition(".")
        state_dict[f"{prefix}scalar_mix_{index}.{name}"] = state_dict.pop(key)
    assert isinstance(module, Elmo)
    translate_allennlp_elmo_keys(state_dict, prefix, module.bilm.config)

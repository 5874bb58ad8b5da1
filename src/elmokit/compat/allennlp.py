"""AllenNLP's ELMo names on elmokit: change `from allennlp... import X` to
`from elmokit.compat.allennlp import X` and the code runs with the same numbers.

- `Elmo`, `ScalarMix`, `batch_to_ids`: elmokit's own classes, which keep AllenNLP's signatures
  (re-exported here so that one import line serves).
- `ElmoEmbedder` (allennlp 0.9 `allennlp.commands.elmo`, what flair's `ELMoEmbeddings`, SeqVec
  and bio_embeddings call): `embed_sentence` / `embed_batch` / `embed_sentences` give numpy
  [3, T, D] per sentence, `batch_to_embeddings` (activations [B, 3, T, D], mask [B, T]),
  `embed_file` in the `allennlp elmo` HDF5 layout, `elmo_bilm`, `cuda_device`.
- `ElmoTokenEmbedder` (allennlp.modules.token_embedders), `_ElmoBiLm` and
  `_ElmoCharacterEncoder` (the "private" classes published code uses), `remove_sentence_boundaries`.

AllenNLP's names keep AllenNLP's stateful behaviour (state_policy "carry": a sentence's vectors
depend on the batches before it); each takes `state_policy="reset"` for elmokit's
deterministic mode. The rule, and what differs on purpose: docs/migrating.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np
import torch
from torch import nn

from elmokit.bilm import BiLM, StatePolicy
from elmokit.chars import batch_to_ids
from elmokit.elmo import Elmo
from elmokit.loading import load
from elmokit.modules.fast_inference import InferenceMode
from elmokit.modules.scalar_mix import ScalarMix

__all__ = [
    "ConfigurationError",
    "Elmo",
    "ElmoEmbedder",
    "ElmoTokenEmbedder",
    "ScalarMix",
    "batch_to_ids",
    "main",
    "remove_sentence_boundaries",
    "tiny_value_of_dtype",
]

# AllenNLP raises ConfigurationError where elmokit raises ValueError; `except
# ConfigurationError` / `pytest.raises(ConfigurationError)` keep working.
ConfigurationError = ValueError
DEFAULT_MODEL = "original"  # AllenNLP's default files are the published "original" model
DEFAULT_BATCH_SIZE = 64


def _load_bilm(
    options_file: str | Path | None,
    weight_file: str | Path | None,
    state_policy: StatePolicy,
    device: str | torch.device = "cpu",
) -> BiLM:
    return load(
        options_file if options_file is not None else DEFAULT_MODEL,
        weights=weight_file,
        state_policy=state_policy,
        device=device,
    )


def _cuda_device(cuda_device: int | str | torch.device) -> torch.device:
    """AllenNLP's `cuda_device` (-1 = CPU, k = cuda:k), or any torch device."""
    if isinstance(cuda_device, int):
        return torch.device("cpu") if cuda_device < 0 else torch.device("cuda", cuda_device)
    return torch.device(cuda_device)


def tiny_value_of_dtype(dtype: torch.dtype) -> float:
    """allennlp.nn.util.tiny_value_of_dtype: what is added to avoid dividing by zero."""
    if not dtype.is_floating_point:
        raise TypeError("only floating point types have a tiny value")
    return 1e-13 if dtype in (torch.float, torch.double) else 1e-4


def main() -> None:
    """allennlp.commands.main: runs `sys.argv[1:]` ("elmo ...") and raises the error itself
    instead of printing it, as AllenNLP's main did."""
    import sys

    from elmokit.cli import main as elmokit_main

    elmokit_main(["--traceback", *sys.argv[1:]])


def remove_sentence_boundaries(
    tensor: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, D] with <S> first and </S> after each row's last token, mask [B, T] ->
    [B, T-2, D] and [B, T-2] without them (AllenNLP's allennlp.nn.util function)."""
    lengths = mask.long().sum(dim=1)
    steps = tensor.shape[1] - 2
    positions = torch.arange(steps, device=tensor.device)
    new_mask = positions.unsqueeze(0) < (lengths - 2).unsqueeze(1)
    trimmed = tensor[:, 1 : steps + 1] * new_mask.unsqueeze(-1).to(tensor.dtype)
    return trimmed, new_mask


class _ElmoBiLm(nn.Module):
    """AllenNLP's `_ElmoBiLm`: forward(char ids [B, T, 50]) -> {"activations": L+1 tensors
    [B, T+2, 2P] (with <S> and </S>), "mask": [B, T+2]}."""

    def __init__(
        self,
        options_file: str | Path | None,
        weight_file: str | Path | None,
        requires_grad: bool = False,
        vocab_to_cache: Sequence[str] | None = None,
        *,
        state_policy: StatePolicy = "carry",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.bilm = _load_bilm(options_file, weight_file, state_policy, device)
        self.bilm.requires_grad_(requires_grad)
        self.requires_grad = requires_grad
        self.num_layers = self.bilm.config.n_layers + 1
        # The word cache of AllenNLP's _ElmoBiLm lives in Elmo here (vocab_to_cache there).
        self._elmo = Elmo(None, bilm=self.bilm, requires_grad=requires_grad, dropout=0.0,
                          vocab_to_cache=vocab_to_cache)  # fmt: skip

    @property
    def _elmo_lstm(self) -> Any:
        """AllenNLP's path to the LSTM state: `elmo_bilm._elmo_lstm.reset_states()`."""
        return self._elmo._elmo_lstm._elmo_lstm

    def get_output_dim(self) -> int:
        return self.bilm.config.output_dim

    def forward(
        self, inputs: torch.Tensor, word_inputs: torch.Tensor | None = None
    ) -> dict[str, Any]:
        layers, mask = self._elmo.bilm_layers(inputs, word_inputs)  # [B, L+1, T+2, 2P]
        return {"activations": list(layers.unbind(dim=1)), "mask": mask}


class _ElmoCharacterEncoder(nn.Module):
    """AllenNLP's `_ElmoCharacterEncoder`: forward(char ids [B, T, 50]) ->
    {"token_embedding": [B, T+2, P] with <S> and </S>, "mask": [B, T+2]}."""

    def __init__(
        self,
        options_file: str | Path | None,
        weight_file: str | Path | None,
        requires_grad: bool = False,
    ) -> None:
        super().__init__()
        self.bilm = _load_bilm(options_file, weight_file, "reset")
        self.bilm.requires_grad_(requires_grad)
        self.output_dim = self.bilm.config.projection_dim

    def get_output_dim(self) -> int:
        return self.output_dim

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = (inputs > 0).any(dim=-1)
        tokens = self.bilm.encode_tokens(inputs.to(torch.long))
        wrapped, boundary_mask = self.bilm.add_boundaries(tokens, mask.sum(dim=1))
        return {"token_embedding": wrapped, "mask": boundary_mask}


class ElmoTokenEmbedder(nn.Module):
    """AllenNLP's `ElmoTokenEmbedder`: one ELMo representation per token [B, T, D], optionally
    projected to `projection_dim`."""

    def __init__(
        self,
        options_file: str | Path | None = None,
        weight_file: str | Path | None = None,
        do_layer_norm: bool = False,
        dropout: float = 0.5,
        requires_grad: bool = False,
        projection_dim: int | None = None,
        vocab_to_cache: Sequence[str] | None = None,
        scalar_mix_parameters: Sequence[float] | None = None,
        *,
        state_policy: StatePolicy = "carry",
        device: str | torch.device = "cpu",
        precision: InferenceMode | None = None,
    ) -> None:
        super().__init__()
        bilm = _load_bilm(options_file, weight_file, state_policy, device)
        self._elmo = Elmo(
            None,
            None,
            1,
            requires_grad=requires_grad,
            do_layer_norm=do_layer_norm,
            dropout=dropout,
            vocab_to_cache=vocab_to_cache,
            scalar_mix_parameters=scalar_mix_parameters,
            bilm=bilm,
            precision=precision,
        )
        self._projection = (
            nn.Linear(self._elmo.get_output_dim(), projection_dim) if projection_dim else None
        )
        self.output_dim = projection_dim or self._elmo.get_output_dim()

    def get_output_dim(self) -> int:
        return self.output_dim

    def forward(
        self, elmo_tokens: torch.Tensor, word_inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        representation = self._elmo(elmo_tokens, word_inputs)["elmo_representations"][0]
        if self._projection is None:
            return representation
        return self._projection(representation)


class ElmoEmbedder:
    """allennlp 0.9's `ElmoEmbedder(options_file, weight_file, cuda_device=-1)`.

    options_file may also be any model `elmokit.load` accepts (weight_file None); with neither,
    the published "original" model (downloaded once into the cache, as AllenNLP did).
    Stateful by default as AllenNLP's: state_policy="reset" for sentence-independent vectors.
    """

    def __init__(
        self,
        options_file: str | Path | None = None,
        weight_file: str | Path | None = None,
        cuda_device: int | str | torch.device = -1,
        *,
        state_policy: StatePolicy = "carry",
        precision: InferenceMode | None = None,
    ) -> None:
        self.device = _cuda_device(cuda_device)
        self.cuda_device = cuda_device
        self.elmo_bilm = _ElmoBiLm(
            options_file, weight_file, state_policy=state_policy, device=self.device
        ).eval()
        if precision is not None:
            self.elmo_bilm.bilm.optimize_for_inference(precision)

    @property
    def dim(self) -> int:
        return self.elmo_bilm.get_output_dim()

    @staticmethod
    def _empty() -> np.ndarray:
        # allennlp 0.9's empty_embedding(), whatever the model's size: (3, 0, 1024).
        return np.zeros((3, 0, 1024))

    @torch.no_grad()
    def batch_to_embeddings(self, batch: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """activations [B, L+1, T, D] (without <S> and </S>) and mask [B, T]."""
        bilm = self.elmo_bilm.bilm
        output = bilm(bilm.batch_to_ids(batch).to(self.device))
        return output.layers, output.mask

    def embed_sentence(self, sentence: list[str]) -> np.ndarray:
        """[3, T, D] for one tokenised sentence."""
        return self.embed_batch([sentence])[0]

    def embed_batch(self, batch: list[list[str]]) -> list[np.ndarray]:
        """[3, T_i, D] per sentence; an empty sentence gives [3, 0, D]."""
        if all(len(sentence) == 0 for sentence in batch):
            return [self._empty() for _ in batch]
        layers, mask = self.batch_to_embeddings(batch)
        lengths = mask.sum(dim=1).tolist()
        layers = layers.float().cpu()
        return [
            layers[i, :, :length].numpy() if length else self._empty()
            for i, length in enumerate(lengths)
        ]

    def embed_sentences(
        self, sentences: Iterable[list[str]], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[np.ndarray]:
        """Lazily, in order, `batch_size` sentences per biLM call."""
        iterator = iter(sentences)
        while batch := list(islice(iterator, batch_size)):
            yield from self.embed_batch(batch)

    def embed_file(
        self,
        input_file: IO[str] | str | Path,
        output_file_path: str | Path,
        output_format: str = "all",
        batch_size: int = DEFAULT_BATCH_SIZE,
        forget_sentences: bool = False,
        use_sentence_keys: bool = False,
    ) -> None:
        """Whitespace-tokenised lines -> HDF5 as `allennlp elmo` wrote it: one dataset per
        line ("all" [3, T, D], "top" or "average" [T, D]) keyed by line number (or by the
        sentence with use_sentence_keys), plus "sentence_to_index" unless forget_sentences."""
        if output_format not in ("all", "top", "average"):
            raise ValueError(f"output_format must be all, top or average, got {output_format!r}")
        if isinstance(input_file, (str, Path)):
            with open(input_file, encoding="utf-8") as handle:
                lines = [line.strip() for line in handle]
        else:
            lines = [line.strip() for line in input_file]
        blank = [index for index, line in enumerate(lines) if not line]
        if blank:
            raise ValueError(f"the input has empty lines at indexes {blank}; remove them")
        output = Path(output_file_path)
        partial = output.with_name(output.name + ".partial")
        keys = lines if use_sentence_keys else [str(index) for index in range(len(lines))]
        vectors = self.embed_sentences((line.split() for line in lines), batch_size)
        with h5py.File(partial, "w") as out:
            for key, layers in zip(keys, vectors, strict=True):
                if key in out:
                    raise ValueError(
                        f"sentence {key!r} occurs twice: with use_sentence_keys every sentence "
                        "must be distinct"
                    )
                data = {"all": layers, "top": layers[-1], "average": layers.mean(axis=0)}
                out.create_dataset(key, data=data[output_format].astype(np.float32))
            if not forget_sentences and not use_sentence_keys:
                index = out.create_dataset("sentence_to_index", (1,), dtype=h5py.string_dtype())
                index[0] = json.dumps({line: key for line, key in zip(lines, keys, strict=True)})
        os.replace(partial, output)

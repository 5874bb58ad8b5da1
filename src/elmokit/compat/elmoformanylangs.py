"""ELMoForManyLangs' `Embedder`, on elmokit: code written for EFML runs after an import change.

    from elmoformanylangs import Embedder            # before
    from elmokit.compat.elmoformanylangs import Embedder   # after
    e = Embedder("/path/to/zhs.model")
    vectors = e.sents2elmo([["我", "喜欢", "吃", "苹果"]])   # list of [T, 1024] arrays

EFML's default is stateful (issues #30, #53 there): each batch starts from the LSTM state the
previous batch left in the same row, the batches run in a random order (Python's global
`random.shuffle`) and the state lives as long as the Embedder, so a sentence's vectors depend on
what was embedded before it. This class reproduces that exactly (with `random.seed(...)` before
the call, the same numbers as EFML). `state_policy="reset"` gives every sentence zero state: the
same vectors whatever the batch, which is what most users want and what `elmokit.Embedder` does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from elmokit.bilm import BiLM, StatePolicy
from elmokit.chars import check_token_batch
from elmokit.devices import resolve_device
from elmokit.loading import load

__all__ = ["Embedder"]


class Embedder:
    """EFML's `Embedder(model_dir, batch_size=64)`: `sents2elmo(sents, output_layer=-1)`.

    model_dir: an EFML model directory, or anything `elmokit.load` reads.
    """

    def __init__(
        self,
        model_dir: str | Path,
        batch_size: int = 64,
        *,
        state_policy: StatePolicy = "carry",
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_dir = str(model_dir)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.model: BiLM = load(model_dir, state_policy=state_policy, device=self.device)
        self.use_cuda = self.device.type == "cuda"

    def sents2elmo(
        self, sents: Sequence[Sequence[str]], output_layer: int = -1
    ) -> list[np.ndarray]:
        """Per sentence (input order) a float32 array: output_layer -1 the mean of all layers
        [T, 2P]; -2 every layer [L+1, T, 2P]; 0 the token layer; 1..L that LSTM layer; other
        negative values count from the end, as in EFML."""
        sentences = check_token_batch(sents)
        n_layers = self.model.config.n_layers + 1
        if not isinstance(output_layer, int) or output_layer >= n_layers:
            raise IndexError(
                f"output_layer must be -2, -1 or 0..{n_layers - 1}, got {output_layer}"
            )
        empty = [index for index, sentence in enumerate(sentences) if not sentence]
        if output_layer == -1 and empty:
            # EFML fails there too (a ZeroDivisionError inside np.average).
            raise ValueError(
                f"sentence {empty[0]} is empty, and EFML's output_layer=-1 cannot average it; "
                "drop it, or use output_layer=-2 (an empty [L+1, 0, 2P] array)"
            )
        all_layers = self._all_layers(sentences)
        if output_layer == -1:
            return [np.average(layers, axis=0) for layers in all_layers]
        if output_layer == -2:
            return all_layers
        return [layers[output_layer] for layers in all_layers]

    def _all_layers(self, sentences: list[list[str]]) -> list[np.ndarray]:
        # EFML's create_batches: sort by length, longest first (stable), cut into batches,
        # shuffle the order of the batches; rows keep the sorted order within a batch.
        order = sorted(range(len(sentences)), key=lambda index: -len(sentences[index]))
        batches = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        random.shuffle(batches)
        results: list[np.ndarray | None] = [None] * len(sentences)
        with torch.inference_mode():
            for batch in batches:
                rows = [sentences[index] for index in batch]
                output = self.model(self.model.batch_to_ids(rows).to(self.device))
                layers = output.layers.float().cpu().numpy()  # [B, L+1, T, 2P]
                for row, index in enumerate(batch):
                    results[index] = np.ascontiguousarray(layers[row, :, : len(rows[row])])
        return [result for result in results if result is not None]

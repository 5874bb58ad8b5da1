"""A spaCy v3 pipeline component (`pip install elmokit[spacy]`):

    nlp = spacy.blank("en")             # or any pipeline
    nlp.add_pipe("elmokit", config={"model": "elmokit-small-en", "layers": "average"})
    doc = nlp("The bank raised its rates.")
    doc.tensor                           # [n_tokens, D]: one row per spaCy token
    doc[1].vector, doc[0:2].vector, doc.vector, doc.similarity(other)
    doc._.elmo_layers                    # [L+1, n_tokens, 2P]: every layer

The biLM reads spaCy's own tokens (so rows align with spaCy's tokenisation), with elmokit's
"reset" policy and fast path; `nlp.pipe` embeds its docs in batches through `Embedder`.
layers: "average" (the uniform mix of all layers), "top", "all" (the layers side by side,
D = (L+1) 2P) or "mix" (`mix_weights`, pre-softmax, as a fixed ScalarMix). `nlp.to_disk`
stores the biLM itself (native format), so the saved pipeline loads without the original files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc

from elmokit.embedder import Embedder
from elmokit.io.native import save_pretrained

LAYER_CHOICES = ("average", "top", "all", "mix")

if not Doc.has_extension("elmo_layers"):
    Doc.set_extension("elmo_layers", default=None)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else 0.0


@dataclass
class ElmoSettings:
    """The component's config: its fields and defaults are the factory's `default_config`."""

    model: str = "elmokit-small-en"
    weights: str | None = None
    layers: str = "average"
    mix_weights: list[float] | None = None
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {self.layers!r}")
        if self.layers == "mix" and not self.mix_weights:
            raise ValueError('layers="mix" needs mix_weights (one pre-softmax weight per layer)')


class ElmoComponent:
    def __init__(self, nlp: Language, name: str, settings: ElmoSettings) -> None:
        self.name = name
        self.cfg: dict[str, Any] = asdict(settings)
        # Loaded on first use: spacy.load builds the component from its config before
        # from_disk hands it the saved biLM, and the original files may be gone by then.
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            cfg = self.cfg
            self._embedder = Embedder(
                cfg["model"],
                device=cfg["device"],
                weights=cfg["weights"],
                precision=cfg["precision"],
                batch_size=cfg["batch_size"],
            )
            weights = cfg["mix_weights"]
            if weights is not None and len(weights) != self._embedder.n_layers:
                raise ValueError(
                    f"mix_weights has {len(weights)} values for {self._embedder.n_layers} layers"
                )
        return self._embedder

    def _tensor(self, layers: np.ndarray) -> np.ndarray:
        """[L+1, T, D] -> doc.tensor [T, D'] as configured."""
        choice = self.cfg["layers"]
        if choice == "average":
            return layers.mean(axis=0)
        if choice == "top":
            return layers[-1]
        if choice == "all":
            return np.concatenate(list(layers), axis=-1)
        w = np.exp(np.asarray(self.cfg["mix_weights"], dtype=np.float64))
        return np.tensordot((w / w.sum()).astype(np.float32), layers, axes=1)

    def _set(self, doc: Doc, layers: np.ndarray) -> Doc:
        doc.tensor = np.ascontiguousarray(self._tensor(layers), dtype=np.float32)
        doc._.elmo_layers = layers
        doc.user_hooks["vector"] = lambda d: d.tensor.mean(axis=0)
        doc.user_hooks["similarity"] = lambda d, other: _cosine(d.vector, other.vector)
        doc.user_span_hooks["vector"] = lambda span: span.doc.tensor[span.start : span.end].mean(
            axis=0
        )
        doc.user_span_hooks["similarity"] = lambda s, other: _cosine(s.vector, other.vector)
        doc.user_token_hooks["vector"] = lambda token: token.doc.tensor[token.i]
        doc.user_token_hooks["similarity"] = lambda t, other: _cosine(t.vector, other.vector)
        return doc

    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, stream: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        docs = iter(stream)
        while chunk := list(islice(docs, batch_size)):
            words = [[token.text for token in doc] for doc in chunk]
            for doc, layers in zip(chunk, self.embedder.embed_sentences(words), strict=True):
                yield self._set(doc, layers)

    # -- serialisation ----------------------------------------------------------------------

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.embedder.model, path / "model")
        (path / "cfg.json").write_text(json.dumps(self.cfg, indent=2), encoding="utf-8")

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> ElmoComponent:
        path = Path(path)
        saved = json.loads((path / "cfg.json").read_text(encoding="utf-8"))
        self.cfg = {**saved, "model": str(path / "model"), "weights": None}
        self._embedder = None
        return self


# spaCy reads a factory's arguments from its signature, so they are spelled out here once
# more; their defaults come from ElmoSettings.
@Language.factory("elmokit", default_config=asdict(ElmoSettings()))
def make_elmokit_component(
    nlp: Language,
    name: str,
    model: str,
    weights: str | None,
    layers: str,
    mix_weights: list[float] | None,
    device: str,
    precision: str,
    batch_size: int,
) -> ElmoComponent:
    settings = ElmoSettings(model, weights, layers, mix_weights, device, precision, batch_size)
    return ElmoComponent(nlp, name, settings)

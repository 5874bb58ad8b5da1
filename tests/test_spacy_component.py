"""The spaCy component on a real spaCy pipeline (spacy.blank needs no downloaded model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import elmokit
from elmokit.embedder import Embedder

spacy = pytest.importorskip("spacy")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(fixture_dir: Path) -> dict[str, str]:
    return {
        "model": str(fixture_dir / "options.json"),
        "weights": str(fixture_dir / "lm_weights.hdf5"),
    }


def test_doc_tensor_vectors_and_similarity(files: dict[str, str]) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("elmokit", config=files)  # found through the spacy_factories entry point
    doc = nlp("The bank raised its rates again.")
    words = [t.text for t in doc]
    layers = Embedder(elmokit.load(files["model"], weights=files["weights"])).embed_sentence(words)
    assert doc.tensor.shape == (len(doc), 32) and doc._.elmo_layers.shape == (3, len(doc), 32)
    np.testing.assert_allclose(doc.tensor, layers.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(doc[1].vector, doc.tensor[1], atol=0)
    np.testing.assert_allclose(doc[1:3].vector, doc.tensor[1:3].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(doc.vector, doc.tensor.mean(axis=0), atol=1e-6)
    other = nlp("A river bank.")
    assert -1.0 <= doc.similarity(other) <= 1.0
    assert doc[1].similarity(other[2]) == pytest.approx(
        float(doc[1].vector @ other[2].vector)
        / float(np.linalg.norm(doc[1].vector) * np.linalg.norm(other[2].vector)),
        rel=1e-5,
    )
    piped = list(nlp.pipe(["The bank raised its rates again.", "A river bank."], batch_size=2))
    np.testing.assert_allclose(piped[0].tensor, doc.tensor, atol=1e-6)


@pytest.mark.parametrize("layers, width", [("top", 32), ("all", 96), ("mix", 32)])
def test_layer_choices(files: dict[str, str], layers: str, width: int) -> None:
    nlp = spacy.blank("en")
    config = {**files, "layers": layers}
    if layers == "mix":
        config["mix_weights"] = [0.0, 0.0, 5.0]
    doc = nlp.add_pipe("elmokit", config=config) and nlp("Rates rose sharply .")
    assert doc.tensor.shape == (4, width)
    if layers == "top":
        np.testing.assert_allclose(doc.tensor, doc._.elmo_layers[-1], atol=0)


def test_round_trip_through_disk(tmp_path: Path, fixture_dir: Path) -> None:
    import shutil

    copies = tmp_path / "original"
    shutil.copytree(fixture_dir, copies)
    nlp = spacy.blank("en")
    config = {"model": str(copies / "options.json"), "weights": str(copies / "lm_weights.hdf5")}
    nlp.add_pipe("elmokit", config={**config, "layers": "top"})
    before = nlp("Rates rose sharply .").tensor
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(copies)  # the saved pipeline carries the biLM itself
    loaded = spacy.load(tmp_path / "pipeline")
    np.testing.assert_allclose(loaded("Rates rose sharply .").tensor, before, atol=1e-6)


def test_bad_config(files: dict[str, str]) -> None:
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="layers must be one of"):
        nlp.add_pipe("elmokit", config={**files, "layers": "bottom"})
    with pytest.raises(ValueError, match="mix_weights"):
        nlp.add_pipe("elmokit", name="e2", config={**files, "layers": "mix"})
    nlp.add_pipe("elmokit", name="e3", config={**files, "layers": "mix", "mix_weights": [1.0]})
    with pytest.raises(ValueError, match="1 values for 3 layers"):
        nlp("Rates rose")

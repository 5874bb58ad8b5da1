"""The bundled default model: loads offline by name and powers the README's main job."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elmokit
from elmokit.cli import main
from elmokit.loading import BUNDLED_DIR, bundled_models

NAME = "elmokit-small-en"
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "data" / "inaugural_sample.txt"


def test_default_model_is_bundled_with_card_and_vocab() -> None:
    assert NAME in bundled_models()
    directory = BUNDLED_DIR / NAME
    assert (directory / "MODEL_CARD.md").read_text().startswith(f"# {NAME}")
    assert (directory / "vocab.txt").read_text().splitlines()[:3] == ["<S>", "</S>", "<UNK>"]
    assert (directory / "model.safetensors").stat().st_size < 40 * 2**20


def test_default_model_loads_and_its_upper_layers_depend_on_context() -> None:
    bilm = elmokit.load(NAME)
    river = "He sat on the bank of the river and watched the water .".split()
    money = "She went to the bank to deposit her money .".split()
    with torch.no_grad():
        out = bilm(elmokit.batch_to_ids([river, money]))
    assert out.layers.shape == (2, 3, len(river), 256)
    position = 4  # "bank" in both sentences
    # Layer 0 is context-free: the same vector in both sentences; layers 1 and 2 are not.
    assert torch.allclose(out.layers[0, 0, position], out.layers[1, 0, position], atol=1e-6)
    for layer in (1, 2):
        a, b = out.layers[0, layer, position], out.layers[1, layer, position]
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) < 0.99


def test_readme_main_job(tmp_path: Path) -> None:
    output = tmp_path / "sample_elmo.hdf5"
    assert main(["embed", str(SAMPLE), str(output), "--all"]) == 0
    lines = SAMPLE.read_text().splitlines()
    with h5py.File(output, "r") as f:
        assert f["0"].shape == (3, len(lines[0].split()), 256)
        assert str(len(lines) - 1) in f
        index = json.loads(f["sentence_to_index"][0])
        assert index[lines[5]] == "5"
        assert np.isfinite(f["10"][...]).all()


def test_default_model_perplexity_on_speech(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped softmax works with `elmokit evaluate`: far below a uniform guess."""
    text = tmp_path / "speech.txt"
    text.write_text("\n".join(SAMPLE.read_text().splitlines()[:40]) + "\n")
    directory = BUNDLED_DIR / NAME
    vocab = directory / "vocab.txt"
    assert main(["evaluate", str(directory), str(text), "--vocab", str(vocab)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") :])
    assert 1 < result["test_ppl_mean"] < 1000  # a uniform guess over 16,000 words: 16,000

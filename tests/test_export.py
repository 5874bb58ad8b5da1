"""`elmokit export`: the TorchScript file runs in a fresh process without elmokit and gives the
eager model's layers (1e-5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import elmokit
from elmokit.export import ScriptableBiLM, export_torchscript
from elmokit.io.efml import load_efml
from tests.conftest import SHARED

SENTENCES = [
    ["The", "bank", "raised", "its", "rates", "."],
    ["A", "river", "bank"],
    ["Zürich", "😀", "银行", "x" * 80, "<S>"],
    ["one"],
]

# Runs in a process that never imports elmokit: only torch and the exported file.
CHILD = """
import json, sys, torch
model = torch.jit.load(sys.argv[1])
sentences = json.load(open(sys.argv[2], encoding="utf-8"))
with torch.no_grad():
    torch.save({"embed": model.embed(sentences), "forward": model(torch.load(sys.argv[3]))},
               sys.argv[4])
assert not any(name.startswith("elmokit") for name in sys.modules), "elmokit was imported"
"""


def test_exported_file_runs_without_elmokit(tmp_path: Path, fixture_dir: Path) -> None:
    model_args = ["--model", str(fixture_dir / "options.json")]
    model_args += ["--weights", str(fixture_dir / "lm_weights.hdf5")]
    exported = tmp_path / "elmo.pt"
    result = subprocess.run(
        [sys.executable, "-m", "elmokit.cli", "export", str(exported), *model_args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = subprocess.run(
        [sys.executable, "-m", "elmokit.cli", "export", str(exported), *model_args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "--overwrite" in again.stderr
    eager = elmokit.load(
        fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5", precision="reference"
    )
    ids = elmokit.batch_to_ids(SENTENCES)
    (tmp_path / "sentences.json").write_text(json.dumps(SENTENCES), encoding="utf-8")
    torch.save(ids, tmp_path / "ids.pt")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(exported), str(tmp_path / "sentences.json"),
         str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    outputs = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        expected = eager(ids).layers
    for name in ("embed", "forward"):
        assert outputs[name].shape == expected.shape
        assert float((outputs[name] - expected).abs().max()) <= 1e-5, name


def test_dictionary_models_export_their_ids_path() -> None:
    efml = SHARED / "fixtures" / "efml" / "efml-tiny-cnn-charonly"
    if not efml.is_dir():
        pytest.skip("EFML fixture missing")
    model = load_efml(efml).eval()
    scripted = torch.jit.script(ScriptableBiLM(model))
    sentences = [["我", "喜欢", "吃", "苹果"], ["Apple", "released", "a", "new", "phone", "."]]
    ids = model.batch_to_ids(sentences)
    with torch.no_grad():
        assert float((scripted(ids) - model(ids).layers).abs().max()) <= 1e-5
    with pytest.raises(Exception, match="own character dictionary"):
        scripted.embed(sentences)


def test_export_writes_atomically(tmp_path: Path, fixture_dir: Path) -> None:
    model = elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")
    path = export_torchscript(model, tmp_path / "m.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert torch.jit.load(str(path)).embed([["a"]]).shape == (1, 3, 1, 2 * 16)

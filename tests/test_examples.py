"""The runnable examples run, on the reference fixture model and the real data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_elmo_tagger_learns(fixture_dir: Path, data_dir: Path) -> None:
    out = _run(
        "elmo_tagger.py",
        str(fixture_dir / "options.json"),
        str(fixture_dir / "lm_weights.hdf5"),
        "--data",
        str(data_dir / "conll2000" / "train.txt"),
        "--steps",
        "30",
    )
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) >= 3 and losses[-1] < 0.8 * losses[0]
    weights = re.search(r"layer weights: \[\[(.+)\]\]", out)
    assert weights is not None and len(weights.group(1).split(",")) == 3


def test_word_senses_reports_every_layer(fixture_dir: Path, data_dir: Path) -> None:
    out = _run(
        "word_senses.py",
        "--model",
        str(fixture_dir / "options.json"),
        "--weights",
        str(fixture_dir / "lm_weights.hdf5"),
        "--data-dir",
        str(data_dir),
    )
    counts = re.search(
        r"(\d+) SemCor instances of noun \"bank\": \{'money': (\d+), 'river': (\d+)\}", out
    )
    assert counts is not None
    total, money, river = (int(x) for x in counts.groups())
    assert money >= 10 and river >= 10 and total == money + river
    rows = re.findall(r"^\s*(\d) \|\s+(-?\d\.\d+) \|\s+(-?\d\.\d+) \| (\d+\.\d)%$", out, re.M)
    assert [int(layer) for layer, *_ in rows] == [0, 1, 2]
    # Layer 0 is context-free: every "bank" has the same vector (cosine 1 for all pairs).
    assert float(rows[0][1]) > 0.999 and float(rows[0][2]) > 0.999
    neighbours = re.findall(r"^  (-?\d\.\d{3}) (money|river) ", out, re.M)
    assert len(neighbours) == 6


def test_chinese_efml_example_segments_and_embeds(data_dir: Path) -> None:
    pytest.importorskip("jieba")
    out = _run("chinese_efml.py")
    assert "company 1  苹果 发布 了 新手机 。" in out
    rows = re.findall(r"\| +(1\.0000) \| +(-?\d\.\d{4}) \| +(-?\d\.\d{4})$", out, re.M)
    assert len(rows) == 6  # layer 0 is context-free; the LSTM layers are not all 1
    assert any(float(layer) < 0.999 for row in rows for layer in row[1:])

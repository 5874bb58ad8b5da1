"""benchmarks/training_profile.py on a tiny recipe: every part is timed and the table adds up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_RECIPE = """
[model]
filters = [[1, 8], [2, 8], [3, 16]]
char_embedding_dim = 4
n_highway = 1
lstm_dim = 32
projection_dim = 16
n_layers = 2
[data]
batch_size = 4
unroll_steps = 6
[optim]
dropout = 0.1
"""


def test_training_profile_times_every_part(tmp_path: Path) -> None:
    recipe = tmp_path / "train.toml"
    recipe.write_text(TINY_RECIPE)
    command = [
        sys.executable, str(ROOT / "benchmarks" / "training_profile.py"), "--recipe", str(recipe),
        "--vocab-size", "50", "--threads", "1", "--repeats", "1", "--precision", "fp32",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    row = re.compile(r"^\| ([A-Za-z +()-]+) \| ([\d,.]+) \| (\d+)% \|", re.M)
    rows = {
        match[0]: (float(match[1].replace(",", "")), int(match[2]))
        for match in row.findall(result.stdout)
    }
    assert set(rows) == {
        "whole step", "token encoder", "LSTM stack", "softmax + cross-entropy", "rest",
    }  # fmt: skip
    assert rows["whole step"][1] == 100
    assert all(ms >= 0 for ms, _ in rows.values())
    assert "mkl_fp32 peak" in result.stdout

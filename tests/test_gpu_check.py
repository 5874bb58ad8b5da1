"""benchmarks/gpu_check.sh, checked where there is no GPU: its CPU fallback runs the whole
script (the CUDA tests skip) and writes the table it would write on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu(tmp_path: Path, data_dir: Path) -> None:
    env = {**os.environ, "ELMOKIT_GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_ARGS": "--quick",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "logs"), str(data_dir)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    logs = tmp_path / "logs"
    assert {"environment.txt", "cuda_tests.log", "gpu_check.md", "gpu_check.json"} <= {
        p.name for p in logs.iterdir()
    }
    tests = (logs / "cuda_tests.log").read_text()
    assert "skipped" in tests and "failed" not in tests, tests
    table = json.loads((logs / "gpu_check.json").read_text())
    rows = {(row["shape"], row["precision"]) for row in table["inference"]}
    assert rows == {("small", "fp32"), ("small", "bf16")}
    fp32 = next(row for row in table["inference"] if row["precision"] == "fp32")
    assert fp32["max_abs_error_vs_cpu_reference"] <= 2e-5  # the fast path vs the exact path
    assert table["training"]["tokens_per_s"] > 0
    assert "| small | fp32 | 64 |" in result.stdout

"""The model code on CUDA (issue #13): fp32 with TF32 off matches the CPU reference to 1e-4,
bf16 stays close, Elmo and a bf16 training step run, `elmokit embed --device cuda` agrees with
the CPU. Each test skips cleanly on a machine without CUDA (CI); benchmarks/gpu_check.sh runs
them on a GPU machine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elmokit
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SENTENCES = [
    ["The", "bank", "raised", "its", "interest", "rates", "again", "."],
    ["We", "sat", "on", "the", "river", "bank", "."],
    ["Rates", "rose"],
    ["Zürich", "😀", "x" * 60],
]
SMALL = BiLMConfig.published("small")


@pytest.fixture(autouse=True)
def no_tf32() -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def cpu_reference(config: BiLMConfig = SMALL) -> torch.Tensor:
    model = random_bilm(config, seed=0).eval().optimize_for_inference("reference")
    with torch.no_grad():
        return model(elmokit.batch_to_ids(SENTENCES)).layers


@pytest.mark.parametrize("precision", ["reference", "fp32"])
def test_fp32_on_cuda_matches_the_cpu_reference(precision: str) -> None:
    model = random_bilm(SMALL, seed=0).cuda().eval().optimize_for_inference(precision)  # type: ignore[arg-type]
    with torch.no_grad():
        layers = model(elmokit.batch_to_ids(SENTENCES).cuda()).layers.cpu()
    assert float((layers - cpu_reference()).abs().max()) <= 1e-4


def test_bf16_on_cuda_stays_close() -> None:
    model = random_bilm(SMALL, seed=0).cuda().eval().optimize_for_inference("bf16")
    with torch.no_grad():
        layers = model(elmokit.batch_to_ids(SENTENCES).cuda()).layers.float().cpu()
    reference = cpu_reference()
    mask = elmokit.batch_to_ids(SENTENCES).gt(0).any(-1)  # [B, T]
    got, want = layers.transpose(1, 2)[mask], reference.transpose(1, 2)[mask]  # [N, L+1, D]
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert float(cosine.min()) >= 0.999


def test_elmo_trains_its_mix_on_cuda() -> None:
    model = random_bilm(SMALL, seed=0).cuda()
    elmo = elmokit.Elmo(None, bilm=model, dropout=0.0, state_policy="reset")
    out = elmo(elmokit.batch_to_ids(SENTENCES).cuda())
    vectors = out["elmo_representations"][0]
    assert vectors.is_cuda and vectors.shape == (4, 8, SMALL.output_dim)
    vectors.sum().backward()
    assert all(p.grad is not None for p in elmo.scalar_mix_0.parameters())


def test_bf16_training_step_on_cuda() -> None:
    from elmokit.training.data import DirectionBatch, LMBatch
    from elmokit.training.language_model import BiLanguageModel

    config = BiLMConfig(filters=[(1, 8), (2, 8), (3, 16)], char_embedding_dim=4, lstm_dim=64,
                        projection_dim=16)  # fmt: skip
    model = BiLanguageModel(random_bilm(config, seed=0), 100, dropout=0.1).cuda().train()
    words = [["the", "bank", "rose", "again", "today", "."] for _ in range(4)]
    ids = elmokit.batch_to_ids(words).cuda()
    targets = torch.randint(0, 100, (4, 6), device="cuda")
    mask = torch.ones(4, 6, dtype=torch.bool, device="cuda")
    batch = LMBatch(*(DirectionBatch(targets, ids, targets, mask) for _ in range(2)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(batch, None).loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast


def test_embed_command_on_cuda_agrees_with_cpu(tmp_path: Path) -> None:
    elmokit.save_pretrained(random_bilm(SMALL, seed=0), tmp_path / "model")
    (tmp_path / "in.txt").write_text("\n".join(" ".join(s) for s in SENTENCES) + "\n")
    outputs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.hdf5"
        result = subprocess.run(
            [sys.executable, "-m", "elmokit.cli", "embed", str(tmp_path / "in.txt"), str(out),
             "--model", str(tmp_path / "model"), "--device", device, "--quiet"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with h5py.File(out, "r") as handle:
            outputs[device] = [handle[str(i)][()] for i in range(len(SENTENCES))]
    for a, b in zip(outputs["cpu"], outputs["cuda"], strict=True):
        assert float(np.abs(a - b).max()) <= 1e-4


def test_rank_device_is_the_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    from elmokit.devices import rank_device

    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_device("cuda") == torch.device("cuda", 0)

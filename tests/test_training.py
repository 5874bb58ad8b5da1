"""Training: the loop learns, a SIGKILLed run resumes bit-identically, torchrun with 2 processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from elmokit.modules.lstm import LSTMState
from elmokit.training.config import TrainConfig, scheduled_lr
from elmokit.training.language_model import (
    ChunkedCrossEntropy,
    SoftmaxHead,
    log_uniform_sample,
)
from elmokit.training.trainer import Trainer

TINY_MODEL = """
[model]
filters = [[1, 8], [2, 8], [3, 16]]
char_embedding_dim = 4
n_highway = 1
lstm_dim = {lstm_dim}
projection_dim = 16
n_layers = 2
"""


def write_config(tmp_path: Path, data_dir: Path, **overrides: object) -> Path:
    settings = {
        "lstm_dim": 64,
        "max_steps": 40,
        "checkpoint_every": 10,
        "batch_size": 8,
        "shuffle_buffer": 200,
        "n_negative": 0,
        "valid": True,
        "lr": 0.01,
        "precision": "fp32",
        "state_reset_prob": 0.0,
    }
    settings.update(overrides)
    valid = f'valid = ["{data_dir}/ptb_mikolov/ptb.valid.txt"]' if settings["valid"] else ""
    text = f"""
output_dir = "{tmp_path / "run"}"
seed = 3
{TINY_MODEL.format(lstm_dim=settings["lstm_dim"])}
[data]
train = ["{data_dir}/ptb_mikolov/ptb.test.txt"]
{valid}
vocab = "{tmp_path / "vocab.txt"}"
batch_size = {settings["batch_size"]}
unroll_steps = 10
shuffle_buffer = {settings["shuffle_buffer"]}
[optim]
optimizer = "adam"
lr = {settings["lr"]}
dropout = 0.1
n_negative_samples = {settings["n_negative"]}
max_steps = {settings["max_steps"]}
precision = "{settings["precision"]}"
state_reset_prob = {settings["state_reset_prob"]}
[log]
log_every = 5
eval_every = 1000
eval_max_tokens = 3000
checkpoint_every = {settings["checkpoint_every"]}
keep_checkpoints = 10
progress = false
"""
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_training_reduces_perplexity(tmp_path: Path, data_dir: Path) -> None:
    config = TrainConfig.from_toml(write_config(tmp_path, data_dir, max_steps=60))
    held_out = (data_dir / "ptb_mikolov" / "ptb.valid.txt").read_text().splitlines()
    (tmp_path / "valid.txt").write_text("\n".join(held_out[:300]) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(held_out[300:600]) + "\n")
    config.data.valid = [str(tmp_path / "valid.txt")]
    config.data.test = [str(tmp_path / "test.txt")]
    summary = Trainer(config).train()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    first_ppl = float(rows[1].split(",")[5])
    assert summary["step"] == 60
    # Uniform guessing over the 10k vocabulary gives 10,000; the model must be well below
    # both that and its own first measurement.
    assert summary["valid_ppl_mean"] < 0.5 * first_ppl < 10_000
    assert summary["test_ppl_forward"] > 1 and summary["test_ppl_backward"] > 1
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    exported_vocab = (tmp_path / "run" / "model" / "vocab.txt").read_text()
    assert exported_vocab == Path(config.data.vocab).read_text()
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 1000


def test_bf16_autocast_training_learns_with_fp32_weights_and_state(
    tmp_path: Path, data_dir: Path
) -> None:
    config = TrainConfig.from_toml(
        write_config(tmp_path, data_dir, max_steps=60, precision="bf16", valid=False)
    )
    trainer = Trainer(config)
    batch = next(trainer.batcher)
    trainer.model.eval()
    with torch.no_grad():
        exact = trainer.model(batch, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = trainer.model(batch, None)
    # bf16 products (8-bit mantissa), fp32 everything else: the loss moves by well under 1%.
    assert abs(float(mixed.loss) - float(exact.loss)) < 0.01 * float(exact.loss)
    assert mixed.state.h.dtype == mixed.state.c.dtype == torch.float32
    loss_before = float(exact.loss)
    summary = trainer.train()
    assert summary["step"] == 60
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.lstm_state is not None and trainer.lstm_state.c.dtype == torch.float32
    with torch.no_grad():
        after = float(trainer.model.eval()(batch, None).loss)
    assert after < loss_before - 1.0  # nats: it learned (uniform start is ln 10k = 9.2)


def test_state_resets_zero_whole_rows_at_the_configured_rate(
    tmp_path: Path, data_dir: Path
) -> None:
    config = TrainConfig.from_toml(write_config(tmp_path, data_dir, state_reset_prob=0.3))
    trainer = Trainer(config)
    h = torch.rand(2, 2, 1000, 16) + 0.5  # [layers, directions, rows, P]: no zeros
    c = torch.rand(2, 2, 1000, 64) + 0.5
    state = trainer._reset_some_rows(LSTMState(h, c))
    assert state is not None
    zero_rows = (state.h == 0).all(dim=-1).all(dim=0).all(dim=0)  # [rows]
    assert torch.equal(zero_rows, (state.c == 0).all(dim=-1).all(dim=0).all(dim=0))
    assert 0.25 < float(zero_rows.float().mean()) < 0.35
    kept = ~zero_rows
    assert torch.equal(state.h[:, :, kept], h[:, :, kept])
    assert torch.equal(state.c[:, :, kept], c[:, :, kept])
    assert trainer._reset_some_rows(None) is None
    with pytest.raises(ValueError, match="state_reset_prob must be in"):
        TrainConfig.from_toml(write_config(tmp_path, data_dir, state_reset_prob=1.5))


def test_precision_must_be_fp32_or_bf16(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        TrainConfig.from_toml(write_config(tmp_path, data_dir, precision="fp16"))


def test_sampled_softmax_is_close_to_full_softmax_on_average() -> None:
    torch.manual_seed(0)
    head = SoftmaxHead(500, 8)
    hidden = torch.randn(64, 8)
    targets = torch.randint(0, 500, (64,))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        full = head.full_nll(hidden, targets).mean()
        sampled = torch.stack(
            [head.sampled_nll(hidden, targets, 400, generator).mean() for _ in range(20)]
        ).mean()
    # With most of the vocabulary sampled the estimate is close (it is biased low).
    assert abs(float(sampled) - float(full)) < 0.15 * float(full)
    ids = log_uniform_sample(100_000, 1000, torch.Generator().manual_seed(1))
    # Zipf-like: id 0 is drawn about log(2)/log(1001) of the time.
    assert abs(float((ids == 0).float().mean()) - 0.1003) < 0.01


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_matches_cross_entropy_in_fp32(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of 7 rows for a 1,000-word vocabulary: 301 rows end in a partial block.
    monkeypatch.setattr(ChunkedCrossEntropy, "BLOCK_ELEMENTS", 7 * 1000)
    torch.manual_seed(0)
    logits = (torch.randn(301, 1000) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 1000, (301,))
    upstream = torch.randn(301)
    chunked = ChunkedCrossEntropy.apply(logits, targets)
    (chunked * upstream).sum().backward()
    assert logits.grad is not None
    chunked_grad, logits.grad = logits.grad.clone(), None
    plain = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    (plain * upstream).sum().backward()
    assert chunked.dtype == torch.float32 and chunked_grad.dtype == dtype
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    # The same fp32 gradient, rounded once to the logits' dtype.
    torch.testing.assert_close(chunked_grad, logits.grad, rtol=1e-5, atol=1e-6)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _train_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "elmokit.cli", "train", "--config", str(config), *extra]


@pytest.mark.slow
def test_sigkill_and_resume_ends_bit_identical(tmp_path: Path, data_dir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    # Random state resets draw from the RNG the checkpoint restores: resume must match too.
    options = {"max_steps": 60, "n_negative": 40, "valid": False, "state_reset_prob": 0.2}
    straight = write_config(straight_dir, data_dir, **options)
    killed = write_config(killed_dir, data_dir, **options)
    subprocess.run(_train_command(straight), check=True, env=env, capture_output=True)

    process = subprocess.Popen(
        _train_command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = killed_dir / "run" / "checkpoints"
    deadline = time.time() + 120
    while not (checkpoints / "step_00000020").exists():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (checkpoints / "step_00000060").exists(), "the run was not interrupted"
    resumed = subprocess.run(
        _train_command(killed, "--resume"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout

    a = _tensors(straight_dir / "run" / "checkpoints" / "step_00000060")
    b = _tensors(checkpoints / "step_00000060")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    optimizer_a = load_file(
        str(straight_dir / "run/checkpoints/step_00000060/optimizer.safetensors")
    )
    optimizer_b = load_file(str(checkpoints / "step_00000060" / "optimizer.safetensors"))
    assert all(torch.equal(optimizer_a[k], optimizer_b[k]) for k in optimizer_a)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path, data_dir, max_steps=100_000, checkpoint_every=100_000)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _train_command(config), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = tmp_path / "run" / "metrics.csv"
    deadline = time.time() + 120
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert saved and int(saved[-1].name[5:]) >= 10


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path, data_dir, max_steps=12, checkpoint_every=6, valid=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "elmokit.cli",
        "train",
        "--config",
        str(config),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "run" / "checkpoints" / "step_00000012"
    assert (final / "rank0.safetensors").exists() and (final / "rank1.safetensors").exists()
    assert '"world_size": 2' in (final / "trainer_state.json").read_text()
    # Both ranks read different halves of the corpus, so their carried LSTM states differ.
    rank0, rank1 = (
        load_file(str(final / "rank0.safetensors")),
        load_file(str(final / "rank1.safetensors")),
    )
    assert not torch.equal(rank0["lstm.h"], rank1["lstm.h"])
    # Resuming with two processes continues from step 12.
    config.write_text(config.read_text().replace("max_steps = 12", "max_steps = 18"))
    result = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step_00000018" / "rank1.json").exists()


def test_scheduled_lr_warms_up_then_decays_to_min_lr_at_the_planned_end() -> None:
    def curve(schedule: str) -> list[float]:
        return [scheduled_lr(1.0, 0.01, step, 110, schedule, 10) for step in range(130)]

    cosine, linear, constant = curve("cosine"), curve("linear"), curve("constant")
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(cosine[:9], cosine[1:10], strict=True))  # warm-up rises
    assert all(a >= b for a, b in zip(cosine[9:-1], cosine[10:], strict=True))  # then falls
    assert cosine[60] == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down
    assert linear[60] == pytest.approx(0.01 + 0.99 * 0.5)
    assert linear[35] == pytest.approx(0.01 + 0.99 * 0.75)
    assert cosine[110] == pytest.approx(0.01) and cosine[129] == pytest.approx(0.01)
    assert constant[9:] == [1.0] * 121


def test_trainer_follows_the_lr_schedule_and_resumes_on_it(
    tmp_path: Path, data_dir: Path, one_thread: None
) -> None:
    config_path = write_config(tmp_path, data_dir, max_steps=12, checkpoint_every=5)
    text = config_path.read_text().replace(
        "[optim]\n", '[optim]\nlr_schedule = "linear"\nwarmup_steps = 2\n'
    )
    config_path.write_text(text)
    config = TrainConfig.from_toml(config_path)
    trainer = Trainer(config)
    assert trainer.planned_steps == 12
    seen = record_step_lrs(trainer)
    trainer.train()
    base, floor = config.optim.lr, config.optim.min_lr
    expected = [scheduled_lr(base, floor, step, 12, "linear", 2) for step in range(12)]
    assert seen == pytest.approx(expected)
    assert seen[1] == pytest.approx(base) and seen[-1] < 0.2 * base

    # A run resumed from the step-10 checkpoint continues on the same curve.
    ckpt_dir = tmp_path / "run" / "checkpoints"
    for late in sorted(ckpt_dir.iterdir())[2:]:  # keep steps 5 and 10
        shutil.rmtree(late)
    resumed = Trainer(config, resume=True)
    assert resumed.state.step == 10
    resumed_seen = record_step_lrs(resumed)
    resumed.train()
    assert resumed_seen == pytest.approx(expected[10:])

    config_path.write_text(text.replace('"linear"', '"step"'))
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig.from_toml(config_path)


def record_step_lrs(trainer: Trainer) -> list[float]:
    """The learning rate in force at each optimizer step of `trainer`."""
    seen: list[float] = []
    original_step = trainer.optimizer.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return original_step(*args, **kwargs)

    trainer.optimizer.step = recording_step  # type: ignore[method-assign]
    return seen

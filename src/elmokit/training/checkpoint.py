"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a directory `step_XXXXXXXX/`:
- `config.json` + `model.safetensors`: the native model (biLM + `softmax.*`), loadable alone;
- `optimizer.safetensors` + `trainer_state.json`: optimizer tensors, and the JSON rest
  (step, lr, data position of the batcher, metrics);
- `rank{r}.safetensors` + `rank{r}.json`: per process, the carried LSTM state, the RNG
  states and the batcher position (each rank reads its own shard of the corpus).
It is assembled in a temporary directory and renamed into place, so a crash never leaves a
half-written checkpoint; only complete ones are ever found by `latest_checkpoint`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from elmokit.io.native import load_tensors, save_pretrained, split_softmax
from elmokit.training.language_model import BiLanguageModel

_STEP_DIR = re.compile(r"^step_(\d{8})$")
COMPLETE_MARKER = "trainer_state.json"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / COMPLETE_MARKER).exists()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_rank_state(
    directory: Path, rank: int, tensors: dict[str, torch.Tensor], data: dict[str, Any]
) -> None:
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        str(directory / f"rank{rank}.safetensors"),
    )
    (directory / f"rank{rank}.json").write_text(json.dumps(data), encoding="utf-8")


def load_rank_state(directory: Path, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensor_path = directory / f"rank{rank}.safetensors"
    if not tensor_path.exists():
        raise FileNotFoundError(
            f"{directory} has no state for rank {rank}: resume with the same number of processes"
        )
    data = json.loads((directory / f"rank{rank}.json").read_text(encoding="utf-8"))
    return load_file(str(tensor_path)), data


def staging_directory(output_dir: str | Path, step: int) -> Path:
    """A fresh temporary directory that `publish_checkpoint` will rename into place."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging_step_{step:08d}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def write_shared_state(
    staging: Path,
    model: BiLanguageModel,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """Model, optimizer and trainer JSON (rank 0 only; identical on every rank under DDP)."""
    save_pretrained(
        model.bilm,
        staging,
        softmax=model.softmax.state_dict(),
        metadata=metadata,
    )
    tensors, rest = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(staging / "optimizer.safetensors"))
    trainer_state = {**trainer_state, "optimizer": rest}
    # Written last: its presence marks the checkpoint complete.
    (staging / COMPLETE_MARKER).write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")


def publish_checkpoint(staging: Path, step: int, keep: int) -> Path:
    final = staging.parent / f"step_{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in list_checkpoints(staging.parent.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_shared_state(
    directory: Path, model: BiLanguageModel, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    bilm_state, softmax_state = split_softmax(load_tensors(directory))
    model.bilm.load_state_dict(bilm_state)
    model.softmax.load_state_dict(softmax_state)
    trainer_state: dict[str, Any] = json.loads(
        (directory / COMPLETE_MARKER).read_text(encoding="utf-8")
    )
    if optimizer is not None:
        optimizer_tensors = load_file(str(directory / "optimizer.safetensors"))
        optimizer.load_state_dict(
            _unflatten_optimizer(optimizer_tensors, trainer_state["optimizer"])
        )
    return trainer_state

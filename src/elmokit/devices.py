"""Device strings checked before any work starts: a clear message instead of a traceback from
deep inside torch ("Torch not compiled with CUDA enabled"), naming the devices that exist.
A CPU device never touches the CUDA runtime."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device this machine has, else a ValueError saying which it has."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"{device!r} is not a device (use cpu, cuda, cuda:N or mps): {error}"
        ) from None
    if resolved.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(
                f"device {device!r}: this PyTorch is a CPU-only build (no CUDA); use cpu, or "
                "install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"device {device!r}: no CUDA GPU is visible on this machine; use cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {device!r} does not exist: this machine has cuda:0 .. cuda:{count - 1}"
            )
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available here; use cpu")
    elif resolved.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return resolved


def rank_device(device: str | torch.device, local_rank: int | None = None) -> torch.device:
    """This process's device. Under torchrun (LOCAL_RANK set, or `local_rank` given) a bare
    "cuda" means this rank's own GPU, cuda:LOCAL_RANK, so N ranks use N GPUs instead of all
    landing on GPU 0; an explicit "cuda:k" and "cpu" are kept as given. Validated as
    resolve_device does."""
    return resolve_device(device_for_rank(device, local_rank))


def device_for_rank(device: str | torch.device, local_rank: int | None = None) -> torch.device:
    """The mapping rank_device applies, without asking torch which devices exist."""
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "-1"))
    parsed = torch.device(device)
    if parsed.type == "cuda" and parsed.index is None and local_rank >= 0:
        return torch.device("cuda", local_rank)
    return parsed

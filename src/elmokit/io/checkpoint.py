"""Kept so that `from elmokit.io.checkpoint import ...` keeps working: the native model format
lives in elmokit.io.native (training checkpoints in elmokit.training.checkpoint)."""

from elmokit.io.native import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    from_pretrained,
    read_native_config,
    save_pretrained,
)

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "from_pretrained",
    "read_native_config",
    "save_pretrained",
]

"""elmokit: ELMo deep contextualized word representations on modern PyTorch."""

from typing import TYPE_CHECKING, Any

from elmokit._version import __version__
from elmokit.bilm import BiLM, BiLMOutput
from elmokit.chars import batch_to_ids
from elmokit.config import BiLMConfig
from elmokit.io.native import from_pretrained, save_pretrained
from elmokit.loading import load

if TYPE_CHECKING:
    from elmokit.elmo import Elmo


def __getattr__(name: str) -> Any:
    # Imported on first use: elmo.py's torch.compiler.disable loads torch._dynamo, which adds
    # 87 MB of RSS and seconds of start-up (measured) to every command that never uses Elmo.
    if name == "Elmo":
        from elmokit.elmo import Elmo

        return Elmo
    raise AttributeError(f"module 'elmokit' has no attribute {name!r}")


__all__ = [
    "BiLM",
    "BiLMConfig",
    "BiLMOutput",
    "Elmo",
    "__version__",
    "batch_to_ids",
    "from_pretrained",
    "load",
    "save_pretrained",
]

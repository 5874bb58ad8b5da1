"""elmokit: ELMo deep contextualized word representations on modern PyTorch."""

from elmokit.bilm import BiLM, BiLMOutput
from elmokit.chars import batch_to_ids
from elmokit.config import BiLMConfig
from elmokit.elmo import Elmo
from elmokit.io.checkpoint import from_pretrained, save_pretrained
from elmokit.loading import load

__version__ = "0.1.0"

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

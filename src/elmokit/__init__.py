"""elmokit: ELMo deep contextualized word representations on modern PyTorch."""

from elmokit.chars import batch_to_ids

__version__ = "0.1.0"

__all__ = ["batch_to_ids", "__version__"]

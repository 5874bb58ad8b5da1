"""Optional extras (`pip install 'elmokit[zh]'`, `[hub]`, `[serve]`, `[spacy]`): one error type
for "this feature needs a package that is not installed", which the command line prints as
one line, naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """A feature's optional dependency is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or a MissingExtraError saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{feature} needs {module.split('.')[0]}: pip install 'elmokit[{extra}]' ({error})"
        ) from None

"""Writing files the one way elmokit writes them: atomically, and with the user's umask.

A file is written under a temporary name beside its target and renamed onto it only when
complete, so a crash or Ctrl-C never leaves a truncated model, vocabulary or download. The
temporary file comes from mkstemp, which creates it 0600; before the rename it gets the mode
a plain open() would have given (0666 minus the umask), so other users can read models and
vocabularies as they can read any other file the user writes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def default_file_mode() -> int:
    """0o666 minus the process umask: the mode open() gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `target` to write to; renamed onto `target` (with the
    user's file mode) when the block ends normally, removed when it raises."""
    target = Path(target)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, default_file_mode())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)

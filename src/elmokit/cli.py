"""The `elmokit` command line: one sub-command per module in `elmokit.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Module names under elmokit.commands; each provides register(subparsers).
COMMAND_MODULES = (
    "convert",
    "random_model",
    "download",
    "vocab",
    "train",
    "evaluate",
    "embed",
    "cache_vocab",
    "task",
)


def positive_int(text: str) -> int:
    """argparse type for counts that must be >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class CommandError(Exception):
    """An error meant for the user: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elmokit", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"elmokit.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError, TypeError, OSError) as error:
        print(f"elmokit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"elmokit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run as `python -m elmokit.cli`, this file is `__main__`, not `elmokit.cli`: go through the
    # package module so commands and this entry point share one CommandError class.
    from elmokit.cli import main as package_main

    sys.exit(package_main())

"""The `elmokit` command line: one sub-command per module in `elmokit.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Re-exported: commands used to import these from here.
from elmokit._version import __version__
from elmokit.commands._common import CommandError, positive_int
from elmokit.extras import MissingExtraError

__all__ = ["CommandError", "build_parser", "main", "positive_int"]

# Module names under elmokit.commands; each provides register(subparsers).
COMMAND_MODULES = (
    "convert",
    "random_model",
    "download",
    "vocab",
    "train",
    "evaluate",
    "embed",
    "elmo",
    "cache_vocab",
    "task",
    "serve",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elmokit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"elmokit {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show the full Python traceback instead of one line "
        "(also: ELMOKIT_DEBUG=1)",
    )
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
    debug = args.traceback or os.environ.get("ELMOKIT_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except (
        CommandError,
        FileNotFoundError,
        ValueError,
        TypeError,
        OSError,
        MissingExtraError,
    ) as error:
        if debug:
            raise
        # Messages about the user's files need no traceback; anything else may be a bug.
        plain = (
            CommandError,
            FileNotFoundError,
            FileExistsError,
            PermissionError,
            MissingExtraError,
        )
        hint = "" if isinstance(error, plain) else " (elmokit --traceback ... shows where)"
        print(f"elmokit {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"elmokit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

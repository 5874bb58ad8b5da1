"""What the sub-commands share: the user-facing error, argument types, the model arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MODEL = "elmokit-small-en"


class CommandError(Exception):
    """An error meant for the user: printed as one line, exit code 2, no traceback
    (unless --traceback or ELMOKIT_DEBUG=1)."""


def positive_int(text: str) -> int:
    """argparse type for counts that must be >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def device_argument(text: str) -> str:
    """argparse type for --device: a device this machine has (checked before any work)."""
    from elmokit.devices import resolve_device

    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """The one output policy of every command: an existing output is replaced only with
    --overwrite."""
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exists; pass --overwrite to replace it")


def progress_wanted(quiet: bool) -> bool:
    """Progress bars only on a terminal: in a log file tqdm's carriage returns are noise."""
    return not quiet and sys.stderr.isatty()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help=f"bundled model name, model directory, options.json or published name "
        f"(default: the bundled {DEFAULT_MODEL}, if installed)",
    )
    parser.add_argument("--weights", help="weight file (.hdf5), when --model is an options.json")
    parser.add_argument(
        "--device", default="cpu", type=device_argument, help="torch device: cpu, cuda, cuda:N"
    )
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch")


def model_argument(args: argparse.Namespace) -> str:
    """--model, or the bundled default model when none is given."""
    from elmokit.loading import bundled_models

    if args.model:
        return str(args.model)
    if DEFAULT_MODEL in bundled_models():
        return DEFAULT_MODEL
    raise CommandError(
        f"no --model given and the default bundled model {DEFAULT_MODEL} is not installed; "
        "pass --model NAME_OR_PATH (a model directory, an options.json with --weights, "
        "or a published name such as 'small')"
    )

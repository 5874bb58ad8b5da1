"""`elmokit download NAME`: fetch a published ELMo model (or nlpl:ID) into the local cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from elmokit.io.download import (
    BASE_URL_ENV,
    CACHE_ENV,
    NLPL_PREFIX,
    PUBLISHED_MODELS,
    download_nlpl,
    download_published,
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    names = ", ".join(PUBLISHED_MODELS) + ", nlpl:ID (an NLPL repository ELMo ZIP)"
    parser = subparsers.add_parser(
        "download",
        help="download a published ELMo model into the cache (docs/models.md lists them)",
        description=(
            "Download a published AllenNLP ELMo model, verify it and keep it in the cache; "
            "prints the options and weights paths, one per line (for nlpl:ID the ZIP's path). "
            "A verified cached copy is "
            "reused without any network access. This command is the only way elmokit ever "
            "downloads anything."
        ),
        epilog=(
            f"Models: {names}. Cache: --cache-dir, else ${CACHE_ENV}, else "
            f"$XDG_CACHE_HOME/elmokit, else ~/.cache/elmokit. Mirror: set ${BASE_URL_ENV}."
        ),
    )
    parser.add_argument("name", metavar="NAME", help=f"which model: {names}")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, metavar="DIR", help="cache directory to use"
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even if a verified copy is cached"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name.startswith(NLPL_PREFIX):
        print(download_nlpl(args.name, cache=args.cache_dir, force=args.force))
        return 0
    options_path, weights_path = download_published(
        args.name, cache=args.cache_dir, force=args.force
    )
    # Paths alone on stdout, so `elmokit download small | ...` scripts cleanly; the progress
    # bar goes to stderr.
    print(options_path)
    print(weights_path)
    return 0

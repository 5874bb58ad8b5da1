"""`elmokit cache-vocab VOCAB OUTPUT`: the token-embedding cache of a vocabulary.

Writes the `embedding` dataset (V, P): the context-free token vector (char CNN + highways +
projection) of each vocabulary line, in file order (FORMATS.md, "Token-embedding cache"). The
vocabulary is read twice (count, then encode) so that memory stays flat for any size.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from elmokit.commands._common import (
    CommandError,
    add_model_arguments,
    model_argument,
    positive_int,
)
from elmokit.io.features import write_token_embeddings
from elmokit.loading import load


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "cache-vocab",
        help="write the token-embedding cache (HDF5 `embedding`, V x P) of a vocabulary file",
    )
    parser.add_argument("vocab", help="vocabulary file, one token per line (UTF-8)")
    parser.add_argument("output", help="HDF5 file to write")
    add_model_arguments(parser)
    parser.add_argument(
        "--batch-size", type=positive_int, default=1024, help="tokens per char-CNN call"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(func=run)


def read_vocab(path: Path) -> Iterator[str]:
    """Tokens of a vocabulary file: each line without its line break (no other stripping:
    the line is the token)."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise CommandError(f"{path}: line {number} is not valid UTF-8") from None


def run(args: argparse.Namespace) -> int:
    import torch

    vocab, output = Path(args.vocab), Path(args.output)
    if not vocab.is_file():
        raise FileNotFoundError(f"vocabulary {vocab} does not exist")
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output directory {output.parent} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(model_argument(args), weights=args.weights, device=args.device)
    n_tokens = sum(1 for _ in read_vocab(vocab))

    def batches() -> Iterator[np.ndarray]:
        tokens = read_vocab(vocab)
        while True:
            batch = [model.characters.token_ids(token) for token in islice(tokens, args.batch_size)]
            if not batch:
                return
            with torch.inference_mode():
                ids = torch.tensor(batch, device=args.device)
                yield model.encode_tokens(ids).cpu().numpy()

    write_token_embeddings(output, n_tokens, model.config.projection_dim, batches())
    print(f"wrote {n_tokens} token vectors ({model.config.projection_dim} each) to {output}")
    return 0

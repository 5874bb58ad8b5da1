"""`elmokit elmo INPUT OUTPUT --all|--top|--average`: the `allennlp elmo` command, flag for flag,
so a shell script that called `allennlp elmo ...` runs with `elmokit elmo ...`.

AllenNLP's behaviour is kept: LSTM state is carried from batch to batch (so a line's vectors
depend on the lines before it), blank lines are refused, OUTPUT is replaced if it exists, and
without --options-file / --weight-file the published "original" model is used (downloaded
once into the cache). `elmokit embed` is the native command (deterministic, resumable,
streaming); docs/migrating.md compares the two.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from elmokit.commands._common import CommandError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "elmo", help="the `allennlp elmo` command with its flags (AllenNLP's stateful behaviour)"
    )
    parser.add_argument("input_file", help="one whitespace-tokenised sentence per line")
    parser.add_argument("output_file", help="HDF5 file to write")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true", help="all three ELMo layers")
    group.add_argument("--top", action="store_true", help="the top layer")
    group.add_argument("--average", action="store_true", help="the average of the layers")
    parser.add_argument("--vocab-path", help="accepted for compatibility; not used (as in 0.9)")
    parser.add_argument("--options-file", help="ELMo options.json (default: published original)")
    parser.add_argument("--weight-file", help="ELMo weights.hdf5 (default: published original)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--file-friendly-logging", action="store_true", help="accepted; no-op")
    parser.add_argument("--cuda-device", type=int, default=-1, help="GPU index, -1 for the CPU")
    parser.add_argument(
        "--forget-sentences",
        action="store_true",
        help="do not write the sentence_to_index dataset",
    )
    parser.add_argument(
        "--use-sentence-keys", action="store_true", help="key datasets by sentence, not line"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from elmokit.compat.allennlp import ElmoEmbedder

    source, target = Path(args.input_file), Path(args.output_file)
    if not source.is_file():
        raise FileNotFoundError(f"input file {source} does not exist")
    if target.exists() and os.path.samefile(source, target):
        raise CommandError(f"{target} is the input file: give another output path")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.cuda_device >= 0 and not torch.cuda.is_available():
        raise CommandError(f"--cuda-device {args.cuda_device}: this machine has no CUDA device")
    output_format = "all" if args.all else "top" if args.top else "average"
    embedder = ElmoEmbedder(args.options_file, args.weight_file, args.cuda_device)
    with torch.no_grad():
        embedder.embed_file(
            source,
            target,
            output_format,
            args.batch_size,
            args.forget_sentences,
            args.use_sentence_keys,
        )
    print(f"wrote {target}")
    return 0

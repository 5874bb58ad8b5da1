"""`elmokit vocab CORPUS... --output vocab.txt`: build a training vocabulary from text files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from elmokit.commands._common import positive_int, progress_wanted, refuse_existing
from elmokit.tokenizers import TOKENIZERS
from elmokit.training.data import iter_sentences
from elmokit.vocab import build_vocabulary


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "vocab",
        help="build a training vocabulary (one token per line, most frequent first)",
        description=(
            "Count the tokens of one or more corpus files (one sentence per line, .gz allowed, "
            "glob patterns allowed) and write <S>, </S>, <UNK>, then the tokens by descending "
            "count, ties in alphabetical order."
        ),
    )
    parser.add_argument("corpus", nargs="+", help="text files or glob patterns ('data/*.txt')")
    parser.add_argument("--output", "-o", required=True, help="vocabulary file to write")
    parser.add_argument(
        "--min-count", type=positive_int, default=1, help="drop tokens seen fewer times"
    )
    parser.add_argument(
        "--max-size",
        type=positive_int,
        default=None,
        help="keep at most this many entries, counting <S>, </S> and <UNK>",
    )
    parser.add_argument(
        "--tokenize",
        choices=TOKENIZERS,
        default="whitespace",
        help="whitespace for pre-tokenised text (e.g. the 1B Word Benchmark), moses for raw text",
    )
    parser.add_argument("--lang", default="en", help="Moses tokeniser language")
    parser.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="replace: read non-UTF-8 bytes as U+FFFD instead of stopping",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The inputs and the limits first (cheap, and what is wrong with them is the news), then
    # the output policy, then the pass over the corpus.
    sentences = iter_sentences(
        args.corpus, tokenize=args.tokenize, lang=args.lang, errors=args.encoding_errors
    )
    build_vocabulary([], min_count=args.min_count, max_size=args.max_size)
    refuse_existing([Path(args.output)], args.overwrite)
    # total=None: counting lines first would read the whole corpus twice.
    progress = tqdm(
        sentences, unit=" lines", disable=not progress_wanted(args.quiet), mininterval=1.0
    )
    with progress:
        vocab = build_vocabulary(progress, min_count=args.min_count, max_size=args.max_size)
    vocab.save(args.output)
    message = f"wrote {len(vocab)} entries to {args.output}"
    if vocab.counts is not None:
        # counts[2] is the number of corpus tokens left out (they will train as <UNK>).
        kept, total = sum(vocab.counts[3:]), sum(vocab.counts[2:])
        if total:
            message += f" ({100.0 * kept / total:.2f}% of {total} corpus tokens covered)"
    print(message)
    return 0

"""`elmokit evaluate MODEL TEXT...`: perplexity (forward, backward, mean) on held-out text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elmokit.commands._common import CommandError, device_argument, progress_wanted
from elmokit.tokenizers import TOKENIZERS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="perplexity of a trained biLM (native directory with softmax) on text"
    )
    parser.add_argument(
        "model", help="bundled model name or native model directory with a softmax (training's)"
    )
    parser.add_argument("text", nargs="+", help="text files, one sentence per line (.gz ok)")
    parser.add_argument(
        "--vocab",
        help="the vocabulary the model was trained with (default: vocab.txt in the model "
        "directory)",
    )
    parser.add_argument("--tokenize", choices=TOKENIZERS, default="whitespace")
    parser.add_argument("--lang", default="en", help="language of the Moses tokeniser")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--unroll-steps", type=int, default=20)
    parser.add_argument(
        "--row-layout",
        choices=("packed", "contiguous"),
        default="packed",
        help="how batch rows read the text: 'packed' (bilm-tf, each row takes the next "
        "sentence) or 'contiguous' (row r reads the r-th slice: the PTB protocol, cross-"
        "sentence context; use what the model was trained with)",
    )
    parser.add_argument("--device", default="cpu", type=device_argument, help="cpu, cuda, cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from elmokit.io.native import VOCAB_NAME, from_pretrained, load_softmax
    from elmokit.loading import native_directory
    from elmokit.training.data import iter_sentences
    from elmokit.training.language_model import BiLanguageModel
    from elmokit.training.trainer import evaluate_perplexity
    from elmokit.vocab import Vocabulary

    directory = native_directory(args.model)
    if directory is None:
        raise CommandError(
            f"{args.model} is not a bundled model name or a native model directory; a "
            "published HDF5 model has no softmax to evaluate"
        )
    vocab_path = Path(args.vocab) if args.vocab else directory / VOCAB_NAME
    if not vocab_path.exists():
        raise CommandError(f"{directory} has no {VOCAB_NAME}: pass --vocab")
    vocab = Vocabulary.from_file(vocab_path)
    bilm = from_pretrained(directory)
    softmax = load_softmax(directory)
    if not softmax:
        raise CommandError(f"{args.model} has no softmax (published HDF5 models have none)")
    if softmax["weight"].shape[0] != len(vocab):
        raise CommandError(
            f"the model's softmax has {softmax['weight'].shape[0]} rows but {vocab_path} has "
            f"{len(vocab)} tokens: pass the vocabulary the model was trained with"
        )
    model = BiLanguageModel(bilm, len(vocab), dropout=0.0)
    model.softmax.load_state_dict(softmax)
    model.to(args.device)
    result = evaluate_perplexity(
        model,
        lambda: iter_sentences(args.text, args.tokenize, lang=args.lang),
        vocab,
        batch_size=args.batch_size,
        unroll_steps=args.unroll_steps,
        device=args.device,
        progress=progress_wanted(args.quiet),
        row_layout=args.row_layout,
    )
    print(json.dumps({**result.as_dict("test"), "tokens": result.tokens}, indent=2))
    return 0

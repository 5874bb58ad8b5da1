"""`elmokit evaluate MODEL TEXT...`: perplexity (forward, backward, mean) on held-out text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elmokit.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="perplexity of a trained biLM (native directory with softmax) on text"
    )
    parser.add_argument("model", help="native model directory saved by training (has a softmax)")
    parser.add_argument("text", nargs="+", help="text files, one sentence per line (.gz ok)")
    parser.add_argument("--vocab", required=True, help="the vocabulary the model was trained with")
    parser.add_argument("--tokenize", choices=("whitespace", "moses"), default="whitespace")
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
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from elmokit.io.checkpoint import from_pretrained
    from elmokit.training.data import iter_sentences
    from elmokit.training.language_model import BiLanguageModel
    from elmokit.training.trainer import evaluate_perplexity
    from elmokit.vocab import Vocabulary

    vocab = Vocabulary.from_file(args.vocab)
    bilm = from_pretrained(args.model)
    tensors = load_file(str(Path(args.model) / "model.safetensors"))
    softmax = {k[len("softmax.") :]: v for k, v in tensors.items() if k.startswith("softmax.")}
    if not softmax:
        raise CommandError(f"{args.model} has no softmax (published HDF5 models have none)")
    if softmax["weight"].shape[0] != len(vocab):
        raise CommandError(
            f"the model's softmax has {softmax['weight'].shape[0]} rows but {args.vocab} has "
            f"{len(vocab)} tokens: pass the vocabulary the model was trained with"
        )
    model = BiLanguageModel(bilm, len(vocab), dropout=0.0)
    model.softmax.load_state_dict(softmax)
    model.to(args.device)
    result = evaluate_perplexity(
        model,
        lambda: iter_sentences(args.text, args.tokenize),
        vocab,
        batch_size=args.batch_size,
        unroll_steps=args.unroll_steps,
        device=args.device,
        progress=True,
        row_layout=args.row_layout,
    )
    print(json.dumps({**result.as_dict("test"), "tokens": result.tokens}, indent=2))
    return 0

"""`elmokit export OUT.pt [--model M]`: the stateless biLM as a TorchScript file (export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from elmokit.commands._common import add_model_arguments, model_argument, refuse_existing


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the stateless biLM to TorchScript, to serve without elmokit",
        description="Write a TorchScript file of the model's zero-state inference (float32): "
        "torch.jit.load(OUT) runs it in any process with torch, or from C++ (libtorch). "
        "It takes ids ([B, T, width]; 0 is padding) in forward() and, for byte-scheme models, "
        "token lists in embed(); both return every layer [B, L+1, T, 2P].",
    )
    parser.add_argument("output", type=Path, help="the .pt file to write")
    add_model_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from elmokit.export import export_torchscript
    from elmokit.loading import load

    refuse_existing([args.output], args.overwrite)
    model = load(model_argument(args), weights=args.weights)
    export_torchscript(model, args.output)
    print(
        f"wrote {args.output} (TorchScript, {model.config.n_layers + 1} layers of "
        f"{model.config.output_dim})"
    )
    return 0

"""`elmokit random-model CONFIG TARGET`: a random-weight biLM in published shapes.

For tests and benchmarks: the LSTM gain makes activations look like a trained model's
(not saturated, not near zero, clipping reached on a small fraction of values).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from elmokit.commands._common import refuse_existing
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm
from elmokit.io.native import CONFIG_NAME, WEIGHTS_NAME, save_pretrained
from elmokit.io.weights_hdf5 import save_bilm


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "random-model", help="write a random-weight biLM (published shapes) for tests/benchmarks"
    )
    parser.add_argument("config", help="small | medium | original | path to an options.json")
    parser.add_argument("target", help="output directory")
    parser.add_argument("--format", choices=("hdf5", "native"), default="hdf5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lstm-gain", type=float, default=2.0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing model files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    config = (
        BiLMConfig.from_json_file(config_path)
        if config_path.suffix == ".json"
        else BiLMConfig.published(args.config)
    )
    model = random_bilm(config, seed=args.seed, lstm_gain=args.lstm_gain)
    target = Path(args.target)
    names = (
        ("options.json", "weights.hdf5") if args.format == "hdf5" else (CONFIG_NAME, WEIGHTS_NAME)
    )
    refuse_existing([target / name for name in names], args.overwrite)
    if args.format == "hdf5":
        target.mkdir(parents=True, exist_ok=True)
        save_bilm(model, target / "options.json", target / "weights.hdf5")
    else:
        save_pretrained(model, target, metadata={"random_seed": args.seed})
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote random {args.config} biLM ({n_params / 1e6:.1f}M parameters) to {target}")
    return 0

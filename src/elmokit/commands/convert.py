"""`elmokit convert SOURCE TARGET`: published HDF5 + options.json <-> native safetensors; an
ELMoForManyLangs model directory -> native (its dictionaries come along)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from elmokit.commands._common import CommandError
from elmokit.io.native import CHARACTERS_NAME, CONFIG_NAME, WEIGHTS_NAME, save_pretrained
from elmokit.io.weights_hdf5 import hdf5_layout_problems, save_bilm
from elmokit.loading import load

HDF5_OPTIONS_NAME = "options.json"
HDF5_WEIGHTS_NAME = "weights.hdf5"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a model between the published HDF5 format and the native format",
        description="Read any model elmokit can load (bundled name, native directory, "
        "published options.json + .hdf5 directory, NLPL ZIP, ELMoForManyLangs directory) and "
        "write it in the other format. Models with their own character dictionary or a word "
        "embedding (ELMoForManyLangs) convert only to native: the HDF5 layout cannot hold them.",
    )
    parser.add_argument(
        "source", help="model name, native directory, published directory, ZIP or EFML directory"
    )
    parser.add_argument("target", help="output directory")
    parser.add_argument(
        "--to",
        choices=("native", "hdf5"),
        required=True,
        help="native: config.json + model.safetensors; hdf5: options.json + weights.hdf5",
    )
    parser.add_argument("--weights", help="weight file, when SOURCE is an options.json path")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage precision of native files (HDF5 is always float32)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load(args.source, weights=args.weights)
    target = Path(args.target)
    if args.to == "hdf5" and hdf5_layout_problems(model.config):
        raise CommandError(
            f"{args.source} cannot be written in the bilm-tf HDF5 layout: "
            + "; ".join(hdf5_layout_problems(model.config))
            + ". Use --to native (config.json + model.safetensors + its dictionaries)."
        )
    names = (
        [HDF5_OPTIONS_NAME, HDF5_WEIGHTS_NAME] if args.to == "hdf5" else [CONFIG_NAME, WEIGHTS_NAME]
    )
    if args.to == "native" and model.characters.kind == "dictionary":
        names.append(CHARACTERS_NAME)
    existing = [name for name in names if (target / name).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{target} already holds {', '.join(existing)}; use --overwrite")
    if args.to == "hdf5":
        target.mkdir(parents=True, exist_ok=True)
        save_bilm(model, target / HDF5_OPTIONS_NAME, target / HDF5_WEIGHTS_NAME)
    else:
        dtype = torch.float16 if args.dtype == "float16" else torch.float32
        save_pretrained(model, target, dtype=dtype, metadata={"converted_from": str(args.source)})
    print(f"wrote {', '.join(str(target / name) for name in names)}")
    return 0

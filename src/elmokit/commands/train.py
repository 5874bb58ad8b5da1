"""`elmokit train --config train.toml [--resume]`: pre-train or fine-tune a biLM.

Multi-process: `torchrun --nproc_per_node N -m elmokit.cli train --config ...`.
"""

from __future__ import annotations

import argparse
import json

from elmokit.commands._common import device_argument, progress_wanted
from elmokit.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="pre-train or fine-tune a biLM from a TOML config")
    parser.add_argument(
        "--config", required=True, help="training config (TOML, or a run's train_config.json)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a folder that holds a run (removes its checkpoints and metrics)",
    )
    parser.add_argument("--device", default="cpu", type=device_argument, help="cpu, cuda, cuda:N")
    parser.add_argument("--output-dir", help="override output_dir of the config")
    parser.add_argument("--max-steps", type=int, help="override [optim] max_steps")
    parser.add_argument("--max-minutes", type=float, help="override [optim] max_minutes")
    parser.add_argument(
        "--no-progress",
        "--quiet",
        action="store_true",
        help="no progress bar (also off a terminal)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from elmokit.training.trainer import Trainer

    config = TrainConfig.from_file(args.config)
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.max_steps is not None:
        config.optim.max_steps = args.max_steps
    if args.max_minutes is not None:
        config.optim.max_minutes = args.max_minutes
    if not progress_wanted(args.no_progress):
        config.log.progress = False
    trainer = Trainer(config, device=args.device, resume=args.resume, overwrite=args.overwrite)
    summary = trainer.train()
    if trainer.context.is_main:
        print(json.dumps(summary, indent=2))
    return 130 if summary.get("stopped_by") == "signal" else 0

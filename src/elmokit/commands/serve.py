"""`elmokit serve`: an HTTP JSON service for ELMo vectors (elmokit.serve; needs
`pip install elmokit[serve]`)."""

from __future__ import annotations

import argparse
from typing import Any

from elmokit.commands._common import (
    CommandError,
    add_model_arguments,
    model_argument,
    positive_int,
)
from elmokit.modules.fast_inference import INFERENCE_MODES
from elmokit.tokenizers import TOKENIZERS


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("serve", help="serve ELMo vectors over HTTP (JSON)")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--precision", choices=INFERENCE_MODES, default="fp32")
    parser.add_argument("--tokenize", choices=TOKENIZERS, default="whitespace")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batch window")
    parser.add_argument("--max-batch-tokens", type=positive_int, default=4096)
    parser.add_argument("--max-request-tokens", type=positive_int, default=2048)
    parser.add_argument("--max-request-bytes", type=positive_int, default=1_000_000)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from elmokit.serve import ServeLimits, serve
    except ImportError as error:  # pragma: no cover - depends on the extras installed
        raise CommandError(
            f"elmokit serve needs FastAPI and uvicorn: pip install elmokit[serve] ({error})"
        ) from None
    from elmokit.embedder import Embedder

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = model_argument(args)
    embedder = Embedder(
        name,
        device=args.device,
        weights=args.weights,
        tokenize=args.tokenize,
        precision=args.precision,
        max_tokens_per_batch=args.max_batch_tokens,
    )
    limits = ServeLimits(
        max_wait_ms=args.max_wait_ms,
        max_batch_tokens=args.max_batch_tokens,
        max_request_tokens=args.max_request_tokens,
        max_request_bytes=args.max_request_bytes,
    )
    serve(embedder, args.host, args.port, limits, model_name=name)
    return 0

"""`elmokit embed INPUT OUTPUT`: ELMo features of a text file (one sentence per line) to HDF5,
and `elmokit embed-merge OUTPUT` for the shards of a multi-process run.

The output is the layout of the old `allennlp elmo` command (elmokit.io.features). The input is
streamed line by line; the file is written as OUTPUT.partial with periodic checkpoints and
renamed to OUTPUT when complete, so an interrupted run can be continued with --resume.

Several processes: under torchrun (or with RANK / WORLD_SIZE set by hand) rank r embeds the
lines with index % WORLD_SIZE == r into OUTPUT.rank{r}. Under torchrun, rank 0 merges the
shards into OUTPUT once every rank is done (gloo barrier); otherwise run `elmokit embed-merge`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from elmokit.commands._common import (
    CommandError,
    add_model_arguments,
    device_argument,
    model_argument,
    positive_int,
    progress_wanted,
)
from elmokit.embedder import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_SECONDS,
    Embedder,
    InputError,
    check_embed_paths,
    make_spec,
)
from elmokit.io.features import (
    POOLINGS,
    find_shards,
    merge_shards,
    parse_layers,
    parse_mix,
    partial_path,
)
from elmokit.modules.fast_inference import INFERENCE_MODES
from elmokit.tokenizers import TOKENIZERS

# A rank that finishes early waits this long at the final barrier for the slowest one.
MERGE_BARRIER_TIMEOUT = timedelta(hours=48)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="write ELMo features of a text file (one sentence per line) to HDF5",
        description="Embed every line of INPUT (whitespace-tokenised unless --tokenize moses) "
        "and write one float32 dataset per line, keyed by the 0-based line number, plus "
        "sentence_to_index, the layout of the old `allennlp elmo` command. Streams the input; "
        "writes OUTPUT.partial and renames it when done.",
    )
    parser.add_argument(
        "input", help="text file, one sentence per line (UTF-8; .gz read as gzip; - for stdin)"
    )
    parser.add_argument("output", help="HDF5 file to write")
    add_model_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--all",
        dest="output_format",
        action="store_const",
        const="all",
        help="all layers (L+1, T, D) per line (the default)",
    )
    output.add_argument(
        "--top",
        dest="output_format",
        action="store_const",
        const="top",
        help="the top layer (T, D)",
    )
    output.add_argument(
        "--average",
        dest="output_format",
        action="store_const",
        const="average",
        help="the mean of the layers (T, D)",
    )
    parser.add_argument(
        "--layers",
        help="comma-separated layers to keep (with --all) or average (--average), "
        "e.g. 0,2; also the layers --mix weighs",
    )
    parser.add_argument(
        "--mix",
        help="w0,w1,...[,gamma]: store gamma * sum softmax(w)_j * layer_j (T, D), "
        "a fixed ScalarMix",
    )
    parser.add_argument(
        "--pool",
        choices=POOLINGS,
        help="one vector per line (D,): pool the tokens' vectors of --average (the default "
        "then), --top or --mix; an empty line gives zeros",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        help="padded tokens per biLM call, the memory knob (default 4096); longer sentences "
        "are run in exact time chunks",
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="split lines longer than N tokens into independent pieces (each with its own "
        "<S> </S>), joined in the output; default: every line whole",
    )
    parser.add_argument("--tokenize", choices=TOKENIZERS, default="whitespace")
    parser.add_argument("--lang", default="en", help="language of the Moses tokeniser")
    parser.add_argument(
        "--precision",
        choices=INFERENCE_MODES,
        default="fp32",
        help="biLM arithmetic: fp32 (the default fast path: the reference numbers to ~1e-5, "
        "~3x faster on CPU), reference (the exact autograd path), bf16 or int8 (faster still, "
        "approximate); see benchmarks/README.md",
    )
    parser.add_argument(
        "--errors",
        choices=("strict", "replace"),
        default="strict",
        help="invalid UTF-8: stop with the line number (strict) or read it as U+FFFD",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse blank lines (default: warn and write an empty dataset to keep numbering)",
    )
    parser.add_argument("--resume", action="store_true", help="continue OUTPUT.partial")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=DEFAULT_CHECKPOINT_EVERY,
        help="lines between checkpoints (flush + recorded progress)",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=DEFAULT_CHECKPOINT_SECONDS,
        help="and at least this often (seconds): what an interruption can cost",
    )
    parser.add_argument("--keep-shards", action="store_true", help="after a merge, keep shards")
    allennlp = parser.add_argument_group(
        "allennlp elmo's flags (so its scripts run with `elmokit embed`; docs/migrating.md)"
    )
    allennlp.add_argument("--options-file", help="= --model OPTIONS.json")
    allennlp.add_argument("--weight-file", help="= --weights WEIGHTS.hdf5")
    allennlp.add_argument("--cuda-device", type=int, help="GPU index (= --device cuda:N), -1: CPU")
    allennlp.add_argument(
        "--use-sentence-keys", action="store_true", help="name each dataset by its sentence"
    )
    allennlp.add_argument(
        "--forget-sentences", action="store_true", help="no sentence_to_index dataset"
    )
    allennlp.add_argument("--vocab-path", help="accepted and ignored, as allennlp 0.9 did")
    allennlp.add_argument("--file-friendly-logging", action="store_true", help="accepted; no-op")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="report every checkpoint")
    parser.set_defaults(func=run)

    merge = subparsers.add_parser(
        "embed-merge",
        help="merge the OUTPUT.rank* files of a multi-process `elmokit embed` into OUTPUT",
    )
    merge.add_argument("output", help="the OUTPUT given to `elmokit embed`")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    merge.add_argument("--keep-shards", action="store_true", help="keep OUTPUT.rank* files")
    merge.set_defaults(func=run_merge)


def _distributed_env() -> tuple[int, int]:
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as error:
        raise CommandError(f"RANK / WORLD_SIZE must be integers: {error}") from None
    if world > 1 and not 0 <= rank < world:
        raise CommandError(f"RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world})")
    return (rank, world) if world > 1 else (0, 1)


class _Terminated(SystemExit):
    """SIGTERM, turned into an exception so that the progress so far is recorded."""


class _StopSignals:
    """Ctrl-C and SIGTERM (torchrun stops the other ranks with SIGTERM when one fails): leave
    through Python, so that the progress so far is recorded and --resume can continue it.

    While lines are being embedded the handler only records the signal and embed_file stops
    at the next line written (`check`, at most one batch later). Raising from the handler
    there is unsafe: Python drops an exception raised while it runs a finalizer ("Exception
    ignored in ...", seen in CI) and the run went on. Before that, or on a second signal (a
    read blocked on stdin, say), the handler raises at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        again = self.received is not None
        self.received = signum
        if again or not self.deferred:
            self.check()

    def check(self) -> None:
        if self.received == signal.SIGTERM:
            raise _Terminated(128 + signal.SIGTERM)
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt


def _apply_allennlp_flags(args: argparse.Namespace) -> None:
    if args.options_file:
        args.model = args.options_file
    if args.weight_file:
        args.weights = args.weight_file
    if args.cuda_device is not None:
        device = "cpu" if args.cuda_device < 0 else f"cuda:{args.cuda_device}"
        try:
            args.device = device_argument(device)
        except argparse.ArgumentTypeError as error:
            raise CommandError(f"--cuda-device {args.cuda_device}: {error}") from None


def run(args: argparse.Namespace) -> int:
    _apply_allennlp_flags(args)
    rank, world = _distributed_env()
    layers = parse_layers(args.layers) if args.layers else None
    # Paths first: a typo should not cost a model load.
    target = check_embed_paths(args.input, args.output, rank, world, args.resume, args.overwrite)
    model_name = model_argument(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from elmokit.devices import rank_device

    embedder = Embedder(
        model_name,
        device=rank_device(args.device) if world > 1 else args.device,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_batch_tokens,
        tokenize=args.tokenize,
        lang=args.lang,
        weights=args.weights,
        max_sentence_tokens=args.max_tokens,
    )
    embedder.model.optimize_for_inference(args.precision)
    mix, gamma = None, 1.0
    if args.mix:
        n_mixed = len(layers) if layers is not None else embedder.n_layers
        mix, gamma = parse_mix(args.mix, n_mixed)
    make_spec(args.output_format, layers, mix, gamma, args.pool).check_layers(embedder.n_layers)

    def say(message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def checkpointed(lines: int) -> None:
        if args.verbose:
            say(f"checkpoint: {lines} lines done")

    stop = _StopSignals()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.deferred = True
        written = embedder.embed_file(
            args.input,
            args.output,
            args.output_format,
            layers=layers,
            mix=mix,
            gamma=gamma,
            pooling=args.pool,
            resume=args.resume,
            overwrite=args.overwrite,
            strict=args.strict,
            errors=args.errors,
            checkpoint_every=args.checkpoint_every,
            checkpoint_seconds=args.checkpoint_seconds,
            sentence_keys=args.use_sentence_keys,
            sentence_index=not args.forget_sentences,
            rank=rank,
            world_size=world,
            progress=progress_wanted(args.quiet),
            model_name=model_name,
            on_warning=lambda message: say(f"warning: {message}"),
            on_checkpoint=checkpointed,
            check_stop=stop.check,
        )
    except InputError as error:
        partial = partial_path(target)
        kept = (
            f"; every line before it is kept in {partial}: fix the input and rerun with "
            "--resume to continue from that line (or --overwrite to start over)"
            if partial.exists()
            else ""
        )
        raise CommandError(f"{error}{kept}") from None
    except (KeyboardInterrupt, _Terminated) as stop:
        how = "terminated (SIGTERM)" if isinstance(stop, _Terminated) else "interrupted"
        print(
            f"{how}: every line written so far is kept in {partial_path(target)}; rerun the "
            "same command with --resume to continue",
            file=sys.stderr,
        )
        return 143 if isinstance(stop, _Terminated) else 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"wrote {written}")
    if world > 1:
        return _after_shard(args, rank, world)
    return 0


def _after_shard(args: argparse.Namespace, rank: int, world: int) -> int:
    if "MASTER_ADDR" not in os.environ:
        if rank == 0:
            print(f"when every rank is done: elmokit embed-merge {args.output}")
        return 0
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=MERGE_BARRIER_TIMEOUT)
    try:
        dist.barrier()  # every shard is renamed from .partial before its rank gets here
        if rank == 0:
            _merge(Path(args.output), args.overwrite, args.keep_shards)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def _merge(output: Path, overwrite: bool, keep_shards: bool) -> None:
    shards = find_shards(output)
    merge_shards(output, shards, overwrite=overwrite)
    if not keep_shards:
        for shard in shards:
            shard.unlink()
    print(f"merged {len(shards)} shards into {output}")


def run_merge(args: argparse.Namespace) -> int:
    _merge(Path(args.output), args.overwrite, args.keep_shards)
    return 0

"""Where a biLM training step's time goes, per part, against the matrix-multiply peak.

Builds the training step of `inference_speed.py` (BiLanguageModel forward + backward, no
optimizer step, real PTB words, batch x unroll of the recipe, dropout on) for a recipe's
[model] and vocabulary size, and times, each as forward + backward on the same batch:

- the whole step;
- the token encoder (char CNN, highways, projection) on both streams' tokens;
- the LSTM stack (both directions, both layers);
- the softmax and cross-entropy of both streams;
- the rest (the whole step minus the three parts: dropout, masks, reshapes).

For each part: milliseconds, share of the step, nominal GFLOP/s (3x the forward FLOPs, as
inference_speed.py counts them) and the fraction of the engine's 2048^3 peak measured in the
same run (oneDNN bf16 under bf16 autocast, MKL fp32 otherwise). `--ops N` adds the N most
expensive operators of one step (torch.profiler, self time).

    .venv/bin/python benchmarks/training_profile.py [--recipe recipes/ptb/train.toml]
        [--vocab-size 10000] [--precision bf16|fp32] [--threads 2] [--batch-size 64]
        [--repeats 5] [--ops 15]
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import torch
from inference_speed import (
    DATA,
    PTB_RECIPE,
    encoder_flops,
    gemm_peaks,
    lstm_direction_flops,
)
from inference_speed import _median_seconds as median_seconds

from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.config import BiLMConfig
from elmokit.initialization import init_bilm_weights
from elmokit.training.data import DirectionBatch, LMBatch
from elmokit.training.language_model import BiLanguageModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=PTB_RECIPE)
    parser.add_argument("--vocab-size", type=int, default=10000, help="PTB's: 10,000")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="rows per stream (default: the recipe's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ops", type=int, default=0, help="also list the N costliest ops")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    recipe = tomllib.loads(args.recipe.read_text())
    config = BiLMConfig(**recipe["model"])
    batch_size = args.batch_size or recipe["data"]["batch_size"]
    steps = recipe["data"]["unroll_steps"]
    torch.manual_seed(0)
    bilm = init_bilm_weights(BiLM(config), seed=0)
    model = BiLanguageModel(bilm, args.vocab_size, recipe["optim"]["dropout"]).train()
    words = (DATA / "ptb_mikolov" / "ptb.valid.txt").read_text().split()
    rows = [words[i * steps : (i + 1) * steps] for i in range(batch_size)]
    forward_ids = batch_to_ids(rows)
    backward_ids = batch_to_ids([row[::-1] for row in rows])
    targets = torch.randint(0, args.vocab_size, (batch_size, steps))
    mask = torch.ones(batch_size, steps, dtype=torch.bool)
    batch = LMBatch(
        DirectionBatch(targets, forward_ids, targets, mask),
        DirectionBatch(targets, backward_ids, targets, mask),
    )
    bf16 = args.precision == "bf16"

    def autocast() -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def whole_step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast():
            loss = model(batch, None).loss
        loss.backward()

    both_streams = torch.stack([forward_ids, backward_ids])

    def encoder() -> None:
        model.zero_grad(set_to_none=True)
        with autocast():
            tokens = bilm.encode_tokens(both_streams)
        tokens.float().sum().backward()

    with torch.no_grad(), autocast():
        lstm_inputs = bilm.encode_tokens(both_streams).float()
    lengths = torch.full((batch_size,), steps, dtype=torch.long)

    def lstm() -> None:
        model.zero_grad(set_to_none=True)
        inputs = lstm_inputs.detach().requires_grad_()
        with autocast():
            outputs, _ = bilm.lstm(inputs, lengths)
        outputs[-1].float().sum().backward()

    hidden = torch.randn(2, batch_size * steps, config.projection_dim)
    flat_targets = targets.reshape(-1)

    def softmax() -> None:
        model.zero_grad(set_to_none=True)
        inputs = hidden.detach().requires_grad_()
        with autocast():
            nll = model.softmax.full_nll(inputs[0], flat_targets).sum()
            nll = nll + model.softmax.full_nll(inputs[1], flat_targets).sum()
        nll.backward()

    peaks = gemm_peaks(2048, 3)
    peak_name = "onednn_bf16" if bf16 else "mkl_fp32"
    peak = peaks.get(peak_name, float("nan"))
    positions = 2 * batch_size * steps  # both streams; each stream runs one LSTM direction
    flops = {  # 2 FLOPs per multiply-add, backward counted as twice the forward
        "token encoder": 3 * positions * encoder_flops(config),
        "LSTM stack": 3 * positions * lstm_direction_flops(config),
        "softmax + cross-entropy": 3 * positions * 2 * config.projection_dim * args.vocab_size,
    }
    seconds = {
        "whole step": median_seconds(whole_step, args.repeats),
        "token encoder": median_seconds(encoder, args.repeats),
        "LSTM stack": median_seconds(lstm, args.repeats),
        "softmax + cross-entropy": median_seconds(softmax, args.repeats),
    }
    parts = ("token encoder", "LSTM stack", "softmax + cross-entropy")
    seconds["rest"] = max(seconds["whole step"] - sum(seconds[p] for p in parts), 0.0)
    flops["whole step"] = sum(flops[p] for p in parts)

    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.precision}, "
        f"{args.recipe} [model], vocabulary {args.vocab_size:,}, batch {batch_size} x {steps} "
        f"({batch_size * steps:,} tokens per stream); {peak_name} peak {peak:,.0f} GFLOP/s"
    )
    print(
        f"whole step: {seconds['whole step']:.3f} s, "
        f"{batch_size * steps / seconds['whole step']:,.0f} tokens/s\n"
    )
    print("| part | ms | share | GFLOP/s | % of peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("whole step", *parts, "rest"):
        ms = 1000 * seconds[name]
        share = seconds[name] / seconds["whole step"]
        if name in flops:
            rate = flops[name] / seconds[name] / 1e9
            rate_text, fraction = f"{rate:,.0f}", f"{100 * rate / peak:.0f}%"
        else:
            rate_text, fraction = "-", "-"
        print(f"| {name} | {ms:,.0f} | {100 * share:.0f}% | {rate_text} | {fraction} |")

    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            whole_step()
        print()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))


if __name__ == "__main__":
    main()

"""The GPU table of issue #13: inference and training speed, peak device memory and the error
against the CPU reference, on one device (`--device cuda`, or `--device cpu` to check the
script itself on a machine without a GPU). Run by benchmarks/gpu_check.sh.

Rows:
- inference: random models of the published small and original shapes (`random_bilm`, seed 0),
  the first `--sentences` WikiText-2 valid sentences of 10-40 tokens, reset state, for each
  precision (fp32 with TF32 off, and bf16) and batch size: tokens/s (after a warm-up pass),
  peak device memory, and the max |difference| of every layer against the CPU "reference" path
  (the exact autograd code, float32) on the same sentences;
- training: the PTB recipe's [model] (recipes/ptb/train.toml), 10k-word full softmax, batch x
  unroll of the recipe, forward + backward + Adam step, under bf16 autocast: tokens/s.

    python benchmarks/gpu_check.py --device cuda --out logs/ [--quick]

Writes `gpu_check.json` and `gpu_check.md` (the table) under --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PTB_RECIPE = ROOT / "recipes" / "ptb" / "train.toml"
DATA = ROOT.parent / "shared" / "data"  # --data replaces it (a GPU machine has no ../shared)


def load_sentences(n: int) -> list[list[str]]:
    path = DATA / "wikitext2" / "wiki.valid.tokens"
    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if 10 <= len(tokens) <= 40 and not line.lstrip().startswith("="):
            sentences.append(tokens)
        if len(sentences) == n:
            break
    return sentences


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def inference_rows(
    shape: str, sentences: list[list[str]], batch_sizes: list[int], device: torch.device
) -> list[dict[str, Any]]:
    from elmokit import batch_to_ids
    from elmokit.config import BiLMConfig
    from elmokit.initialization import random_bilm

    cpu_model = random_bilm(BiLMConfig.published(shape), seed=0).eval()
    cpu_model.optimize_for_inference("reference")
    with torch.no_grad():
        reference = [
            cpu_model(batch_to_ids(sentences[start : start + 64])).layers
            for start in range(0, len(sentences), 64)
        ]
    expected = [layers[row] for layers in reference for row in range(layers.shape[0])]
    model = random_bilm(BiLMConfig.published(shape), seed=0).to(device).eval()
    n_tokens = sum(len(sentence) for sentence in sentences)
    rows = []
    for precision in ("fp32", "bf16"):
        model.optimize_for_inference(precision)  # type: ignore[arg-type]
        for batch_size in batch_sizes:
            batches = [
                batch_to_ids(sentences[start : start + batch_size]).to(device)
                for start in range(0, len(sentences), batch_size)
            ]
            with torch.no_grad():
                for batch in batches:  # warm-up: kernels, prepared weights
                    model(batch)
                synchronize(device)
                reset_peak(device)
                start = time.perf_counter()
                outputs = [model(batch).layers for batch in batches]
                synchronize(device)
                seconds = time.perf_counter() - start
            got = [layers[row].float().cpu() for layers in outputs for row in range(len(layers))]
            error = max(
                float((g[:, : len(s)] - e[:, : len(s)]).abs().max())
                for g, e, s in zip(got, expected, sentences, strict=True)
            )
            rows.append(
                {
                    "shape": shape,
                    "precision": precision,
                    "batch_size": batch_size,
                    "tokens_per_s": n_tokens / seconds,
                    "peak_mb": peak_mb(device),
                    "max_abs_error_vs_cpu_reference": error,
                }
            )
    return rows


def training_row(device: torch.device, steps: int) -> dict[str, Any]:
    from elmokit import batch_to_ids
    from elmokit.bilm import BiLM
    from elmokit.config import BiLMConfig
    from elmokit.initialization import init_bilm_weights
    from elmokit.training.data import DirectionBatch, LMBatch
    from elmokit.training.language_model import BiLanguageModel

    recipe = tomllib.loads(PTB_RECIPE.read_text())
    config = BiLMConfig(**recipe["model"])
    batch_size, unroll = recipe["data"]["batch_size"], recipe["data"]["unroll_steps"]
    vocab_size = 10000
    torch.manual_seed(0)
    bilm = init_bilm_weights(BiLM(config), seed=0)
    model = BiLanguageModel(bilm, vocab_size, recipe["optim"]["dropout"]).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    words = (DATA / "ptb_mikolov" / "ptb.valid.txt").read_text().split()
    rows = [words[i * unroll : (i + 1) * unroll] for i in range(batch_size)]
    targets = torch.randint(0, vocab_size, (batch_size, unroll), device=device)
    mask = torch.ones(batch_size, unroll, dtype=torch.bool, device=device)

    def direction(ids: torch.Tensor) -> DirectionBatch:
        return DirectionBatch(token_ids=targets, char_ids=ids.to(device), target_ids=targets,
                              mask=mask)  # fmt: skip

    batch = LMBatch(direction(batch_to_ids(rows)), direction(batch_to_ids([r[::-1] for r in rows])))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(batch, None).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step()  # warm-up
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    return {
        "batch": f"{batch_size} x {unroll}",
        "tokens_per_s": batch_size * unroll / seconds,
        "seconds_per_step": seconds,
        "peak_mb": peak_mb(device),
        "loss_first_last": [losses[0], losses[-1]],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"device: {result['device']}; torch {result['torch']}; TF32 off; "
        f"{result['sentences']} sentences, {result['tokens']} tokens",
        "",
        "| shape | precision | batch | tokens/s | peak MB | max abs err vs CPU reference |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["inference"]:
        peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:,.0f}"
        lines.append(
            f"| {row['shape']} | {row['precision']} | {row['batch_size']} | "
            f"{row['tokens_per_s']:,.0f} | {peak} | {row['max_abs_error_vs_cpu_reference']:.2e} |"
        )
    train = result["training"]
    peak = "-" if train["peak_mb"] is None else f"{train['peak_mb']:,.0f}"
    lines += [
        "",
        "| training (PTB recipe shape, bf16 autocast, Adam) | batch | tokens/s | s/step "
        "| peak MB |",
        "| --- | --- | ---: | ---: | ---: |",
        f"| forward + backward + step | {train['batch']} | {train['tokens_per_s']:,.0f} | "
        f"{train['seconds_per_step']:.3f} | {peak} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-sizes", default="64,256,512")
    parser.add_argument("--shapes", default="small,original")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small shape, 64 sentences")
    parser.add_argument("--data", type=Path, help="folder with wikitext2/ and ptb_mikolov/")
    args = parser.parse_args()
    global DATA
    if args.data is not None:
        DATA = args.data
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device here: run with --device cpu to check the script")
        # fp32 means fp32: TF32 would make the products ~1e-3 off the CPU reference.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    shapes, batch_sizes = args.shapes.split(","), [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        shapes, batch_sizes, args.sentences, args.train_steps = ["small"], [64], 64, 2
    sentences = load_sentences(args.sentences)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "sentences": len(sentences),
        "tokens": sum(len(s) for s in sentences),
        "inference": [],
    }
    for shape in shapes:
        result["inference"] += inference_rows(shape, sentences, batch_sizes, device)
        print(f"{shape}: done", flush=True)
    result["training"] = training_row(device, args.train_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()

"""biLM inference speed, memory and accuracy per inference mode; training throughput.

For each published shape (random weights, `random_bilm(shape, seed=0)`) and each inference
mode of `BiLM.optimize_for_inference` it embeds the same sentences (default: the first 1,000
sentences of 10-40 tokens of WikiText-2 valid, in corpus order, batch 64, reset state policy,
under torch.no_grad) and reports:

- tokens/s: real tokens (no <S>/</S>) per second, median of --repeats passes over all
  sentences; the first pass (which also prepares the weights) is not timed;
- GFLOP/s and % of peak: nominal FLOPs (2 per multiply-add, every position including
  <S>/</S>, the char CNN over all 50 positions of every token occurrence) over time, against
  the 2048^3 product rate of the engine the mode uses, measured here: MKL for "reference"
  (torch.mm), oneDNN prepacked for fp32 and bf16, FBGEMM for int8. The fast path encodes
  each distinct token once and skips padding windows, so it does less than the nominal work;
- peak RSS: each (shape, mode) runs in its own subprocess. "peak" is the process's peak RSS
  (VmHWM) while embedding, "delta" that minus the RSS before the first batch (model built,
  prepared weights not yet): what embedding costs on top of the loaded model;
- max |error| and per-token cosine (min / mean over every token of every layer) against
  the "reference" mode (the autograd code path, the exact path).

Training: tokens/s of `BiLanguageModel` forward + backward (no optimizer step) on the PTB
recipe's [model] (10k-word full softmax, dropout on), batch 64 x unroll 25, in fp32 (MKL)
and under bf16 autocast (oneDNN bf16), each as a fraction of its engine's peak counting 3x the
forward FLOPs.

Where a CUDA device is present, each shape is also embedded on it in the reference, fp32 and
bf16 modes (tokens/s, peak device memory, max error against the reference on the device).
This machine has no GPU, so that code has not been run here.

    .venv/bin/python benchmarks/inference_speed.py [--quick] [--threads 2]
        [--configs small,original] [--modes reference,fp32,bf16,int8] [--sentences 1000]
        [--repeats 3] [--no-train] [--float64-sentences 128]

--float64-sentences N also runs the reference path in float64 on the first N sentences and
reports how far the reference and fp32 paths are from it (the reference's own rounding).
--quick (CI smoke, < 60 s): the small shape, 128 sentences, one timed pass, no training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TEXTS = [DATA / "wikitext2" / "wiki.valid.tokens", DATA / "gutenberg_nltk" / "austen-emma.txt"]
PTB_RECIPE = ROOT / "recipes" / "ptb" / "train.toml"
SENTENCE_END = {".", "?", "!"}


# -- data and FLOPs ------------------------------------------------------------------------


def load_sentences(n: int, shortest: int = 10, longest: int = 40) -> list[list[str]]:
    """The first n sentences of shortest..longest tokens: lines split after . ? !"""
    path = next((p for p in TEXTS if p.exists()), None)
    if path is None:
        raise SystemExit(f"no text found (looked for {', '.join(map(str, TEXTS))})")
    sentences: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):  # WikiText headings
            continue
        current: list[str] = []
        for token in line.split():
            current.append(token)
            if token in SENTENCE_END:
                if shortest <= len(current) <= longest:
                    sentences.append(current)
                current = []
        if len(sentences) >= n:
            break
    return sentences[:n]


def encoder_flops(config: Any) -> float:
    """Char CNN (all 50 positions) + highways + projection, per token position."""
    cnn = sum(
        2 * config.char_embedding_dim * width * count * (50 - width + 1)
        for width, count in config.filters
    )
    highway = config.n_highway * 2 * 2 * config.n_filters**2
    projection = (
        2 * config.n_filters * config.projection_dim
        if config.n_filters != config.projection_dim
        else 0
    )
    return float(cnn + highway + projection)


def lstm_direction_flops(config: Any) -> float:
    """One direction of the LSTM stack per position: gates (input + recurrent) + projection."""
    hidden, proj = config.lstm_dim, config.projection_dim
    return float(config.n_layers * 2 * ((proj + proj) * 4 * hidden + hidden * proj))


def inference_flops_per_token(config: Any, sentences: list[list[str]]) -> float:
    real = sum(len(s) for s in sentences)
    positions = real + 2 * len(sentences)
    per_position = encoder_flops(config) + 2 * lstm_direction_flops(config)
    return per_position * positions / real


# -- GEMM peaks ----------------------------------------------------------------------------


def _median_seconds(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_peaks(size: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a size^3 product per engine."""
    import warnings

    x = torch.randn(size, size)
    w = torch.randn(size, size) / size**0.5
    flops = 2.0 * size**3
    peaks = {"mkl_fp32": flops / _median_seconds(lambda: x @ w, repeats) / 1e9}
    linear = torch.ops.mkldnn._linear_pointwise
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        peaks["onednn_fp32"] = (
            flops / _median_seconds(lambda: linear(x, packed, None, "none", [], ""), repeats) / 1e9
        )
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            xb = x.bfloat16()
            packed_bf16 = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16())
            peaks["onednn_bf16"] = (
                flops
                / _median_seconds(lambda: linear(xb, packed_bf16, None, "none", [], ""), repeats)
                / 1e9
            )
    scale = (w.abs().amax(dim=1) / 127).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qw = torch.quantize_per_channel(
            w, scale, torch.zeros(size, dtype=torch.long), 0, torch.qint8
        )
        packed_int8 = torch.ops.quantized.linear_prepack(qw, None)
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    peaks["fbgemm_int8"] = (
        flops
        / _median_seconds(
            lambda: torch.ops.quantized.linear_dynamic(x, packed_int8, not vnni), repeats
        )
        / 1e9
    )
    return peaks


PEAK_OF_MODE = {
    "reference": "mkl_fp32",
    "fp32": "onednn_fp32",
    "bf16": "onednn_bf16",
    "int8": "fbgemm_int8",
}


# -- workers (one subprocess per measurement) ------------------------------------------------


def _status_mb(key: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_inference(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    from elmokit import batch_to_ids
    from elmokit.initialization import random_bilm

    torch.set_num_threads(args.threads)
    sentences = load_sentences(args.sentences)
    batches = [
        batch_to_ids(sentences[i : i + args.batch_size])
        for i in range(0, len(sentences), args.batch_size)
    ]
    n_tokens = sum(len(s) for s in sentences)
    if args.mode == "float64":  # the reference path in float64, for the error of fp32 itself
        sentences = sentences[: args.float64_sentences]
        batches = batches[: -(-len(sentences) // args.batch_size)]
        n_tokens = sum(len(s) for s in sentences)
        model = random_bilm(args.config, seed=0).double().eval()
        model.optimize_for_inference("reference")
    else:
        model = random_bilm(args.config, seed=0).eval().optimize_for_inference(args.mode)
    gc.collect()
    rss_before = _status_mb("VmRSS") or _max_rss_mb()
    hwm_reset = _reset_peak_rss()
    with torch.no_grad():
        start = time.perf_counter()
        if args.mode != "float64":
            for batch in batches:  # untimed: oneDNN primitives, prepared weights
                model(batch)
        first_pass = time.perf_counter() - start
        rates = []
        out = open(args.out, "wb") if args.out else None  # noqa: SIM115
        repeats = 1 if args.mode == "float64" else args.repeats
        for repeat in range(repeats):
            last = repeat == repeats - 1
            start = time.perf_counter()
            for batch in batches:
                output = model(batch)
                if last and out is not None:
                    # Token vectors of every layer, [n_real_tokens, L + 1, 2P], in order.
                    vectors = output.layers.transpose(1, 2)[output.mask]
                    out.write(vectors.float().contiguous().numpy().tobytes())
            elapsed = time.perf_counter() - start
            rates.append(n_tokens / elapsed)
        if out is not None:
            out.close()
    peak = _status_mb("VmHWM") if hwm_reset else _max_rss_mb()
    return {
        "tokens": n_tokens,
        "rates": rates,
        "first_pass_s": first_pass,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "peak_method": "VmHWM reset before embedding" if hwm_reset else "ru_maxrss (whole run)",
        "flops_per_token": inference_flops_per_token(model.config, sentences),
        "dims": [model.config.n_layers + 1, model.config.output_dim],
    }


def worker_training(args: argparse.Namespace) -> dict[str, Any]:
    from elmokit import batch_to_ids
    from elmokit.bilm import BiLM
    from elmokit.config import BiLMConfig
    from elmokit.initialization import init_bilm_weights
    from elmokit.training.data import DirectionBatch, LMBatch
    from elmokit.training.language_model import BiLanguageModel

    torch.set_num_threads(args.threads)
    recipe = tomllib.loads(PTB_RECIPE.read_text())
    config = BiLMConfig(**recipe["model"])
    batch_size = recipe["data"]["batch_size"]
    steps = recipe["data"]["unroll_steps"]
    vocab_size = 10000  # PTB (Mikolov) vocabulary
    torch.manual_seed(0)
    model = BiLanguageModel(
        init_bilm_weights(BiLM(config), seed=0), vocab_size, recipe["optim"]["dropout"]
    )
    model.train()
    # Real words in the real order (char ids matter: distinct tokens are encoded once).
    ptb = (DATA / "ptb_mikolov" / "ptb.valid.txt").read_text().split()
    words = [ptb[i * steps : (i + 1) * steps] for i in range(batch_size)]
    char_ids = batch_to_ids(words)
    reversed_ids = batch_to_ids([w[::-1] for w in words])
    targets = torch.randint(0, vocab_size, (batch_size, steps))
    mask = torch.ones(batch_size, steps, dtype=torch.bool)

    def direction(ids: torch.Tensor) -> DirectionBatch:
        return DirectionBatch(token_ids=targets, char_ids=ids, target_ids=targets, mask=mask)

    batch = LMBatch(direction(char_ids), direction(reversed_ids))

    bf16 = args.mode == "bf16"

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch, None).loss
        loss.backward()

    seconds = _median_seconds(step, args.repeats)
    per_position = encoder_flops(config) + lstm_direction_flops(config)
    per_position += 2 * config.projection_dim * vocab_size  # softmax logits
    forward_flops = 2 * batch_size * steps * per_position  # two streams
    return {
        "batch": f"{batch_size} x {steps}",
        "tokens_per_s": batch_size * steps / seconds,
        "seconds_per_step": seconds,
        "train_gflops": 3 * forward_flops / seconds / 1e9,
    }


def worker_cuda(args: argparse.Namespace) -> dict[str, Any]:
    """The same embedding pass on a CUDA device: tokens/s, peak device memory, and the max
    error against the reference mode on the same device (the fast paths fall back to plain
    products there; bf16 uses the GPU's bf16 kernels)."""
    from elmokit import batch_to_ids
    from elmokit.initialization import random_bilm

    device = torch.device("cuda")
    sentences = load_sentences(args.sentences)
    batches = [
        batch_to_ids(sentences[i : i + args.batch_size]).to(device)
        for i in range(0, len(sentences), args.batch_size)
    ]
    n_tokens = sum(len(s) for s in sentences)
    model = random_bilm(args.config, seed=0).to(device).eval()

    def run(mode: str) -> tuple[float, list[torch.Tensor]]:
        model.optimize_for_inference(mode)
        outputs = []
        with torch.no_grad():
            for batch in batches:  # warm-up: kernels, prepared weights
                model(batch)
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            for batch in batches:
                output = model(batch)
                outputs.append(output.layers.transpose(1, 2)[output.mask])
            torch.cuda.synchronize(device)
        return n_tokens / (time.perf_counter() - start), outputs

    rows = {}
    _, exact = run("reference")
    for mode in ("reference", "fp32", "bf16"):
        torch.cuda.reset_peak_memory_stats(device)
        rate, outputs = run(mode)
        error = max(float((a - b).abs().max()) for a, b in zip(outputs, exact, strict=True))
        rows[mode] = {
            "tokens_per_s": rate,
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "max_abs_error": error,
        }
    return {"device": torch.cuda.get_device_name(device), "rows": rows}


def worker_peaks(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    return gemm_peaks(args.gemm_size, args.repeats + 2)


def run_worker(kind: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--threads",
        str(args.threads),
        "--sentences",
        str(args.sentences),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
        "--gemm-size",
        str(args.gemm_size),
    ]
    command += ["--float64-sentences", str(args.float64_sentences)]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"worker {kind} {extra} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- comparison --------------------------------------------------------------------------------


def compare(path: Path, reference: Path, dims: list[int]) -> dict[str, float]:
    """Max |error| and per-token cosine over every (token, layer) vector."""
    width = dims[1]
    ours = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, width)
    theirs = np.memmap(reference, dtype=np.float32, mode="r").reshape(-1, width)
    rows = min(ours.shape[0], theirs.shape[0])  # a float64 run covers the first sentences
    worst, cos_min, cos_sum, count, above = 0.0, 1.0, 0.0, 0, 0
    for start in range(0, rows, 65536):
        end = min(rows, start + 65536)
        a = np.asarray(ours[start:end], dtype=np.float64)
        b = np.asarray(theirs[start:end], dtype=np.float64)
        error = np.abs(a - b)
        worst = max(worst, float(error.max()))
        above += int((error > 1e-5).sum())
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = (a * b).sum(axis=1) / np.maximum(norms, 1e-30)
        cos_min = min(cos_min, float(cos.min()))
        cos_sum += float(cos.sum())
        count += len(cos)
    return {
        "max_abs_error": worst,
        "values_above_1e-5": above,
        "values": rows * width,
        "cos_min": cos_min,
        "cos_mean": cos_sum / count,
    }


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 60 s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default="small,original")
    parser.add_argument("--modes", default="reference,fp32,bf16,int8")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument(
        "--float64-sentences",
        type=int,
        default=0,
        help="also run the reference path in float64 on this many sentences and report the "
        "error of the reference and fp32 paths against it",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    # internal: one measurement in this process
    parser.add_argument("--worker", choices=["inference", "training", "peaks", "cuda"])
    parser.add_argument("--config")
    parser.add_argument("--mode")
    parser.add_argument("--out")
    args = parser.parse_args()

    if args.worker:
        work = {
            "inference": worker_inference,
            "training": worker_training,
            "peaks": worker_peaks,
            "cuda": worker_cuda,
        }
        print(json.dumps(work[args.worker](args)))
        return

    if args.quick:
        args.configs, args.sentences, args.repeats, args.no_train = "small", 128, 1, True
    configs = args.configs.split(",")
    modes = args.modes.split(",")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f}; {args.sentences} sentences, batch {args.batch_size}, "
        f"median of {args.repeats}",
        flush=True,
    )
    peaks = run_worker("peaks", args)
    print(
        f"GEMM peak ({args.gemm_size}^3): "
        + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in peaks.items()),
        flush=True,
    )
    results: dict[str, Any] = {"peaks": peaks, "rows": []}
    float64_notes: list[str] = []
    header = (
        "| config | mode | tokens/s | GFLOP/s | % of peak | peak RSS MB (delta) "
        "| max abs err | cos min / mean |"
    )
    print()
    print(header)
    print("|" + "---|" * 8)
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            outputs: dict[str, Path] = {}
            for mode in modes:
                out = Path(tmp) / f"{config}-{mode}.f32"
                row = run_worker("inference", args, config=config, mode=mode, out=out)
                outputs[mode] = out
                rate = statistics.median(row["rates"])
                gflops = rate * row["flops_per_token"] / 1e9
                peak = peaks.get(PEAK_OF_MODE[mode], float("nan"))
                if mode != "reference" and "reference" in outputs:
                    row.update(compare(out, outputs["reference"], row["dims"]))
                    error = f"{row['max_abs_error']:.2e}"
                    if mode == "fp32" and row["values_above_1e-5"]:
                        error += f" ({row['values_above_1e-5']} of {row['values']:.1e} > 1e-5)"
                    cosine = f"{row['cos_min']:.6f} / {row['cos_mean']:.6f}"
                else:
                    error, cosine = "(exact path)" if mode == "reference" else "-", "-"
                row.update(config=config, mode=mode, tokens_per_s=rate, gflops=gflops)
                results["rows"].append(row)
                delta = row["peak_rss_mb"] - row["rss_before_mb"]
                print(
                    f"| {config} | {mode} | {rate:,.0f} | {gflops:.0f} | "
                    f"{100 * gflops / peak:.0f}% ({PEAK_OF_MODE[mode]}) | "
                    f"{row['peak_rss_mb']:,.0f} (+{delta:,.0f}) | {error} | {cosine} |",
                    flush=True,
                )
            if args.float64_sentences > 0:
                exact = Path(tmp) / f"{config}-float64.f32"
                run_worker("inference", args, config=config, mode="float64", out=exact)
                for mode in ("reference", "fp32"):
                    if mode in outputs:
                        versus = compare(outputs[mode], exact, row["dims"])
                        results.setdefault("float64", {})[f"{config}-{mode}"] = versus
                        float64_notes.append(
                            f"{config} {mode} vs float64 ({args.float64_sentences} sentences): "
                            f"max abs error {versus['max_abs_error']:.2e}"
                        )
    for note in float64_notes:
        print(note)
    if torch.cuda.is_available():  # the same pass on the GPU, where there is one
        print("\n| config | device | mode | tokens/s | peak device MB | max abs err vs reference |")
        print("|" + "---|" * 6)
        for config in configs:
            cuda = run_worker("cuda", args, config=config)
            results.setdefault("cuda", {})[config] = cuda
            for mode, row in cuda["rows"].items():
                print(
                    f"| {config} | {cuda['device']} | {mode} | {row['tokens_per_s']:,.0f} | "
                    f"{row['peak_mb']:,.0f} | {row['max_abs_error']:.2e} |",
                    flush=True,
                )
    else:
        print("\nno CUDA device: GPU rows skipped")
    if not args.no_train:
        print()
        # fp32 autograd runs on MKL; under bf16 autocast the products go to oneDNN's bf16 kernels.
        for precision, peak_name in (("fp32", "mkl_fp32"), ("bf16", "onednn_bf16")):
            train = run_worker("training", args, mode=precision)
            results[f"training_{precision}"] = train
            fraction = train["train_gflops"] / peaks.get(peak_name, float("nan"))
            print(
                f"training {precision} (PTB recipe model, batch {train['batch']}, forward + "
                f"backward): {train['tokens_per_s']:,.0f} tokens/s, "
                f"{train['seconds_per_step']:.2f} s/step, {train['train_gflops']:.0f} GFLOP/s = "
                f"{100 * fraction:.0f}% of the {peak_name} peak (3x forward FLOPs)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

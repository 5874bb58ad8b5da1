"""Peak memory of `elmokit embed --top` against input size: is it flat?

Runs `elmokit embed` in a fresh subprocess per input and reads that child's peak RSS from
os.wait4 (ru_maxrss of exactly that process, not the maximum over all children).

Inputs are real text: lines of the PTB training set (42,068 distinct lines), cycled to reach
100k lines. The model is the tiny reference fixture biLM (2P = 32): with it the run is cheap
enough for 100k lines on a shared CPU and what it measures is the pipeline (reading,
windows, HDF5 writing, sentence_to_index), which is what could grow with the input. The model's
own working set is constant per batch; `--small-model` adds rows with a random biLM of the
published small shape (2P = 256) to show it, including one 10,000-token line.

    .venv/bin/python benchmarks/embed_memory.py [--sizes 10000,100000] [--small-model]
        [--precisions reference,fp32]

The PTB runs are repeated for each `--precision` of `elmokit embed`: "reference" is the
autograd code path; "fp32" (and bf16, int8) the inference kernels with prepared weights,
whose own caches (one oneDNN kernel per product shape) are what could grow with the input.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "allennlp-elmo"
PTB_TRAIN = SHARED / "data" / "ptb_mikolov" / "ptb.train.txt.gz"
WIKITEXT = SHARED / "data" / "wikitext2" / "wiki.valid.tokens"


@dataclass
class Row:
    label: str
    lines: int
    seconds: float
    peak_rss_mb: float
    output_mb: float


def write_cycled_lines(path: Path, n_lines: int) -> None:
    with gzip.open(PTB_TRAIN, "rt", encoding="utf-8") as source:
        lines = [line.strip() for line in source if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        for line in itertools.islice(itertools.cycle(lines), n_lines):
            out.write(line + "\n")


def write_long_line(path: Path, n_tokens: int) -> None:
    tokens = WIKITEXT.read_text(encoding="utf-8").split()[:n_tokens]
    path.write_text(" ".join(tokens) + "\n", encoding="utf-8")


def run_embed(
    label: str,
    source: Path,
    output: Path,
    model_args: list[str],
    lines: int,
    precision: str = "reference",
) -> Row:
    command = [
        sys.executable, "-m", "elmokit.cli", "embed", str(source), str(output), "--top",
        "--quiet", "--threads", "1", "--precision", precision, *model_args,
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{label}: elmokit embed failed with exit code {process.returncode}")
    return Row(label, lines, seconds, usage.ru_maxrss / 1024, output.stat().st_size / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="line counts, comma-separated")
    parser.add_argument("--small-model", action="store_true", help="add random small-model rows")
    parser.add_argument(
        "--precisions",
        default="reference,fp32",
        help="`elmokit embed --precision` values to measure on the PTB inputs",
    )
    parser.add_argument("--workdir", help="where inputs and outputs go (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    fixture_args = [
        "--model", str(FIXTURE / "options.json"), "--weights", str(FIXTURE / "lm_weights.hdf5"),
    ]
    precisions = args.precisions.split(",")

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        rows: list[Row] = []
        for precision in precisions:
            for size in sizes:
                source = work / f"ptb_{size}.txt"
                if not source.exists():
                    write_cycled_lines(source, size)
                label = f"fixture, {precision}, PTB x{size}"
                output = work / f"out_{size}_{precision}.h5"
                rows.append(run_embed(label, source, output, fixture_args, size, precision))
        long_line = work / "long_line.txt"
        write_long_line(long_line, 10_000)
        output = work / "long.h5"
        rows.append(
            run_embed("fixture, reference, 10k-token line", long_line, output, fixture_args, 1)
        )
        if args.small_model:
            small = work / "small"
            subprocess.run(
                [sys.executable, "-m", "elmokit.cli", "random-model", "small", str(small),
                 "--format", "native"],
                check=True, stdout=subprocess.DEVNULL,
            )
            small_args = ["--model", str(small)]
            source = work / "ptb_1000.txt"
            write_cycled_lines(source, 1000)
            output = work / "small_1k.h5"
            rows.append(run_embed("small, PTB x1000", source, output, small_args, 1000))
            rows.append(
                run_embed("small, 10k-token line", long_line, work / "small_long.h5", small_args, 1)
            )

    print(
        f"{'run':<36} {'lines':>7} {'seconds':>8} {'sent/s':>7} {'peak RSS MB':>12} "
        f"{'output MB':>10}"
    )
    for row in rows:
        rate = row.lines / row.seconds
        print(
            f"{row.label:<36} {row.lines:>7} {row.seconds:>8.1f} {rate:>7.0f} "
            f"{row.peak_rss_mb:>12.0f} {row.output_mb:>10.1f}"
        )
    if len(sizes) >= 2:
        for prefix in (f"fixture, {precision}, PTB" for precision in precisions):
            by_size = {row.lines: row for row in rows if row.label.startswith(prefix)}
            if by_size:
                low, high = by_size[min(sizes)], by_size[max(sizes)]
                print(
                    f"peak RSS ratio {high.lines:,} / {low.lines:,} lines "
                    f"({prefix.removesuffix(', PTB')}): {high.peak_rss_mb / low.peak_rss_mb:.2f}"
                )


if __name__ == "__main__":
    main()

"""End-to-end `elmokit embed` speed against the bare model, in one run (issue #17, item 8).

Rows, all on the same sentences, each timed `--repeats` times alternately (best kept):
- "bare model (reference)": the biLM called on ready-made batches: the sentences sorted by
  length over the whole input, `--batch-size` each, `model(model.batch_to_ids(batch))`. No
  reading, no look-ahead windows, nothing kept.
- "Embedder.embed_sentences": the library path (windows, dedupe, buckets), results consumed.
- "embed_file --top" / "embed_file --all": the `elmokit embed` pipeline (reading the file,
  tokenising, windows, HDF5 writes, checkpoints) to a fresh output.

    python benchmarks/embed_speed.py --model elmokit-small-en --lines 5000 --threads 1

Prints tokens/s and the ratio to the reference row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from elmokit.embedder import Embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="elmokit-small-en")
    parser.add_argument("--weights")
    parser.add_argument(
        "--text", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                              "ptb_mikolov" / "ptb.test.txt"),
    )  # fmt: skip
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = Path(args.text).read_text(encoding="utf-8").splitlines()[: args.lines]
    sentences = [line.split() for line in lines]
    n_tokens = sum(len(sentence) for sentence in sentences)
    embedder = Embedder(args.model, batch_size=args.batch_size, weights=args.weights,
                        precision=args.precision)  # fmt: skip
    model = embedder.model
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    batches = [
        [sentences[i] for i in order[start : start + args.batch_size]]
        for start in range(0, len(order), args.batch_size)
    ]
    work = Path(tempfile.mkdtemp(prefix="elmokit-embed-speed-"))
    source = work / "input.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(model.batch_to_ids(batch))

    def library() -> None:
        for _ in embedder.embed_sentences(sentences):
            pass

    def to_file(output: str) -> Callable[[], None]:
        def run() -> None:
            embedder.embed_file(source, work / f"{output}.hdf5", output, overwrite=True)

        return run

    rows: dict[str, Callable[[], None]] = {
        "bare model (reference)": bare,
        "Embedder.embed_sentences": library,
        "embed_file --top": to_file("top"),
        "embed_file --all": to_file("all"),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, run in rows.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    reference = min(times["bare model (reference)"])
    print(f"{len(lines)} lines, {n_tokens} tokens, {args.model}, precision {args.precision}, "
          f"{args.threads} thread(s), best of {args.repeats}")  # fmt: skip
    print("| path | seconds | tokens/s | vs bare model |")
    print("| --- | ---: | ---: | ---: |")
    for name, measured in times.items():
        best = min(measured)
        print(f"| {name} | {best:.2f} | {n_tokens / best:,.0f} | {reference / best:.2f} |")


if __name__ == "__main__":
    main()

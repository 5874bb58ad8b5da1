"""What do the reduced-precision inference modes cost downstream? One real task per mode.

For each inference mode (reference, fp32, bf16, int8) this embeds the task's sentences with a
trained biLM in that mode, trains the same head on the same split with the same seeds on the
learned layer mix, and prints the score per mode, its change against the exact path, and the
per-token cosine of the top layer to the exact path's.

    .venv/bin/python benchmarks/inference_modes_downstream.py --model elmokit-small-en \
        [--task pos] [--seeds 0,1,2] [--threads 2] [--data-dir ../shared/data]

The default task is the POS linear probe on the NLTK WSJ sample (3,914 sentences, split by
file): cheap enough to embed four times, and a token-level score, so it sees every vector.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import elmokit
from elmokit.tasks.common import parse_representation
from elmokit.tasks.features import BiLMExtractor, ensure_cache, standardize
from elmokit.tasks.suite import TASKS, prepare, train_once

ROOT = Path(__file__).resolve().parents[1]
MODES = ("reference", "fp32", "bf16", "int8")
COSINE_SENTENCES = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="elmokit-small-en")
    parser.add_argument("--task", default="pos", choices=sorted(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = TASKS[args.task]
    if spec.kind == "wsd":
        parser.error("wsd has no trained head; pick a task with one")
    seeds = [int(s) for s in args.seeds.split(",")]
    prepared = prepare(args.task, args.data_dir)
    representation = parse_representation("elmo", 3)
    n_tokens = sum(len(s) for s in prepared.sentences)
    print(f"model {args.model}, task {args.task} ({spec.description}), {n_tokens:,} tokens")

    scores: dict[str, list[float]] = {}
    top_layers: dict[str, list[torch.Tensor]] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for mode in MODES:
            bilm = elmokit.load(args.model)
            bilm.optimize_for_inference(mode)
            extractor = BiLMExtractor(bilm, identity=f"{args.model}:{mode}")
            start = time.perf_counter()
            with ensure_cache(extractor, prepared.sentences, cache_dir, args.task) as cache:
                seconds = time.perf_counter() - start
                features = standardize(cache.load(None))  # [n_layers, T, D] per sentence
            # fp32 vectors for the cosine (the cache stores float16, as the suite's does).
            sample = prepared.sentences[:COSINE_SENTENCES]
            top_layers[mode] = [
                layers[-1]
                for i in range(0, len(sample), 64)
                for layers in extractor(sample[i : i + 64])
            ]
            for seed in seeds:
                run = train_once(spec, prepared, features, representation, seed, spec.budget)
                scores.setdefault(mode, []).append(run.score)
            print(
                f"{mode:9s} {spec.metric} {statistics.mean(scores[mode]):.2f} "
                f"(seeds {', '.join(f'{s:.2f}' for s in scores[mode])}); "
                f"embedding {n_tokens / seconds:,.0f} tokens/s"
            )
            del features

    exact = torch.cat(top_layers["reference"])
    print(
        f"\n| mode | {spec.metric} (mean of {len(seeds)} seeds) | change vs reference "
        f"| min / mean top-layer cosine ({COSINE_SENTENCES} sentences) |"
    )
    print("|---|---|---|---|")
    reference_score = statistics.mean(scores["reference"])
    for mode in MODES:
        vectors = torch.cat(top_layers[mode])
        cosine = torch.nn.functional.cosine_similarity(vectors, exact, dim=-1)
        mean_score = statistics.mean(scores[mode])
        print(
            f"| {mode} | {mean_score:.2f} | {mean_score - reference_score:+.2f} "
            f"| {float(cosine.min()):.5f} / {float(cosine.mean()):.6f} |"
        )


if __name__ == "__main__":
    main()

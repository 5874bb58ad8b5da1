"""How long will `elmokit task report` take on the full data? An estimate per task.

For each task this measures, on the real data and sentence lengths:
- biLM feature throughput (tokens/s) on a sample of the task's sentences, with the given
  model (default: a random biLM of the default model's shape, 2 x 1024 LSTM, P = 128);
- one epoch of the task's head on a random `--fraction` of its train and dev examples, with
  random features of the biLM's width, scaled up to the full split.

and prints features + representations x seeds x max epochs x epoch time (an upper bound:
early stopping usually ends runs sooner). WSD has no training, only the SemCor and ALL passes.

    .venv/bin/python benchmarks/task_runtime.py --threads 2 [--model runs/default_model/model]
        [--tasks ner,sst5,sick,wsd,pos] [--seeds 3] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

import elmokit
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm
from elmokit.tasks.common import Budget, parse_representation
from elmokit.tasks.features import BiLMExtractor
from elmokit.tasks.names import DEFAULT_TASKS
from elmokit.tasks.suite import TASKS, Prepared, prepare, train_once

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHAPE = BiLMConfig(
    filters=[(1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512)],
    n_highway=1,
    lstm_dim=1024,
    projection_dim=128,
    n_layers=2,
)


def bilm_tokens_per_second(extractor: BiLMExtractor, sentences: list[list[str]]) -> float:
    sample = random.Random(0).sample(sentences, min(300, len(sentences)))
    start = time.perf_counter()
    for _ in extractor.extract(sample):
        pass
    return sum(len(s) for s in sample) / (time.perf_counter() - start)


def epoch_seconds(name: str, prepared: Prepared, dim: int, fraction: float) -> float:
    """One epoch (train + dev scoring) on a fraction of the data, scaled to the full size."""
    spec = TASKS[name]
    train, dev, test = prepared.split(0)
    rng = random.Random(0)
    small_train = rng.sample(train, max(32, int(len(train) * fraction)))
    small_dev = rng.sample(dev, max(16, int(len(dev) * fraction)))
    small = Prepared(**{**prepared.__dict__, "splits": [(small_train, small_dev, small_dev)]})
    used = _sentences_used(small, small_train + small_dev)
    n_layers = 3
    features = [
        torch.randn(n_layers, len(s), dim).half() if i in used else torch.zeros(0)
        for i, s in enumerate(prepared.sentences)
    ]
    budget = Budget(**{**spec.budget.__dict__, "epochs": 1})
    representation = parse_representation("elmo", n_layers)
    start = time.perf_counter()
    train_once(spec, small, features, representation, 0, budget)
    scale = (len(train) + len(dev)) / (len(small_train) + len(small_dev))
    del test
    return (time.perf_counter() - start) * scale


def _sentences_used(prepared: Prepared, examples: list[int]) -> set[int]:
    if prepared.pairs is not None:
        return {s for i in examples for s in prepared.pairs[i][:2]}
    if prepared.qa_context is not None and prepared.qa_question is not None:
        return {prepared.qa_context[i] for i in examples} | {
            prepared.qa_question[i] for i in examples
        }
    return set(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="biLM to time (default: random, default-model shape)")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--representations", type=int, default=3, help="e.g. layer0,w2v,elmo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bilm = elmokit.load(args.model) if args.model else random_bilm(DEFAULT_SHAPE)
    extractor = BiLMExtractor(bilm, identity="benchmark")
    print(f"threads {args.threads}, biLM 2P = {extractor.dim}, seeds {args.seeds}")
    print("| task | tokens | features min | epoch s | max epochs | runs | total min (max) |")
    print("|---|---|---|---|---|---|---|")
    grand = 0.0
    for name in args.tasks.split(","):
        spec = TASKS[name]
        prepared = prepare(name, args.data_dir)
        if spec.kind == "wsd":
            assert prepared.wsd_train is not None and prepared.wsd_test is not None
            sentences = [s.tokens for s in prepared.wsd_train + prepared.wsd_test]
        else:
            sentences = prepared.sentences
        tokens = sum(len(s) for s in sentences)
        feature_min = tokens / bilm_tokens_per_second(extractor, sentences) / 60
        if spec.kind == "wsd":
            epoch, epochs, runs = 0.0, 0, 0
        else:
            epoch = epoch_seconds(name, prepared, extractor.dim, args.fraction)
            epochs = spec.budget.epochs
            extra_layers = extractor.n_layers - 1 if spec.kind == "probe" else 0
            runs = (args.representations + extra_layers) * args.seeds
        total = feature_min + runs * epochs * epoch / 60
        grand += total
        print(
            f"| {name} | {tokens} | {feature_min:.1f} | {epoch:.1f} | {epochs} | {runs} | "
            f"{total:.0f} |",
            flush=True,
        )
    print(f"\ntotal: at most {grand:.0f} min")


if __name__ == "__main__":
    main()

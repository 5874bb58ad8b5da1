"""`elmokit task train|evaluate|report`: downstream tasks on a frozen biLM (docs/tasks.md).

elmokit task report --model runs/default_model/model --out reports/ [--quick] [--seeds 3]
elmokit task train ner --model MODEL --representation elmo --out runs/heads/ner-elmo
elmokit task evaluate runs/heads/ner-elmo --model MODEL
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elmokit.commands._common import CommandError

if TYPE_CHECKING:
    from elmokit.bilm import BiLM
    from elmokit.tasks.common import Representation
    from elmokit.tasks.suite import Encoders

DEFAULT_DATA_DIR = "../shared/data"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "task", help="downstream tasks (NER, SST, SICK, QA, WSD, POS probes) on a frozen biLM"
    )
    actions = parser.add_subparsers(dest="task_command", metavar="ACTION")

    report = actions.add_parser("report", help="run the suite and write a Markdown report")
    _common_arguments(report)
    report.add_argument("--out", required=True, help="output directory for report.md and plots")
    report.add_argument(
        "--tasks",
        default=",".join(_default_tasks()),
        help="comma-separated tasks, or 'all' (default: %(default)s)",
    )
    report.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 per task (default 3; quick: 1)"
    )
    report.add_argument(
        "--representations",
        default="layer0,word2vec,elmo,layer0+elmo",
        help="comma-separated: elmo (the mix alone), layer0, top, layerK, word2vec, "
        "layer0+elmo / word2vec+elmo (that vector beside the mix, as the paper feeds ELMo) "
        "(default: %(default)s)",
    )
    report.add_argument(
        "--adapt-lm",
        action="store_true",
        help="also fine-tune the biLM on each task's training text (LM loss, early-stopped on "
        "its dev text) and report the adapted +ELMo beside the general one (the paper's "
        "domain adaptation); needs a model with its softmax, e.g. the bundled one",
    )
    report.add_argument(
        "--adapt-epochs", type=int, default=3, help="at most this many passes (default 3)"
    )
    report.add_argument(
        "--adapt-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fine-tuning precision (bf16: bf16 products, fp32 weights and loss; faster on CPUs "
        "with bf16 matrix units) (default: %(default)s)",
    )
    report.set_defaults(func=run_report)

    train = actions.add_parser("train", help="train one head on one representation and seed")
    train.add_argument("task", help="task name (see `elmokit task report --help`)")
    _common_arguments(train)
    train.add_argument("--out", required=True, help="directory for head.pt and metrics.json")
    train.add_argument("--representation", default="elmo")
    train.add_argument("--seed", type=int, default=0, help="seed (CV tasks: fold = seed mod n)")
    train.set_defaults(func=run_train)

    evaluate = actions.add_parser("evaluate", help="score a head saved by `task train`")
    evaluate.add_argument("head", help="directory written by `elmokit task train`")
    _common_arguments(evaluate)
    evaluate.add_argument("--split", choices=("dev", "test"), default="test")
    evaluate.set_defaults(func=run_evaluate)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _default_tasks() -> tuple[str, ...]:
    from elmokit.tasks.names import DEFAULT_TASKS

    return DEFAULT_TASKS


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="biLM: anything elmokit.load accepts")
    parser.add_argument("--weights", help="weight file, for an options.json model")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("ELMOKIT_DATA_DIR", DEFAULT_DATA_DIR),
        help="shared data directory (default: $ELMOKIT_DATA_DIR or %(default)s)",
    )
    parser.add_argument(
        "--cache-dir", help="feature cache (default: OUT/cache, or runs/task_cache)"
    )
    parser.add_argument(
        "--word2vec-corpus",
        help="text for the word2vec baseline (default: the model's training text found via "
        "its train_config.json; 'none' to skip)",
    )
    parser.add_argument("--quick", action="store_true", help="small slices, few epochs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--progress", action="store_true", help="progress bars for features")


def _setup(args: argparse.Namespace, default_cache: Path) -> tuple[BiLM, Path, Path]:
    import torch

    import elmokit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise CommandError(f"no data directory at {data_dir} (pass --data-dir)")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache
    bilm = elmokit.load(args.model, weights=args.weights)
    return bilm, data_dir, cache_dir


def _word2vec_corpus(args: argparse.Namespace) -> list[Path]:
    from elmokit.tasks.suite import find_training_text

    if args.word2vec_corpus == "none":
        return []
    if args.word2vec_corpus:
        return [Path(args.word2vec_corpus)]
    found = find_training_text(args.model)
    if not found:
        logging.warning("no training text found for %s: no word2vec baseline", args.model)
    return found


def _representation(encoders: Encoders, name: str) -> Representation:
    if name == "word2vec" and encoders.word2vec is None:
        raise CommandError("no word2vec vectors: pass --word2vec-corpus (and install gensim)")
    (representation,) = encoders.representations([name])
    return representation


def run_report(args: argparse.Namespace) -> int:
    import torch

    import elmokit
    from elmokit.tasks.report import write_report
    from elmokit.tasks.suite import TASKS, load_encoders, prepare, run_task

    names = list(TASKS) if args.tasks == "all" else [t for t in args.tasks.split(",") if t]
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise CommandError(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    out = Path(args.out)
    bilm, data_dir, cache_dir = _setup(args, out / "cache")
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    corpus = _word2vec_corpus(args)
    encoders = load_encoders(bilm, cache_dir, corpus, quick=args.quick)
    representations = [r for r in args.representations.split(",") if r]
    header = {
        "model": f"{args.model} (biLM {encoders.bilm.identity}, {encoders.n_bilm_layers} "
        f"layers of {encoders.bilm.dim})",
        "mode": "quick (small slices, few epochs)" if args.quick else "full",
        "seeds": ", ".join(map(str, seeds)),
        "word2vec": f"trained on {corpus[0]}" if encoders.word2vec else "not available",
        "threads": str(torch.get_num_threads()),
        "elmokit": elmokit.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    results = []
    start = time.perf_counter()
    for name in names:
        logging.info("task %s", name)
        prepared = prepare(name, data_dir, quick=args.quick)
        result = run_task(
            TASKS[name],
            prepared,
            encoders,
            seeds,
            representations,
            cache_dir,
            quick=args.quick,
            progress=args.progress,
        )
        if args.adapt_lm and TASKS[name].kind != "wsd":
            header[f"adapt-lm {name}"] = _adapted_scores(
                args, name, prepared, result, seeds, cache_dir, out
            )
        results.append(result)
        write_report(results, out, header)  # after every task: a crash keeps what is done
    report = write_report(results, out, header)
    print(f"wrote {report} ({time.perf_counter() - start:.0f}s)")
    return 0


def _adapted_scores(
    args: argparse.Namespace,
    name: str,
    prepared: Any,
    result: Any,
    seeds: list[int],
    cache_dir: Path,
    out: Path,
) -> str:
    """Fine-tune the biLM on the task's text (tasks/adapt.py), run the task's +ELMo with it,
    store its scores as "<+ELMo> (adapted LM)" beside the general model's; the header line."""
    import elmokit
    from elmokit.tasks.adapt import AdaptSettings, adapt_to_text, task_texts
    from elmokit.tasks.report import ADAPTED_SUFFIX, elmo_key
    from elmokit.tasks.suite import TASKS, load_encoders, run_task

    train_text, dev_text = task_texts(prepared)
    settings = AdaptSettings(
        max_epochs=1 if args.quick else args.adapt_epochs, precision=args.adapt_precision
    )
    suffix = "-quick" if args.quick else ""
    adaptation = adapt_to_text(args.model, train_text, dev_text, out / f"adapt-{name}{suffix}",
                               settings)  # fmt: skip
    adapted = load_encoders(elmokit.load(adaptation.model_dir), cache_dir, [], quick=args.quick)
    key = elmo_key(result)
    scored = run_task(
        TASKS[name], prepared, adapted, seeds, [key], cache_dir, quick=args.quick,
        progress=args.progress,
    )  # fmt: skip
    result.scores[key + ADAPTED_SUFFIX] = scored.scores[key]
    return adaptation.describe()


def run_train(args: argparse.Namespace) -> int:
    from elmokit.tasks.suite import (
        TASKS,
        cache_name,
        load_encoders,
        load_features,
        prepare,
        run_wsd,
        save_head,
        train_once,
    )

    if args.task not in TASKS:
        raise CommandError(f"unknown task {args.task!r}; known: {', '.join(TASKS)}")
    spec = TASKS[args.task]
    bilm, data_dir, cache_dir = _setup(args, Path("runs") / "task_cache")
    corpus = _word2vec_corpus(args) if args.representation == "word2vec" else []
    encoders = load_encoders(bilm, cache_dir, corpus, quick=args.quick)
    prepared = prepare(args.task, data_dir, quick=args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if spec.kind == "wsd":  # nothing to train but centroids: report every layer
        result = run_wsd(spec, prepared, encoders, cache_dir, args.quick, args.progress)
        metrics: dict[str, object] = {"task": spec.name, "metric": spec.metric}
        metrics.update({name: values[0] for name, values in result.scores.items()})
    else:
        representation = _representation(encoders, args.representation)
        features = load_features(
            prepared,
            encoders,
            representation,
            cache_dir,
            cache_name(spec.name, args.quick),
            args.progress,
        )
        budget = spec.quick_budget if args.quick else spec.budget
        run = train_once(spec, prepared, features, representation, args.seed, budget)
        metrics = {
            "task": spec.name,
            "metric": spec.metric,
            "eval_split": spec.eval_split,
            "representation": args.representation,
            "seed": args.seed,
            "score": run.score,
            "dev_score": run.dev_score,
            "dev_curve": run.fit.dev_curve,
            "train_loss": run.fit.train_loss,
            "layer_weights": run.layer_weights,
            **run.extra,
        }
        assert run.model is not None
        save_head(
            out / "head.pt",
            run.model,
            {
                "task": spec.name,
                "representation": args.representation,
                "seed": args.seed,
                "quick": args.quick,
                "features": encoders.get(representation.source).identity,
            },
        )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("dev_curve", "train_loss")}))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from elmokit.tasks.suite import (
        TASKS,
        cache_name,
        evaluate_head,
        load_encoders,
        load_features,
        load_head,
        prepare,
    )

    head_file = Path(args.head) / "head.pt"
    if not head_file.exists():
        raise CommandError(f"no head.pt in {args.head} (written by `elmokit task train`)")
    model, metadata = load_head(head_file)
    spec = TASKS[str(metadata["task"])]
    quick = bool(metadata["quick"]) or args.quick
    bilm, data_dir, cache_dir = _setup(args, Path("runs") / "task_cache")
    name = str(metadata["representation"])
    corpus = _word2vec_corpus(args) if name == "word2vec" else []
    encoders = load_encoders(bilm, cache_dir, corpus, quick=quick)
    representation = _representation(encoders, name)
    identity = encoders.get(representation.source).identity
    if identity != metadata["features"]:
        raise CommandError(
            f"the head was trained on features {metadata['features']}, this model gives "
            f"{identity}: pass the same --model (and word2vec corpus)"
        )
    prepared = prepare(spec.name, data_dir, quick=quick)
    features = load_features(
        prepared, encoders, representation, cache_dir, cache_name(spec.name, quick), args.progress
    )
    _, dev, test = prepared.split(int(str(metadata["seed"])))
    scores = evaluate_head(spec, prepared, model, features, dev if args.split == "dev" else test)
    print(json.dumps({"task": spec.name, "split": args.split, "representation": name, **scores}))
    return 0

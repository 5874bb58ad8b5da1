"""Perplexity of a trained biLM on held-out text and on the downstream tasks' text.

    python recipes/default_model/text_perplexity.py --model MODEL_DIR --out DIR \
        [--corpus runs/corpus_v2] [--data-dir ../shared/data]

Writes one sentence per line for CoNLL-2003 dev (Reuters news), the SST test set and the
first 3,000 distinct SICK test sentences to runs/ood/, then runs `elmokit evaluate` on each
(and on the corpus's held-out split and WikiText-2 test text when --corpus is given; rows
packed as in the model's training, unroll 20) and writes NAME.json into --out. The v1 model's
numbers (reports/elmokit-small-en-2026-11-24/out_of_domain/) were written by the first
version of this script, on the three task texts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from elmokit.tasks import data as D

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ROOT / "runs" / "ood"


def task_texts(data_dir: Path) -> dict[str, list[list[str]]]:
    sick: list[list[str]] = []
    for pair in D.read_sick(data_dir, "test"):
        for sentence in (pair.premise, pair.hypothesis):
            if sentence not in sick[-50:]:  # SICK repeats a premise over consecutive pairs
                sick.append(sentence)
    return {
        "conll2003_dev": [s.tokens for s in D.read_conll2003(data_dir, "dev")],
        "sst_test": [s.tokens for s in D.read_sst(data_dir, "test", False)],
        "sick_test": sick[:3000],
    }


def perplexity(model: Path, vocab: Path, text: Path) -> dict[str, float]:
    command = [
        sys.executable, "-m", "elmokit.cli", "evaluate", str(model), str(text),
        "--vocab", str(vocab), "--quiet",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"elmokit evaluate failed on {text}:\n{result.stderr.strip()}")
    return dict(json.loads(result.stdout))


def texts_to_measure(corpus: Path | None, data_dir: Path) -> dict[str, Path]:
    TEXTS.mkdir(parents=True, exist_ok=True)
    texts: dict[str, Path] = {}
    if corpus is not None:
        texts["heldout"] = corpus / "heldout.txt"
        texts["wikitext2_test"] = corpus / "wikitext2_test.txt"
    for name, sentences in task_texts(data_dir).items():
        path = TEXTS / f"{name}.txt"
        path.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
        texts[name] = path
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="native model directory")
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME.json")
    parser.add_argument("--vocab", type=Path, help="its vocabulary (default: MODEL/vocab.txt)")
    parser.add_argument("--corpus", type=Path, help="prepare_corpus.py's output folder")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in texts_to_measure(args.corpus, args.data_dir).items():
        result = perplexity(args.model, args.vocab or args.model / "vocab.txt", text)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(name, json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

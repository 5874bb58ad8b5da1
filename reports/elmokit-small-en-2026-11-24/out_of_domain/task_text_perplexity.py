"""Perplexity of the bundled biLM on the text of the downstream tasks (how far from home).

    .venv/bin/python reports/elmokit-small-en-2026-11-24/out_of_domain/task_text_perplexity.py

Writes one sentence per line for CoNLL-2003 dev, the SST test set and the first 3,000
distinct SICK test sentences to runs/ood/, then runs `elmokit evaluate` on each (rows packed
as in the model's training, unroll 20) and writes NAME.json next to this script.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from elmokit.tasks import data as D

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "src" / "elmokit" / "data" / "models" / "elmokit-small-en"
TEXTS = ROOT / "runs" / "ood"


def task_texts() -> dict[str, list[list[str]]]:
    sick: list[list[str]] = []
    for pair in D.read_sick(DATA, "test"):
        for sentence in (pair.premise, pair.hypothesis):
            if sentence not in sick[-50:]:  # SICK repeats a premise over consecutive pairs
                sick.append(sentence)
    return {
        "conll2003_dev": [s.tokens for s in D.read_conll2003(DATA, "dev")],
        "sst_test": [s.tokens for s in D.read_sst(DATA, "test", False)],
        "sick_test": sick[:3000],
    }


def main() -> int:
    TEXTS.mkdir(parents=True, exist_ok=True)
    for name, sentences in task_texts().items():
        text = TEXTS / f"{name}.txt"
        text.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
        command = [
            sys.executable, "-m", "elmokit.cli", "evaluate", str(MODEL), str(text),
            "--vocab", str(MODEL / "vocab.txt"),
        ]  # fmt: skip
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        (Path(__file__).parent / f"{name}.json").write_text(result.stdout)
        print(name, result.stdout.replace("\n", " "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

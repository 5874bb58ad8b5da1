"""Out-of-vocabulary rate of the v2 training vocabulary on each task's text (the share of
tokens the biLM's softmax predicts as <UNK>; the char-CNN input has no OOV).

    python reports/elmokit-small-en-v2/oov_rates.py --vocab runs/default_model_v2/vocab.txt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elmokit.tasks import data as D
from elmokit.vocab import Vocabulary


def rate(vocab: set[str], sentences: list[list[str]]) -> float:
    tokens = [t for s in sentences for t in s]
    return 100.0 * sum(t not in vocab for t in tokens) / max(len(tokens), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=Path, default=Path("runs/default_model_v2/vocab.txt"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--heldout", type=Path, default=Path("runs/corpus_v2/heldout.txt"))
    args = parser.parse_args()
    vocab = set(Vocabulary.from_file(args.vocab).tokens)
    texts = {
        "CoNLL-2003 dev (NER)": [s.tokens for s in D.read_conll2003(args.data_dir, "dev")],
        "SST test (SST-5)": [s.tokens for s in D.read_sst(args.data_dir, "test")],
        "SICK test": [
            side for p in D.read_sick(args.data_dir, "test") for side in (p.premise, p.hypothesis)
        ],
        "WNUT-17 test": [s.tokens for s in D.read_wnut17(args.data_dir, "test")],
    }
    if args.heldout.exists():
        lines = args.heldout.read_text(encoding="utf-8").splitlines()
        texts["v2 held-out split"] = [line.split() for line in lines]
    result = {name: round(rate(vocab, sentences), 2) for name, sentences in texts.items()}
    print(json.dumps({"vocab_size": len(vocab), "oov_percent": result}, indent=2))


if __name__ == "__main__":
    main()

"""Raw Chinese text through an ELMoForManyLangs model: "苹果" the fruit and "苹果" the company.

    python examples/chinese_efml.py --model path/to/zhs.model   # an unpacked EFML model
    python examples/chinese_efml.py                              # the tiny fixture model

jieba segments the text (`pip install 'elmokit[zh]'`), as EFML's Chinese models were trained on
segmented words; elmokit reads the EFML directory as EFML computes it. For each layer the
script prints the cosine similarity of "苹果" between sentence pairs: layer 0 (context-free) is
the same vector in every sentence, the LSTM layers are not. With the fixture's random weights
that only shows the vectors depend on context; with a real model (EFML's zhs.model) the fruit
sentences should be closer to each other than to the company ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import elmokit
from elmokit.embedder import Embedder

FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "efml" / "efml-tiny-cnn-word"
)
SENTENCES = {
    "fruit 1": "我喜欢吃苹果。",
    "fruit 2": "他买了一斤苹果和香蕉。",
    "company 1": "苹果发布了新手机。",
    "company 2": "苹果的股价今天上涨了。",
}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(FIXTURE), help="an EFML model directory")
    args = parser.parse_args()
    if not Path(args.model).is_dir():
        print(
            f"no model directory at {args.model} (the fixture lives in ../shared)", file=sys.stderr
        )
        return 2
    try:
        embedder = Embedder(elmokit.load(args.model), tokenize="jieba")
    except ImportError as error:
        print(error, file=sys.stderr)
        return 2
    apple: dict[str, np.ndarray] = {}  # name -> [L+1, 2P], the vectors of 苹果
    for name, text in SENTENCES.items():
        tokens = embedder.tokenize(text)
        layers = embedder.embed_sentence(tokens)  # [L+1, T, 2P]
        apple[name] = layers[:, tokens.index("苹果")]
        print(f"{name:10s} {' '.join(tokens)}")
    names = list(apple)
    n_layers = next(iter(apple.values())).shape[0]
    print("\ncosine of 苹果 between sentences, per layer")
    print("pair                   | " + " | ".join(f"layer {k}" for k in range(n_layers)))
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            values = [cosine(apple[first][k], apple[second][k]) for k in range(n_layers)]
            print(f"{first:10s} ~ {second:10s} | " + " | ".join(f"{v:7.4f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the biLM tell "bank" (river) from "bank" (money)? Layer by layer, on SemCor 3.0.

    python examples/word_senses.py [--model elmokit-small-en] [--weights W] [--data-dir DIR]

Takes every noun "bank" (the singular) in SemCor tagged with one of its two main WordNet senses
(bank%1:14:00, the financial institution; bank%1:17:01, sloping land beside water), embeds
those sentences with the biLM, and for each layer prints:
- the mean cosine between "bank" vectors of the same sense and of different senses;
- leave-one-out 1-nearest-neighbour sense accuracy over those instances (the paper's WSD
  method in miniature);
then, for two new sentences, the three nearest SemCor "bank" contexts by the top layer.
Layer 0 is context-free: every "bank" has the same vector there, so it cannot separate them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from elmokit.embedder import Embedder
from elmokit.tasks.data import read_semcor

SENSES = {"bank%1:14:00::": "money", "bank%1:17:01::": "river"}
QUERIES = {
    "river": "We sat on the grassy bank of the stream and watched the water flow past .",
    "money": "She went to the bank to deposit her wages and ask about a loan .",
}
SHARED = Path(__file__).resolve().parents[2] / "shared"


def bank_instances(data_dir: Path) -> list[tuple[list[str], int, str]]:
    """(sentence tokens, position of "bank", sense name) for every tagged singular noun bank."""
    found = []
    for sentence in read_semcor(data_dir):
        for instance in sentence.instances:
            sense = next((SENSES[k] for k in instance.keys if k in SENSES), None)
            if sense is None or len(instance.positions) != 1:
                continue
            position = instance.positions[0]
            # The singular only: "banks" has other characters, hence another layer-0 vector.
            if sentence.tokens[position].lower() == "bank":
                found.append((sentence.tokens, position, sense))
    return found


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True).clip(min=1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="elmokit-small-en")
    parser.add_argument("--weights", help="weight file, when --model is an options.json")
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data")
    args = parser.parse_args()
    if not (args.data_dir / "semcor30").is_dir():
        parser.error(f"no SemCor under {args.data_dir}: pass --data-dir (../shared/data)")

    instances = bank_instances(args.data_dir)
    senses = np.array([sense for _, _, sense in instances])
    embedder = Embedder(args.model, weights=args.weights)
    embedded = embedder.embed_sentences([tokens for tokens, _, _ in instances])
    # [n_instances, n_layers, D]: the vector of "bank" in each layer
    vectors = np.stack(
        [array[:, position] for array, (_, position, _) in zip(embedded, instances, strict=True)]
    )
    counts = {name: int((senses == name).sum()) for name in SENSES.values()}
    print(f'{len(instances)} SemCor instances of noun "bank": {counts}')

    same = senses[:, None] == senses[None, :]
    off_diagonal = ~np.eye(len(instances), dtype=bool)
    print("layer | cosine same sense | cosine other sense | leave-one-out 1-NN accuracy")
    for layer in range(vectors.shape[1]):
        normed = unit(vectors[:, layer])
        cosine = normed @ normed.T
        within = cosine[same & off_diagonal].mean()
        across = cosine[~same].mean()
        np.fill_diagonal(cosine, -np.inf)
        # Ties (layer 0: all vectors equal) go to the first index, i.e. no real choice.
        accuracy = (senses[cosine.argmax(axis=1)] == senses).mean()
        print(f"{layer:5d} | {within:17.3f} | {across:18.3f} | {100 * accuracy:.1f}%")
    majority = max(counts.values()) / len(instances)
    print(f"(always the majority sense: {100 * majority:.1f}%)")

    top = unit(vectors[:, -1])
    for sense, text in QUERIES.items():
        tokens = text.split()
        query = unit(embedder.embed_sentence(tokens)[-1, tokens.index("bank")])
        scores = top @ query
        print(f"\n[{sense}] {text}")
        for index in np.argsort(-scores)[:3]:
            words, position, neighbour_sense = instances[index]
            start = max(0, position - 8)
            context = " ".join(words[start : position + 9])
            print(f"  {scores[index]:.3f} {neighbour_sense:5s} ... {context} ...")


if __name__ == "__main__":
    main()

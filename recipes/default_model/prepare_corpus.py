"""Build the training text of the bundled default model from openly licensed data only.

Sources (all in ../shared/data, licences in its README): the Project Gutenberg books
(public domain), the US inaugural addresses and State of the Union addresses (public domain),
WikiText-2 valid + test (CC BY-SA). Research-only sets (PTB, Brown, SST, CoNLL, SICK) are
never read here.

Output: one Moses-tokenised sentence per line, `train.txt` and `valid.txt` (every 50th
sentence held out), plus `sources.json` with line counts per source.

    python recipes/default_model/prepare_corpus.py --shared ../shared --output runs/default_corpus
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sacremoses import MosesTokenizer

# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets) before a space
# and an opening capital, quote or bracket. Crude, but fine for edited prose.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
HOLD_OUT_EVERY = 50


def read_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # shakespeare-caesar.txt is ISO-8859-1


def prose_sentences(text: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", text):
        joined = " ".join(paragraph.split())
        if joined:
            yield from (s.strip() for s in SENTENCE_END.split(joined) if s.strip())


def gutenberg(shared: Path) -> Iterator[tuple[str, str]]:
    for path in sorted((shared / "data" / "gutenberg_nltk").glob("*.txt*")):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for sentence in prose_sentences(read_text(raw)):
            yield "gutenberg", sentence


def speeches(shared: Path) -> Iterator[tuple[str, str]]:
    for name, archive in (
        ("inaugural", "inaugural_nltk/inaugural.zip"),
        ("state_union", "state_union_nltk/state_union.zip"),
    ):
        with zipfile.ZipFile(shared / "data" / archive) as bundle:
            for member in sorted(bundle.namelist()):
                if member.endswith(".txt"):
                    for sentence in prose_sentences(read_text(bundle.read(member))):
                        yield name, sentence


def wikitext(shared: Path) -> Iterator[tuple[str, str]]:
    for split in ("valid", "test"):
        path = shared / "data" / "wikitext2" / f"wiki.{split}.tokens"
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("="):
                continue
            # Already tokenised: end a sentence after " . " when a capital follows.
            for sentence in re.split(r"(?<= \.) (?=[A-Z])", line):
                yield (
                    "wikitext2",
                    sentence.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", "."),
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--output", type=Path, default=Path("runs/default_corpus"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    tokenizer = MosesTokenizer(lang="en")
    counts: dict[str, dict[str, int]] = {}
    index = 0
    with (
        (args.output / "train.txt").open("w", encoding="utf-8") as train,
        (args.output / "valid.txt").open("w", encoding="utf-8") as valid,
    ):
        for source, sentence in [
            *gutenberg(args.shared),
            *speeches(args.shared),
            *wikitext(args.shared),
        ]:
            tokens = (
                sentence.split()
                if source == "wikitext2"
                else tokenizer.tokenize(sentence, escape=False)
            )
            if len(tokens) < 2:
                continue
            held_out = index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
            (valid if held_out else train).write(" ".join(tokens) + "\n")
            stats = counts.setdefault(source, {"sentences": 0, "tokens": 0})
            stats["sentences"] += 1
            stats["tokens"] += len(tokens)
            index += 1
    (args.output / "sources.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()

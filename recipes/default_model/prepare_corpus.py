"""Build the training text of the bundled default model (v2) from openly licensed data only.

Sources (all in ../shared/data; licences in its README and in the model card):
- `wikipedia_en_2015` (CC BY-SA 3.0): 12,980 articles, minus the 15 XQuAD articles (QA is
  evaluated on them);
- `gutenberg_rcdm` (public domain): 417 books, only the text between the PG START/END markers
  (`body_start`/`body_end` of its MANIFEST), so no PG header or licence is trained on;
- `wikinews_en_2022` (CC BY 2.5): article text, HTML entities decoded, sentences with the
  dump's known holes (a determiner or preposition right before punctuation) dropped;
- `gutenberg_nltk`, `inaugural_nltk`, `state_union_nltk` (public domain).
WikiText-2 is never trained on: its test text is an evaluation set of the model. Research-only
sets (PTB, Brown, SST, CoNLL, SICK) are never read here.

Protocol:
- held out **by document**: a document (article, book, news page, speech) whose name hashes
  into the lowest 2% goes wholly to `heldout.txt` (in document order); nothing of it is trained
  on, and a training sentence equal to a held-out one is dropped;
- deduplicated: a sentence of 5 or more tokens is kept once (the corpus has reprinted
  passages and boilerplate);
- globally shuffled (seeded), so every pass reads the sources mixed, never one book at a time;
- deterministic: the same inputs give byte-identical files (a run resumed on a new machine
  rebuilds exactly the corpus its checkpoint points into).

Output in `--output`: `train.txt`, `heldout.txt` (one Moses-tokenised sentence per line),
`valid.txt` (every 10th held-out sentence, a sample of every held-out document, for the
evaluations during training),
`wikitext2_test.txt`, `heldout_documents.tsv` and `sources.json` (documents, sentences,
tokens per source and split).

    python recipes/default_model/prepare_corpus.py --shared ../shared --output runs/corpus_v2
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import html
import json
import random
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

from sacremoses import MosesTokenizer
from tqdm import tqdm

# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets) before a space
# and an opening capital, quote or bracket. Crude, but fine for edited prose.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
# WikiExtractor dropped Wikinews' interwiki links with their text ("announced the UK's on").
WIKINEWS_HOLE = re.compile(
    r"(^\s*[,.;:])|\b(the|a|an|of|in|on|at|to|by|with|for|from|and|as)\s+[,.;:)]", re.IGNORECASE
)
HELD_OUT_PERCENT = 2
DEDUPE_MIN_TOKENS = 5
MIN_TOKENS = 3
VALID_EVERY = 10
SHUFFLE_SEED = 20261201
# XQuAD (SQuAD v1.1 dev) articles present in wikipedia_en_2015 (its README): not trained on.
XQUAD_TITLES = {
    "Apollo program", "Black Death", "Chloroplast", "Computational complexity theory",
    "Doctor Who", "Force", "Geology", "Immune system", "Imperialism",
    "Intergovernmental Panel on Climate Change", "Islamism", "Nikola Tesla", "Oxygen",
    "Prime number", "Rhine",
}  # fmt: skip


@dataclass(frozen=True)
class Document:
    source: str
    name: str
    paragraphs: tuple[str, ...]

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(f"{self.source}/{self.name}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


def read_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # shakespeare-caesar.txt is ISO-8859-1


def prose_paragraphs(text: str) -> tuple[str, ...]:
    """Blank-line separated paragraphs with their line wrapping undone."""
    joined = (" ".join(p.split()) for p in re.split(r"\r?\n\s*\r?\n", text))
    return tuple(p for p in joined if p)


def wikipedia(shared: Path) -> Iterator[Document]:
    for path in sorted((shared / "data" / "wikipedia_en_2015").glob("*/wiki_*.gz")):
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        for match in re.finditer(r'<doc id="(\d+)"[^>]*title="([^"]*)">\n(.*?)</doc>', text, re.S):
            doc_id, title, body = match.groups()
            if html.unescape(title) in XQUAD_TITLES:
                continue
            # Line 1 is the title; a line of under 5 words is a section heading.
            lines = body.split("\n")[1:]
            paragraphs = tuple(line for line in lines if len(line.split()) >= 5)
            yield Document("wikipedia_en_2015", f"curid={doc_id}", paragraphs)


def gutenberg_rcdm(shared: Path) -> Iterator[Document]:
    folder = shared / "data" / "gutenberg_rcdm"
    with (folder / "MANIFEST.tsv").open(encoding="utf-8", newline="") as manifest:
        rows = sorted(csv.DictReader(manifest, delimiter="\t"), key=lambda row: row["file"])
    for row in rows:
        raw = gzip.decompress((folder / row["file"]).read_bytes())
        body = raw[int(row["body_start"]) : int(row["body_end"])]
        yield Document("gutenberg_rcdm", row["file"], prose_paragraphs(read_text(body)))


def wikinews(shared: Path) -> Iterator[Document]:
    for path in sorted((shared / "data" / "wikinews_en_2022").glob("AA/wiki_*.gz")):
        for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
            page = json.loads(line)
            paragraphs = tuple(
                html.unescape(p) for p in page["text"].split("\n") if len(p.split()) >= 5
            )
            if paragraphs:
                yield Document("wikinews_en_2022", f"curid={page['id']}", paragraphs)


def gutenberg_nltk(shared: Path) -> Iterator[Document]:
    for path in sorted((shared / "data" / "gutenberg_nltk").glob("*.txt*")):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        yield Document("gutenberg_nltk", path.name, prose_paragraphs(read_text(raw)))


def speeches(shared: Path) -> Iterator[Document]:
    for name, archive in (
        ("inaugural_nltk", "inaugural_nltk/inaugural.zip"),
        ("state_union_nltk", "state_union_nltk/state_union.zip"),
    ):
        with zipfile.ZipFile(shared / "data" / archive) as bundle:
            for member in sorted(bundle.namelist()):
                if member.endswith(".txt"):
                    text = read_text(bundle.read(member))
                    yield Document(name, member, prose_paragraphs(text))


def wikitext2_test(shared: Path) -> Iterator[str]:
    path = shared / "data" / "wikitext2" / "wiki.test.tokens"
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        # Already tokenised: end a sentence after " . " when a capital follows.
        for sentence in re.split(r"(?<= \.) (?=[A-Z])", line):
            yield sentence.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")


_TOKENIZER: MosesTokenizer | None = None


def tokenize_document(document: Document) -> list[str]:
    """The document's sentences, Moses-tokenised, one string each."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = MosesTokenizer(lang="en")
    sentences = []
    for paragraph in document.paragraphs:
        for sentence in SENTENCE_END.split(paragraph):
            if document.source == "wikinews_en_2022" and WIKINEWS_HOLE.search(sentence):
                continue
            tokens = _TOKENIZER.tokenize(sentence.strip(), escape=False)
            if len(tokens) >= MIN_TOKENS:
                sentences.append(" ".join(tokens))
    return sentences


def all_documents(shared: Path) -> list[Document]:
    documents: list[Document] = []
    for source in (wikipedia, gutenberg_rcdm, wikinews, gutenberg_nltk, speeches):
        documents.extend(source(shared))
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--output", type=Path, default=Path("runs/corpus_v2"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    documents = all_documents(args.shared)
    held_out_docs = [d for d in documents if d.held_out]
    train_docs = [d for d in documents if not d.held_out]
    stats: dict[str, dict[str, int]] = {}

    def count(source: str, split: str, key: str, n: int = 1) -> None:
        entry = stats.setdefault(source, {})
        entry[f"{split}_{key}"] = entry.get(f"{split}_{key}", 0) + n

    with Pool(args.workers) as pool:
        held_out: list[str] = []
        for document, sentences in zip(
            held_out_docs, pool.imap(tokenize_document, held_out_docs, chunksize=4), strict=True
        ):
            held_out.extend(sentences)
            count(document.source, "heldout", "documents")
            count(document.source, "heldout", "sentences", len(sentences))
            count(document.source, "heldout", "tokens", sum(s.count(" ") + 1 for s in sentences))
        seen = {s for s in held_out if s.count(" ") + 1 >= DEDUPE_MIN_TOKENS}
        train: list[str] = []
        progress = tqdm(total=len(train_docs), desc="tokenising", unit="doc")
        for document, sentences in zip(
            train_docs, pool.imap(tokenize_document, train_docs, chunksize=4), strict=True
        ):
            progress.update(1)
            count(document.source, "train", "documents")
            for sentence in sentences:
                n_tokens = sentence.count(" ") + 1
                if n_tokens >= DEDUPE_MIN_TOKENS:
                    if sentence in seen:
                        count(document.source, "train", "duplicates_dropped")
                        continue
                    seen.add(sentence)
                train.append(sentence)
                count(document.source, "train", "sentences")
                count(document.source, "train", "tokens", n_tokens)
        progress.close()
    random.Random(SHUFFLE_SEED).shuffle(train)
    write_lines(args.output / "train.txt", train)
    write_lines(args.output / "heldout.txt", held_out)
    write_lines(args.output / "valid.txt", held_out[::VALID_EVERY])
    write_lines(args.output / "wikitext2_test.txt", list(wikitext2_test(args.shared)))
    with (args.output / "heldout_documents.tsv").open("w", encoding="utf-8") as listing:
        listing.write("source\tdocument\n")
        listing.writelines(f"{d.source}\t{d.name}\n" for d in held_out_docs)
    totals = {
        key: sum(entry.get(key, 0) for entry in stats.values())
        for key in ("train_tokens", "train_sentences", "heldout_tokens", "heldout_sentences")
    }
    report = {"sources": stats, "totals": totals}
    (args.output / "sources.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def write_lines(path: Path, lines: list[str]) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    temporary.replace(path)


if __name__ == "__main__":
    main()

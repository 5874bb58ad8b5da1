"""Readers for the downstream-task data sets (layout of `shared/data`, see its README).

Every reader returns plain dataclasses with whitespace-free token lists, ready for the biLM:

- tagging (`TaggedSentence`): CoNLL-2003 NER, WNUT-17, CoNLL-2000 chunking, PTB and Brown POS;
- sentence classification (`LabeledSentence`): SST-5 / SST-2, MR, SUBJ;
- sentence pairs (`SentencePair`): SICK (3-way entailment), RTE 1-3 (2-way);
- extractive QA (`QAExample`): SQuAD v1.1 JSON (XQuAD-en);
- all-words WSD (`WSDSentence`): Raganato et al.'s XML + gold keys, SemCor 3.0 TSV, and the
  WordNet 3.0 first sense of every (lemma, POS) from `index.sense`.

Raw text (SICK, RTE, SQuAD contexts and questions) goes through `tokenize_with_offsets`, a
small PTB-like tokenizer that splits punctuation and clitics ("do n't", "John 's"), which is
close to how the biLM's training text was tokenized, and keeps character offsets so that QA
answers can be mapped back to the context.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from xml.etree import ElementTree

T = TypeVar("T")

# -- data classes ---------------------------------------------------------------------------


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]


@dataclass
class LabeledSentence:
    tokens: list[str]
    label: str


@dataclass
class SentencePair:
    premise: list[str]
    hypothesis: list[str]
    label: str


@dataclass
class QAExample:
    """One question on one context; spans are inclusive token indices into `context`."""

    qid: str
    article: str
    context_text: str
    context: list[str]
    offsets: list[tuple[int, int]]  # character span [start, end) of each context token
    question: list[str]
    answers: list[str]  # every gold answer text (SQuAD scoring takes the best match)
    span: tuple[int, int]  # token span of the first answer


@dataclass
class WSDInstance:
    """A word (or multiword, several positions) to disambiguate; `keys` are gold sense keys."""

    instance_id: str
    positions: list[int]  # token positions in the sentence
    lemma: str
    pos: str  # WordNet POS letter: n, v, a, r
    keys: list[str]


@dataclass
class WSDSentence:
    tokens: list[str]
    instances: list[WSDInstance] = field(default_factory=list)


# -- tokenization ---------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    \w+(?=n't\b)                    # "do" of "don't"
    | n't\b                         # "n't"
    | '(?:s|re|ve|ll|d|m)\b         # clitics: 's 're 've 'll 'd 'm
    | (?:[A-Za-z]\.){2,}            # abbreviations: U.S.
    | \d+(?:[.,:]\d+)+              # numbers: 1,000.5  3:30
    | \w+(?:-\w+)*                  # words, hyphenated words
    | \.\.\.|--                     # ellipsis, dash
    | [^\w\s]                       # any other symbol, one character
    """,
    re.VERBOSE | re.IGNORECASE,
)


def tokenize_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """PTB-like tokens of raw text with their character spans [start, end)."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def tokenize(text: str) -> list[str]:
    return [token for token, _, _ in tokenize_with_offsets(text)]


# -- CoNLL-style tagging --------------------------------------------------------------------


def read_conll(
    path: str | Path, tag_column: int = -1, limit: int | None = None
) -> list[TaggedSentence]:
    """Column files: one token per line (token first, tag in `tag_column`), blank lines
    between sentences; `-DOCSTART-` lines are skipped."""
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append(TaggedSentence(list(tokens), list(tags)))
        tokens.clear()
        tags.clear()

    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if not fields:
                flush()
                if limit is not None and len(sentences) >= limit:
                    return sentences
                continue
            if fields[0] == "-DOCSTART-":
                continue
            tokens.append(fields[0])
            tags.append(fields[tag_column])
    flush()
    return sentences[:limit] if limit is not None else sentences


CONLL2003_FILES = {"train": "train.txt", "dev": "valid.txt"}
WNUT17_FILES = {
    "train": "wnut17train.conll",
    "dev": "emerging.dev.conll",
    "test": "emerging.test.annotated",
}
CONLL2000_FILES = {"train": "train.txt", "test": "test.txt"}


def read_conll2003(
    data_dir: str | Path, split: str, limit: int | None = None
) -> list[TaggedSentence]:
    """CoNLL-2003 NER (IOB2); splits "train" and "dev" (there is no test file here)."""
    return read_conll(Path(data_dir) / "conll2003" / CONLL2003_FILES[split], limit=limit)


def read_wnut17(data_dir: str | Path, split: str, limit: int | None = None) -> list[TaggedSentence]:
    """WNUT-17 emerging entities (IOB2); splits "train", "dev", "test"."""
    return read_conll(Path(data_dir) / "wnut17" / WNUT17_FILES[split], limit=limit)


def read_conll2000(
    data_dir: str | Path, split: str, limit: int | None = None
) -> list[TaggedSentence]:
    """CoNLL-2000 chunking (IOB2 chunk tags, last column); splits "train", "test"."""
    return read_conll(Path(data_dir) / "conll2000" / CONLL2000_FILES[split], limit=limit)


# -- POS probes -----------------------------------------------------------------------------

_PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LCB-": "{", "-RCB-": "}", "-LSB-": "[", "-RSB-": "]"}
_SEXPR_RE = re.compile(r"\(|\)|[^\s()]+")


def parse_ptb_trees(text: str) -> list[TaggedSentence]:
    """Bracketed parses (one or more trees) -> (word, POS) per sentence, -NONE- traces
    dropped and -LRB-/-RRB- words mapped back to brackets."""
    sentences: list[TaggedSentence] = []
    items = _SEXPR_RE.findall(text)
    depth = 0
    tokens: list[str] = []
    tags: list[str] = []
    for i, item in enumerate(items):
        if item == "(":
            depth += 1
            # A preterminal is "( TAG word )".
            if (
                i + 3 < len(items)
                and items[i + 1] not in "()"
                and items[i + 2] not in "()"
                and items[i + 3] == ")"
                and items[i + 1] != "-NONE-"
            ):
                tokens.append(_PTB_BRACKETS.get(items[i + 2], items[i + 2]))
                tags.append(items[i + 1])
        elif item == ")":
            depth -= 1
            if depth == 0 and tokens:
                sentences.append(TaggedSentence(tokens, tags))
                tokens, tags = [], []
    return sentences


def read_ptb_sample(data_dir: str | Path, files: range | None = None) -> list[TaggedSentence]:
    """The NLTK 10% Penn Treebank sample (gold POS from `combined/wsj_NNNN.mrg`).

    `files` selects file numbers (1..199); split by file for train/dev/test."""
    sentences: list[TaggedSentence] = []
    with zipfile.ZipFile(Path(data_dir) / "ptb_sample_nltk" / "treebank.zip") as archive:
        names = sorted(
            n for n in archive.namelist() if re.fullmatch(r"treebank/combined/wsj_\d{4}\.mrg", n)
        )
        for name in names:
            number = int(name[-8:-4])
            if files is not None and number not in files:
                continue
            sentences.extend(parse_ptb_trees(archive.read(name).decode("utf-8")))
    return sentences


_BROWN_SUFFIX_RE = re.compile(r"-(?:tl|hl|nc)\b")


def simplify_brown_tag(tag: str) -> str:
    """Drop the Brown title/headline/citation markers and the foreign-word prefix:
    `np-tl` -> `np`, `fw-nn` -> `nn` (the base tag still distinguishes $ and *)."""
    if tag.startswith("fw-"):
        tag = tag[3:]
    simplified = _BROWN_SUFFIX_RE.sub("", tag)
    return simplified or tag


def read_brown(
    data_dir: str | Path, documents: Sequence[str] | None = None, simplify: bool = True
) -> list[TaggedSentence]:
    """Brown corpus tagged sentences (`word/tag`), optionally of the given documents
    (e.g. ["ca01", "ca02"]); tags simplified with `simplify_brown_tag`."""
    sentences: list[TaggedSentence] = []
    with zipfile.ZipFile(Path(data_dir) / "brown_nltk" / "brown.zip") as archive:
        names = brown_documents(data_dir) if documents is None else list(documents)
        for name in names:
            text = archive.read(f"brown/{name}").decode("latin-1")
            for line in text.splitlines():
                pairs = [item.rsplit("/", 1) for item in line.split()]
                pairs = [p for p in pairs if len(p) == 2 and p[0]]
                if not pairs:
                    continue
                tags = [simplify_brown_tag(t) if simplify else t for _, t in pairs]
                sentences.append(TaggedSentence([w for w, _ in pairs], tags))
    return sentences


def brown_documents(data_dir: str | Path) -> list[str]:
    with zipfile.ZipFile(Path(data_dir) / "brown_nltk" / "brown.zip") as archive:
        return sorted(
            n.split("/")[1] for n in archive.namelist() if re.fullmatch(r"brown/c[a-r]\d\d", n)
        )


# -- sentence classification ----------------------------------------------------------------

SST5_LABELS = ("very negative", "negative", "neutral", "positive", "very positive")
SST2_LABELS = ("negative", "positive")
SST_FILES = {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}


def parse_sst_tree(line: str) -> tuple[list[str], int]:
    """A PTB-style SST tree -> (leaf tokens, root label 0..4)."""
    items = _SEXPR_RE.findall(line)
    if len(items) < 2 or items[0] != "(":
        raise ValueError(f"not an SST tree: {line[:60]!r}")
    leaves = [
        _PTB_BRACKETS.get(item, item)
        for previous, item in zip(items, items[1:], strict=False)
        if item not in "()" and previous != "("
    ]
    return leaves, int(items[1])


def read_sst(
    data_dir: str | Path, split: str, binary: bool = False, limit: int | None = None
) -> list[LabeledSentence]:
    """SST sentences (root label only). SST-5 labels as in `SST5_LABELS`; with `binary`,
    neutral sentences are dropped and 0-1 / 3-4 become negative / positive (SST-2)."""
    examples: list[LabeledSentence] = []
    with open(Path(data_dir) / "sst" / SST_FILES[split], encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            tokens, label = parse_sst_tree(line)
            if binary:
                if label == 2:
                    continue
                examples.append(LabeledSentence(tokens, SST2_LABELS[int(label > 2)]))
            else:
                examples.append(LabeledSentence(tokens, SST5_LABELS[label]))
            if limit is not None and len(examples) >= limit:
                break
    return examples


def _read_lines_labeled(paths_labels: Sequence[tuple[Path, str]]) -> list[LabeledSentence]:
    examples: list[LabeledSentence] = []
    for path, label in paths_labels:
        with open(path, encoding="utf-8") as handle:
            examples.extend(LabeledSentence(line.split(), label) for line in handle if line.split())
    return examples


def read_mr(data_dir: str | Path) -> list[LabeledSentence]:
    """Pang & Lee sentence polarity (MR): 5,331 positive + 5,331 negative; no split."""
    root = Path(data_dir) / "sentence_polarity"
    return _read_lines_labeled(
        [(root / "rt-polarity.neg", "negative"), (root / "rt-polarity.pos", "positive")]
    )


def read_subj(data_dir: str | Path) -> list[LabeledSentence]:
    """Pang & Lee subjectivity (SUBJ): 5,000 objective + 5,000 subjective; no split."""
    root = Path(data_dir) / "subjectivity"
    return _read_lines_labeled(
        [(root / "plot.tok.gt9.5000", "objective"), (root / "quote.tok.gt9.5000", "subjective")]
    )


# -- sentence pairs -------------------------------------------------------------------------

SICK_SPLITS = {"train": "TRAIN", "dev": "TRIAL", "test": "TEST"}


def read_sick(data_dir: str | Path, split: str, limit: int | None = None) -> list[SentencePair]:
    """SICK 3-way entailment; splits "train" (TRAIN), "dev" (TRIAL), "test" (TEST)."""
    wanted = SICK_SPLITS[split]
    pairs: list[SentencePair] = []
    text = (Path(data_dir) / "sick" / "SICK.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    header = lines[0].split("\t")
    col = {name: i for i, name in enumerate(header)}
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) < len(header) or fields[col["SemEval_set"]] != wanted:
            continue
        pairs.append(
            SentencePair(
                tokenize(fields[col["sentence_A"]]),
                tokenize(fields[col["sentence_B"]]),
                fields[col["entailment_label"]],
            )
        )
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


RTE_LABELS = ("FALSE", "TRUE")


def read_rte(
    data_dir: str | Path, files: Sequence[str] = ("rte1_dev", "rte2_dev", "rte3_dev")
) -> list[SentencePair]:
    """PASCAL RTE pairs (text, hypothesis, TRUE/FALSE) from the NLTK XML files. The usual
    protocol trains on the dev files and tests on the test files."""
    pairs: list[SentencePair] = []
    for name in files:
        root = ElementTree.parse(Path(data_dir) / "rte_nltk" / f"{name}.xml").getroot()
        for pair in root.iter("pair"):
            text, hypothesis = pair.findtext("t") or "", pair.findtext("h") or ""
            # RTE-1 says value="TRUE|FALSE", RTE-2 and 3 entailment="YES|NO".
            label = (pair.get("value") or pair.get("entailment") or "").upper()
            label = {"YES": "TRUE", "NO": "FALSE"}.get(label, label)
            if text.strip() and hypothesis.strip() and label in RTE_LABELS:
                pairs.append(SentencePair(tokenize(text), tokenize(hypothesis), label))
    return pairs


# -- extractive QA --------------------------------------------------------------------------


def read_squad(path: str | Path, limit: int | None = None) -> list[QAExample]:
    """SQuAD v1.1 JSON -> QAExamples (answers whose span cannot be located are skipped)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)["data"]
    examples: list[QAExample] = []
    for article in data:
        for paragraph in article["paragraphs"]:
            context_text: str = paragraph["context"]
            tokens = tokenize_with_offsets(context_text)
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                first = qa["answers"][0]
                span = char_span_to_tokens(
                    tokens, first["answer_start"], first["answer_start"] + len(first["text"])
                )
                question = tokenize(qa["question"])
                if span is None or not question:
                    continue
                examples.append(
                    QAExample(
                        qid=qa["id"],
                        article=article.get("title", ""),
                        context_text=context_text,
                        context=[t for t, _, _ in tokens],
                        offsets=[(s, e) for _, s, e in tokens],
                        question=question,
                        answers=answers,
                        span=span,
                    )
                )
                if limit is not None and len(examples) >= limit:
                    return examples
    return examples


def char_span_to_tokens(
    tokens: Sequence[tuple[str, int, int]], start: int, end: int
) -> tuple[int, int] | None:
    """Inclusive token span covering the characters [start, end), or None."""
    covering = [i for i, (_, s, e) in enumerate(tokens) if s < end and e > start]
    if not covering:
        return None
    return covering[0], covering[-1]


# -- word sense disambiguation --------------------------------------------------------------

UPOS_TO_WN = {"NOUN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}
# Sense-key synset type (lemma%TYPE:...): 1 noun, 2 verb, 3 adjective, 4 adverb, 5 satellite.
SS_TYPE_TO_WN = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}


def sense_key_lemma_pos(key: str) -> tuple[str, str]:
    """`art%1:09:00::` -> ("art", "n")."""
    lemma, rest = key.split("%", 1)
    return lemma.lower(), SS_TYPE_TO_WN[rest[0]]


def read_raganato(
    data_dir: str | Path, name: str = "ALL", limit: int | None = None
) -> list[WSDSentence]:
    """One of Raganato et al.'s evaluation sets ("ALL", "senseval2", ..., "semeval2015"):
    sentences with their instances and gold keys. Multiword surface forms are split into
    several tokens and the instance covers all of them."""
    root_dir = Path(data_dir) / "wsd_eval_raganato" / name
    gold: dict[str, list[str]] = {}
    with open(root_dir / f"{name}.gold.key.txt", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields:
                gold[fields[0]] = fields[1:]
    sentences: list[WSDSentence] = []
    root = ElementTree.parse(root_dir / f"{name}.data.xml").getroot()
    for xml_sentence in root.iter("sentence"):
        sentence = WSDSentence(tokens=[])
        for node in xml_sentence:
            words = (node.text or "").replace("_", " ").split() or ["_"]
            positions = list(range(len(sentence.tokens), len(sentence.tokens) + len(words)))
            sentence.tokens.extend(words)
            if node.tag == "instance":
                instance_id = node.get("id", "")
                sentence.instances.append(
                    WSDInstance(
                        instance_id=instance_id,
                        positions=positions,
                        lemma=node.get("lemma", "").lower(),
                        pos=UPOS_TO_WN.get(node.get("pos", ""), "n"),
                        keys=gold.get(instance_id, []),
                    )
                )
        if sentence.tokens:
            sentences.append(sentence)
        if limit is not None and len(sentences) >= limit:
            break
    return sentences


def read_semcor(
    data_dir: str | Path,
    valid_keys: set[str] | None = None,
    limit: int | None = None,
) -> list[WSDSentence]:
    """SemCor 3.0 from `semcor30/semcor30.tsv.gz`: sentences with every sense-tagged token
    as an instance. With `valid_keys` (e.g. from `read_wordnet_senses`), keys not in WordNet
    3.0 are dropped (SemCor's known invalid keys). Multiword tokens (`New_York`) become
    several biLM tokens."""
    sentences: list[WSDSentence] = []
    current: WSDSentence | None = None
    current_id: tuple[str, str] | None = None
    with gzip.open(Path(data_dir) / "semcor30" / "semcor30.tsv.gz", "rt", encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            doc, sent, token_id, token, _pos, lemma, keys, _synsets = line.rstrip("\n").split("\t")
            if (doc, sent) != current_id:
                if current is not None and current.tokens:
                    sentences.append(current)
                    if limit is not None and len(sentences) >= limit:
                        return sentences
                current, current_id = WSDSentence(tokens=[]), (doc, sent)
            assert current is not None
            words = token.replace("_", " ").split() or ["_"]
            positions = list(range(len(current.tokens), len(current.tokens) + len(words)))
            current.tokens.extend(words)
            if keys == "-":
                continue
            key_list = keys.split()
            if valid_keys is not None:
                key_list = [k for k in key_list if k in valid_keys]
            if not key_list:
                continue
            key_lemma, key_pos = sense_key_lemma_pos(key_list[0])
            current.instances.append(
                WSDInstance(f"{doc}.{sent}.{token_id}", positions, key_lemma, key_pos, key_list)
            )
    if current is not None and current.tokens:
        sentences.append(current)
    return sentences[:limit] if limit is not None else sentences


@dataclass
class WordNetSenses:
    """From `index.sense`: every valid sense key and the first sense of each (lemma, POS)."""

    keys: set[str]
    first_sense: dict[tuple[str, str], str]


def read_wordnet_senses(data_dir: str | Path) -> WordNetSenses:
    keys: set[str] = set()
    first: dict[tuple[str, str], str] = {}
    with gzip.open(Path(data_dir) / "wordnet30" / "index.sense.gz", "rt", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            key, sense_number = fields[0], fields[2]
            keys.add(key)
            if sense_number == "1":
                # Adjectives and satellites share the "a" inventory; the first one wins.
                first.setdefault(sense_key_lemma_pos(key), key)
    return WordNetSenses(keys, first)


# -- splits ---------------------------------------------------------------------------------


def kfold(items: Sequence[T], n_folds: int, fold: int, seed: int = 0) -> tuple[list[T], list[T]]:
    """(train, test) for fold `fold` of a seeded shuffle into `n_folds` parts."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    test_ids = set(order[fold::n_folds])
    train = [item for i, item in enumerate(items) if i not in test_ids]
    test = [item for i, item in enumerate(items) if i in test_ids]
    return train, test


def holdout(items: Sequence[T], fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """(rest, held out): a seeded random `fraction` of the items held out (for a dev set)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(items) * fraction))
    held = set(order[:n_held])
    return (
        [item for i, item in enumerate(items) if i not in held],
        [item for i, item in enumerate(items) if i in held],
    )


def group_kfold(
    items: Sequence[T], groups: Sequence[str], n_folds: int, fold: int
) -> tuple[list[T], list[T]]:
    """(train, test) with whole groups (e.g. SQuAD articles) on one side: group i (in order
    of first appearance) goes to fold i mod n_folds."""
    order = list(dict.fromkeys(groups))
    test_groups = {g for i, g in enumerate(order) if i % n_folds == fold}
    train = [item for item, g in zip(items, groups, strict=True) if g not in test_groups]
    test = [item for item, g in zip(items, groups, strict=True) if g in test_groups]
    return train, test


def stratified_slice(items: Sequence[T], labels: Sequence[str], n: int, seed: int = 0) -> list[T]:
    """A seeded sample of n items (label proportions kept approximately, order kept)."""
    if n >= len(items):
        return list(items)
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    chosen: list[int] = []
    for indices in by_label.values():
        rng.shuffle(indices)
        chosen.extend(indices[: max(1, round(n * len(indices) / len(items)))])
    rng.shuffle(chosen)
    return [items[i] for i in sorted(chosen[:n])]

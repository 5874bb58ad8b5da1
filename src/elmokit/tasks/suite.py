"""The downstream-task suite: which tasks exist, how their data is split (full and quick),
and running a head over several representations and seeds on cached features.

Every task trains the same head with the same budget on each representation ("layer0",
"word2vec" if available, "elmo"), once per seed; the reported score is on the task's
evaluation split after selecting the epoch on its dev split. Cross-validated tasks (MR,
SUBJ, QA) run seed s on fold s mod n_folds, so `--seeds 10` is the full 10-fold CV.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from elmokit.bilm import BiLM
from elmokit.tasks import data as D
from elmokit.tasks.classifier import SentenceClassifier, score_classifier, train_classifier
from elmokit.tasks.common import (
    Budget,
    Representation,
    RunResult,
    TaskHead,
    majority_accuracy,
    parse_representation,
)
from elmokit.tasks.features import (
    BiLMExtractor,
    FeatureExtractor,
    StaticExtractor,
    ensure_cache,
    load_word2vec,
    standardize,
    train_word2vec,
)
from elmokit.tasks.names import TASK_NAMES
from elmokit.tasks.pair import PairClassifier, score_pairs, train_pair_classifier
from elmokit.tasks.probe import PROBE_BUDGET, LinearProbe, score_probe, token_rows, train_probe
from elmokit.tasks.qa import SpanQA, score_qa, train_qa
from elmokit.tasks.tagger import (
    SequenceTagger,
    entity_f1,
    score_tagger,
    tag_accuracy,
    train_tagger,
    word_majority_baseline,
)
from elmokit.tasks.wsd import (
    coverage,
    disambiguate,
    ensure_centroids,
    first_sense_predictions,
    wsd_scores,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Split = tuple[list[int], list[int], list[int]]  # train, dev, test example indices


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # tagging | classification | pair | qa | wsd | probe
    metric: str
    eval_split: str
    description: str
    budget: Budget = field(default_factory=Budget)
    quick_budget: Budget = field(
        default_factory=lambda: Budget(epochs=6, batch_size=16, lr=3e-3, patience=6)
    )


_QA_BUDGET = Budget(epochs=20, batch_size=16, hidden=64, patience=4)
_QUICK_PROBE = Budget(epochs=6, batch_size=64, lr=1e-2, patience=6, dropout=0.0)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            "ner",
            "tagging",
            "F1",
            "dev",
            "CoNLL-2003 NER, BiLSTM-CRF (selected on 5% of train, scored on dev = eng.testa)",
            # 20 epochs, not 10: with 10, 10 of the 12 runs of the v1 report had their best
            # epoch at the last one (curves still rising).
            budget=Budget(epochs=20),
        ),
        TaskSpec("wnut17", "tagging", "F1", "test", "WNUT-17 emerging entities, BiLSTM-CRF"),
        TaskSpec("chunk", "tagging", "F1", "test", "CoNLL-2000 chunking, BiLSTM-CRF"),
        TaskSpec("sst5", "classification", "acc", "test", "SST-5 fine-grained sentiment"),
        TaskSpec("sst2", "classification", "acc", "test", "SST-2 binary sentiment"),
        TaskSpec("mr", "classification", "acc", "CV fold", "MR sentence polarity, 10-fold CV"),
        TaskSpec("subj", "classification", "acc", "CV fold", "SUBJ subjectivity, 10-fold CV"),
        TaskSpec("sick", "pair", "acc", "test", "SICK 3-way entailment, ESIM-style"),
        TaskSpec("rte", "pair", "acc", "test", "RTE 1-3 (train dev sets, test test sets)"),
        TaskSpec(
            "qa",
            "qa",
            "F1",
            "CV fold",
            "XQuAD-en extractive QA, small BiDAF, 5-fold CV by article",
            budget=_QA_BUDGET,
            quick_budget=Budget(epochs=4, batch_size=16, lr=3e-3, hidden=64, patience=4),
        ),
        TaskSpec("wsd", "wsd", "F1", "ALL", "WSD, 1-NN sense centroids: SemCor 3.0 -> ALL"),
        TaskSpec(
            "pos",
            "probe",
            "acc",
            "test",
            "PTB POS linear probe (NLTK WSJ sample, split by file)",
            budget=PROBE_BUDGET,
            quick_budget=_QUICK_PROBE,
        ),
        TaskSpec(
            "pos_brown",
            "probe",
            "acc",
            "test",
            "Brown POS linear probe (100 documents, split by document)",
            budget=PROBE_BUDGET,
            quick_budget=_QUICK_PROBE,
        ),
    ]
}
if tuple(TASKS) != TASK_NAMES:  # pragma: no cover - a programming error, caught by any test
    raise RuntimeError(f"tasks/names.py lists {TASK_NAMES}, the registry has {tuple(TASKS)}")


# -- data preparation -----------------------------------------------------------------------


@dataclass
class Prepared:
    """A task's data: the sentences to featurize and, per fold, (train, dev, test) example
    indices. Tagging/probe/classification examples are sentences (example i = sentence i)."""

    sentences: list[list[str]]
    splits: list[Split]
    tags: list[list[str]] | None = None
    labels: list[str] | None = None
    pairs: list[tuple[int, int, str]] | None = None
    qa_examples: list[D.QAExample] | None = None
    qa_context: list[int] | None = None
    qa_question: list[int] | None = None
    wsd_train: list[D.WSDSentence] | None = None
    wsd_test: list[D.WSDSentence] | None = None
    wordnet: D.WordNetSenses | None = None

    def split(self, seed: int) -> Split:
        return self.splits[seed % len(self.splits)]


def _ranges(*sizes: int) -> list[list[int]]:
    out, start = [], 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def _tagging(
    train: list[D.TaggedSentence], dev: list[D.TaggedSentence], test: list[D.TaggedSentence]
) -> Prepared:
    everything = train + dev + test
    train_ids, dev_ids, test_ids = _ranges(len(train), len(dev), len(test))
    return Prepared(
        sentences=[s.tokens for s in everything],
        splits=[(train_ids, dev_ids, test_ids)],
        tags=[s.tags for s in everything],
    )


def _classification(
    train: list[D.LabeledSentence], dev: list[D.LabeledSentence], test: list[D.LabeledSentence]
) -> Prepared:
    everything = train + dev + test
    return Prepared(
        sentences=[s.tokens for s in everything],
        splits=[tuple(_ranges(len(train), len(dev), len(test)))],  # type: ignore[list-item]
        labels=[s.label for s in everything],
    )


def _cross_validated(examples: list[D.LabeledSentence], n_folds: int) -> Prepared:
    splits: list[Split] = []
    ids = list(range(len(examples)))
    for fold in range(n_folds):
        rest, test = D.kfold(ids, n_folds, fold)
        train, dev = D.holdout(rest, 0.1, seed=fold)
        splits.append((train, dev, test))
    return Prepared(
        sentences=[s.tokens for s in examples], splits=splits, labels=[s.label for s in examples]
    )


class _SentenceTable:
    """Distinct sentences in order of first appearance; id(tokens) is a sentence's index."""

    def __init__(self) -> None:
        self.sentences: list[list[str]] = []
        self._index: dict[tuple[str, ...], int] = {}

    def id(self, tokens: list[str]) -> int:
        key = tuple(tokens)
        if key not in self._index:
            self._index[key] = len(self.sentences)
            self.sentences.append(tokens)
        return self._index[key]


def _pairs(
    train: list[D.SentencePair], dev: list[D.SentencePair], test: list[D.SentencePair]
) -> Prepared:
    everything = train + dev + test
    table = _SentenceTable()
    sentence_id, sentences = table.id, table.sentences

    pairs = [(sentence_id(p.premise), sentence_id(p.hypothesis), p.label) for p in everything]
    return Prepared(
        sentences=sentences,
        splits=[tuple(_ranges(len(train), len(dev), len(test)))],  # type: ignore[list-item]
        pairs=pairs,
    )


def _qa(examples: list[D.QAExample], n_folds: int) -> Prepared:
    table = _SentenceTable()
    sentence_id, sentences = table.id, table.sentences

    context = [sentence_id(e.context) for e in examples]
    question = [sentence_id(e.question) for e in examples]
    ids = list(range(len(examples)))
    splits: list[Split] = []
    for fold in range(n_folds):
        rest, test = D.group_kfold(ids, [e.article for e in examples], n_folds, fold)
        train, dev = D.holdout(rest, 0.1, seed=fold)
        splits.append((train, dev, test))
    return Prepared(
        sentences=sentences,
        splits=splits,
        qa_examples=examples,
        qa_context=context,
        qa_question=question,
    )


def _sample(items: list[T], n: int | None, seed: int = 0) -> list[T]:
    """A seeded random subset of n items in their original order (all if n is None): the
    files are often sorted (SST by label, CoNLL by document), so the first n would skew."""
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def prepare(name: str, data_dir: str | Path, quick: bool = False) -> Prepared:
    """Read and split a task's data; `quick` takes a seeded random slice (a few hundred
    items per split)."""
    d = Path(data_dir)

    def q(n: int) -> int | None:
        return n if quick else None

    if name == "ner":
        # Epochs are selected on a split carved from train, so that dev (eng.testa), the
        # reported split, is never used for selection (there is no test split here).
        train, select = D.holdout(
            _sample(D.read_conll2003(d, "train"), q(500)), 0.25 if quick else 0.05
        )
        return _tagging(train, select, _sample(D.read_conll2003(d, "dev"), q(200)))
    if name == "wnut17":
        return _tagging(
            _sample(D.read_wnut17(d, "train"), q(500)),
            _sample(D.read_wnut17(d, "dev"), q(200)),
            _sample(D.read_wnut17(d, "test"), q(200)),
        )
    if name == "chunk":
        train_and_dev = _sample(D.read_conll2000(d, "train"), q(500))
        train, dev = D.holdout(train_and_dev, 0.25 if quick else 0.05)
        return _tagging(train, dev, _sample(D.read_conll2000(d, "test"), q(200)))
    if name in ("sst5", "sst2"):
        binary = name == "sst2"
        return _classification(
            _sample(D.read_sst(d, "train", binary), q(500)),
            _sample(D.read_sst(d, "dev", binary), q(200)),
            _sample(D.read_sst(d, "test", binary), q(300)),
        )
    if name in ("mr", "subj"):
        sentences = D.read_mr(d) if name == "mr" else D.read_subj(d)
        return _cross_validated(_sample(sentences, q(1000)), 10)
    if name == "sick":
        return _pairs(
            _sample(D.read_sick(d, "train"), q(500)),
            _sample(D.read_sick(d, "dev"), q(200)),
            _sample(D.read_sick(d, "test"), q(300)),
        )
    if name == "rte":
        rte_train, rte_dev = D.holdout(D.read_rte(d), 0.1)
        rte_test = D.read_rte(d, ("rte1_test", "rte2_test", "rte3_test"))
        return _pairs(
            _sample(rte_train, q(500)), _sample(rte_dev, q(150)), _sample(rte_test, q(300))
        )
    if name == "qa":
        questions = D.read_squad(d / "xquad_en" / "xquad.en.json")
        if quick:
            articles = list(dict.fromkeys(e.article for e in questions))[:15]
            questions = [e for e in questions if e.article in articles]
        return _qa(questions, 5)
    if name == "wsd":
        wordnet = D.read_wordnet_senses(d)
        return Prepared(
            sentences=[],
            splits=[],
            wsd_train=D.read_semcor(d, wordnet.keys, limit=q(2000)),
            wsd_test=_sample(D.read_raganato(d, "ALL"), q(200)),
            wordnet=wordnet,
        )
    if name == "pos":
        return _tagging(
            _sample(D.read_ptb_sample(d, range(1, 160)), q(500)),
            _sample(D.read_ptb_sample(d, range(160, 180)), q(200)),
            _sample(D.read_ptb_sample(d, range(180, 200)), q(200)),
        )
    if name == "pos_brown":
        documents = D.brown_documents(d)[::5]  # 100 documents: 80 train, 10 dev, 10 test
        parts: dict[int, list[D.TaggedSentence]] = {0: [], 1: [], 2: []}
        for i, document in enumerate(documents):
            part = 2 if i % 10 == 0 else 1 if i % 10 == 1 else 0  # test, dev, train
            parts[part].extend(D.read_brown(d, [document]))
        return _tagging(
            _sample(parts[0], q(500)), _sample(parts[1], q(200)), _sample(parts[2], q(200))
        )
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")


# -- encoders -------------------------------------------------------------------------------


@dataclass
class Encoders:
    """The feature sources of a run: the biLM, and word2vec vectors if available."""

    bilm: BiLMExtractor
    word2vec: StaticExtractor | None = None

    @property
    def n_bilm_layers(self) -> int:
        return self.bilm.n_layers

    def get(self, source: str) -> FeatureExtractor:
        if source == "bilm":
            return self.bilm
        if source == "word2vec" and self.word2vec is not None:
            return self.word2vec
        raise ValueError(f"no {source} features in this run")

    def representations(self, names: Sequence[str]) -> list[Representation]:
        return [
            parse_representation(name, self.n_bilm_layers)
            for name in names
            if not name.startswith("word2vec") or self.word2vec is not None
        ]


def find_training_text(model_path: str | Path) -> list[Path]:
    """The biLM's training text, from the train_config.json next to (or above) a model
    trained by `elmokit train`; [] if it cannot be found."""
    path = Path(model_path).resolve()
    for directory in [path, *list(path.parents)[:3]]:
        config_file = directory / "train_config.json"
        if not config_file.is_file():
            continue
        recorded = json.loads(config_file.read_text()).get("data", {}).get("train", [])
        found = []
        for entry in recorded:
            candidates = [Path(entry), *(p / entry for p in [directory, *directory.parents])]
            match = next((c for c in candidates if c.is_file()), None)
            if match is not None:
                found.append(match.resolve())
        return found
    return []


def load_encoders(
    bilm: BiLM,
    cache_dir: str | Path,
    word2vec_corpus: Sequence[str | Path] = (),
    quick: bool = False,
    word2vec_dim: int = 300,
    identity: str | None = None,
) -> Encoders:
    """The biLM extractor and, given a corpus and gensim, word2vec trained on that corpus
    (cached in cache_dir; quick: the first 20k lines, 3 epochs)."""
    encoders = Encoders(BiLMExtractor(bilm, identity))
    corpus = [Path(p) for p in word2vec_corpus]
    if not corpus:
        return encoders
    try:
        import gensim  # noqa: F401
    except ImportError:
        logger.warning("gensim is not installed: no word2vec baseline")
        return encoders
    if len(corpus) > 1:
        logger.info("word2vec trains on the first corpus file only: %s", corpus[0])
    stat = corpus[0].stat()
    key = f"{corpus[0].resolve()}:{stat.st_size}:{word2vec_dim}:{quick}"
    slug = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = train_word2vec(
        corpus[0],
        Path(cache_dir) / f"word2vec.{slug}.bin",
        dim=word2vec_dim,
        epochs=3 if quick else 5,
        max_sentences=20_000 if quick else None,
        workers=torch.get_num_threads(),
    )
    encoders.word2vec = load_word2vec(path)
    return encoders


# -- running --------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """Everything the report needs about one task (scores in percent)."""

    task: str
    description: str
    metric: str
    eval_split: str
    n_train: int
    n_eval: int
    trivial: float | None = None
    trivial_name: str = ""
    scores: dict[str, list[float]] = field(default_factory=dict)  # representation -> seeds
    dev_scores: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # dev metric by epoch
    layer_weights: list[list[float]] = field(default_factory=list)  # elmo softmax(w) by seed
    by_layer: dict[str, list[float]] = field(default_factory=dict)  # probes and WSD
    seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0
    feature_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def cache_name(task: str, quick: bool) -> str:
    return f"{task}-quick" if quick else task


def load_features(
    prepared: Prepared,
    encoders: Encoders,
    representation: Representation,
    cache_dir: str | Path,
    name: str,
    progress: bool = False,
) -> list[torch.Tensor]:
    """The task's cached features for one representation (only the layers it uses),
    standardized per dimension (see `features.standardize`)."""
    extractor = encoders.get(representation.source)
    with ensure_cache(extractor, prepared.sentences, cache_dir, name, progress) as cache:
        features = standardize(cache.load(representation.layers))
    if representation.concat is None:
        return features
    source, layer = representation.concat
    if source == representation.source and representation.layers is None:
        # Already loaded, and standardize works layer by layer: no second read of the cache.
        extra = [layers[layer : layer + 1] for layers in features]
    else:
        other = encoders.get(source)
        with ensure_cache(other, prepared.sentences, cache_dir, name, progress) as cache:
            extra = standardize(cache.load((layer,)))
    # [n, T, D] + [1, T, D'] -> [n, T, D + D']: the same token vector beside every layer.
    return [
        torch.cat([layers, token.expand(layers.shape[0], -1, -1)], dim=-1)
        for layers, token in zip(features, extra, strict=True)
    ]


def train_once(
    spec: TaskSpec,
    prepared: Prepared,
    features: Sequence[torch.Tensor],
    representation: Representation,
    seed: int,
    budget: Budget,
) -> RunResult:
    """One head on one representation and seed (fold = seed mod n_folds)."""
    train, dev, test = prepared.split(seed)
    mix, output = representation.mix, representation.output
    if output and spec.kind not in ("tagging", "pair"):
        raise ValueError(
            f"{representation.name}: an output mix is built for tagging and pair tasks, "
            f"not {spec.name} ({spec.kind})"
        )
    if spec.kind == "tagging":
        assert prepared.tags is not None
        return train_tagger(
            features, prepared.tags, train, dev, test, mix, budget, seed, output_mix=output
        )
    if spec.kind == "probe":
        assert prepared.tags is not None
        return train_probe(features, prepared.tags, train, dev, test, mix, budget, seed)
    if spec.kind == "classification":
        assert prepared.labels is not None
        return train_classifier(features, prepared.labels, train, dev, test, mix, budget, seed)
    if spec.kind == "pair":
        assert prepared.pairs is not None
        return train_pair_classifier(
            features, prepared.pairs, train, dev, test, mix, budget, seed, output_mix=output
        )
    if spec.kind == "qa":
        assert prepared.qa_examples and prepared.qa_context and prepared.qa_question
        return train_qa(
            features,
            prepared.qa_examples,
            prepared.qa_context,
            prepared.qa_question,
            train,
            dev,
            test,
            mix,
            budget,
            seed,
        )
    raise ValueError(f"task kind {spec.kind!r} has no trainable head")


def trivial_baseline(spec: TaskSpec, prepared: Prepared) -> tuple[float | None, str]:
    """A no-learning reference score on the evaluation split of the first fold."""
    train, _, test = prepared.split(0)
    if spec.kind in ("tagging", "probe"):
        assert prepared.tags is not None
        train_tags = [prepared.tags[i] for i in train]
        most_common = Counter(tag for tags in train_tags for tag in tags).most_common(1)[0][0]
        predicted = word_majority_baseline(
            [prepared.sentences[i] for i in train],
            train_tags,
            [prepared.sentences[i] for i in test],
            default="O" if spec.kind == "tagging" else most_common,
        )
        gold = [prepared.tags[i] for i in test]
        score = entity_f1(gold, predicted) if spec.metric == "F1" else tag_accuracy(gold, predicted)
        return score, "word-majority"
    if spec.kind == "classification":
        assert prepared.labels is not None
        labels = prepared.labels
        return 100 * majority_accuracy([labels[i] for i in train], [labels[i] for i in test]), (
            "majority"
        )
    if spec.kind == "pair":
        assert prepared.pairs is not None
        labels = [p[2] for p in prepared.pairs]
        return 100 * majority_accuracy([labels[i] for i in train], [labels[i] for i in test]), (
            "majority"
        )
    return None, ""


def run_task(
    spec: TaskSpec,
    prepared: Prepared,
    encoders: Encoders,
    seeds: Sequence[int],
    representations: Sequence[str],
    cache_dir: str | Path,
    quick: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = logger.info,
) -> TaskResult:
    """Train and score the task's head for every representation and seed."""
    if spec.kind == "wsd":
        return run_wsd(spec, prepared, encoders, cache_dir, quick, progress, log)
    start = time.perf_counter()
    train, _, test = prepared.split(0)
    result = TaskResult(
        spec.name, spec.description, spec.metric, spec.eval_split, len(train), len(test)
    )
    result.trivial, result.trivial_name = trivial_baseline(spec, prepared)
    result.seeds = list(seeds)
    names = list(representations)
    if spec.kind == "probe":  # every layer on its own, then the mix
        layers = [f"layer{k}" for k in range(encoders.n_bilm_layers)]
        names = [n for n in names if n not in layers and n != "top"]
        names = layers + names
    budget = spec.quick_budget if quick else spec.budget
    chosen = encoders.representations(names)
    # The layer weights reported (the paper's figure 2) are those of the ELMo mix alone.
    mixes = [r.name for r in chosen if r.mix]
    primary_mix = "elmo" if "elmo" in mixes else (mixes[0] if mixes else "")
    for representation in chosen:
        feature_start = time.perf_counter()
        features = load_features(
            prepared, encoders, representation, cache_dir, cache_name(spec.name, quick), progress
        )
        result.feature_seconds += time.perf_counter() - feature_start
        for seed in seeds:
            run = train_once(spec, prepared, features, representation, seed, budget)
            name = representation.name
            result.scores.setdefault(name, []).append(run.score)
            result.dev_scores.setdefault(name, []).append(run.dev_score)
            result.curves.setdefault(name, []).append(run.fit.dev_curve)
            for key, value in run.extra.items():
                result.extra.setdefault(key, {}).setdefault(name, []).append(value)
            if run.layer_weights is not None and name == primary_mix:
                result.layer_weights.append(run.layer_weights)
            log(
                f"{spec.name} {name} seed {seed}: {spec.metric} {run.score:.2f} "
                f"(dev {run.dev_score:.2f}, {len(run.fit.dev_curve)} epochs, "
                f"{run.fit.seconds:.0f}s)"
            )
        del features
    if spec.kind == "probe":
        for k in range(encoders.n_bilm_layers):
            result.by_layer[f"layer{k}"] = result.scores[f"layer{k}"]
        if "elmo" in result.scores:
            result.by_layer["mix"] = result.scores["elmo"]
        result.scores["top"] = result.scores[f"layer{encoders.n_bilm_layers - 1}"]
    result.seconds = time.perf_counter() - start
    return result


def run_wsd(
    spec: TaskSpec,
    prepared: Prepared,
    encoders: Encoders,
    cache_dir: str | Path,
    quick: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = logger.info,
) -> TaskResult:
    """Nearest sense centroid per layer (deterministic: one "seed")."""
    assert prepared.wsd_train is not None and prepared.wsd_test is not None
    assert prepared.wordnet is not None
    start = time.perf_counter()
    train, test = prepared.wsd_train, prepared.wsd_test
    n_instances = sum(len(s.instances) for s in test)
    result = TaskResult(
        spec.name,
        spec.description,
        spec.metric,
        spec.eval_split,
        sum(len(s.instances) for s in train),
        n_instances,
    )
    result.seeds = [0]
    first = wsd_scores(first_sense_predictions(test, prepared.wordnet), test)
    result.trivial, result.trivial_name = first["f1"], "WordNet 1st sense"
    sources = ["bilm"] + (["word2vec"] if encoders.word2vec is not None else [])
    for source in sources:
        extractor = encoders.get(source)
        name = cache_name("wsd", quick)
        centroids = ensure_centroids(extractor, train, cache_dir, f"{name}-semcor", progress)
        with ensure_cache(extractor, [s.tokens for s in test], cache_dir, f"{name}-ALL") as cache:
            features = cache.load()
        predictions = disambiguate(centroids, test, features, prepared.wordnet)
        for view, predicted in predictions.items():
            f1 = wsd_scores(predicted, test)["f1"]
            label = view if source == "bilm" else "word2vec"
            if source == "bilm":
                result.by_layer[view] = [f1]
            result.scores[label] = [f1]
            log(f"wsd {label}: F1 {f1:.2f}")
        if source == "bilm":
            result.notes.append(
                f"{coverage(centroids, test):.1f}% of test instances have a lemma seen in "
                f"SemCor; the rest back off to the WordNet first sense"
            )
    top = f"layer{encoders.n_bilm_layers - 1}"
    result.scores["top"] = result.scores[top]
    result.scores["elmo"] = result.scores.pop("mix")
    result.notes.append("WSD +ELMo is the uniform average of all layers (no training)")
    result.seconds = time.perf_counter() - start
    return result


# -- single heads: save, load, evaluate -----------------------------------------------------


def head_class(kind: str) -> type[TaskHead]:
    classes: dict[str, type[TaskHead]] = {
        "tagging": SequenceTagger,
        "classification": SentenceClassifier,
        "pair": PairClassifier,
        "qa": SpanQA,
        "probe": LinearProbe,
    }
    if kind not in classes:
        raise ValueError(f"task kind {kind!r} has no trainable head")
    return classes[kind]


def save_head(path: str | Path, model: TaskHead, metadata: dict[str, object]) -> None:
    """The head's constructor arguments, weights and metadata (task, representation, ...)."""
    torch.save({"config": model.config, "state_dict": model.state_dict(), **metadata}, path)


def load_head(path: str | Path) -> tuple[TaskHead, dict[str, object]]:
    saved = torch.load(path, weights_only=True)
    spec = TASKS[str(saved["task"])]
    model = head_class(spec.kind)(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    metadata = {k: v for k, v in saved.items() if k not in ("config", "state_dict")}
    return model, metadata


def evaluate_head(
    spec: TaskSpec,
    prepared: Prepared,
    model: TaskHead,
    features: Sequence[torch.Tensor],
    ids: Sequence[int],
) -> dict[str, float]:
    """Score a trained head on examples `ids` ({metric name: percent})."""
    if isinstance(model, SequenceTagger):
        assert prepared.tags is not None
        return {spec.metric: score_tagger(model, features, prepared.tags, ids, "f1")}
    if isinstance(model, LinearProbe):
        assert prepared.tags is not None
        tokens, gold = token_rows(features, prepared.tags, ids)
        return {spec.metric: score_probe(model, tokens, gold)}
    if isinstance(model, SentenceClassifier):
        assert prepared.labels is not None
        return {spec.metric: score_classifier(model, features, prepared.labels, ids)}
    if isinstance(model, PairClassifier):
        assert prepared.pairs is not None
        return {spec.metric: score_pairs(model, features, prepared.pairs, ids)}
    if isinstance(model, SpanQA):
        assert prepared.qa_examples and prepared.qa_context and prepared.qa_question
        scores = score_qa(
            model, features, prepared.qa_examples, prepared.qa_context, prepared.qa_question, ids
        )
        return {"F1": scores["f1"], "EM": scores["em"]}
    raise TypeError(f"cannot evaluate a {type(model).__name__}")

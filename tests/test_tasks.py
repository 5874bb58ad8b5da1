"""Downstream tasks end to end on small slices of the real data sets, with the tiny reference
biLM (P = 16) as the feature extractor: readers reproduce the published counts, the feature
cache round-trips, and each head learns (scores well above a trivial baseline computed here).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

import elmokit
from elmokit.bilm import BiLM
from elmokit.cli import main
from elmokit.tasks import data as D
from elmokit.tasks import suite
from elmokit.tasks.classifier import train_classifier
from elmokit.tasks.common import (
    Budget,
    LayerMixer,
    majority_accuracy,
    pad_features,
    parse_representation,
)
from elmokit.tasks.features import BiLMExtractor, FeatureCache, ensure_cache, standardize
from elmokit.tasks.pair import train_pair_classifier
from elmokit.tasks.probe import train_probe
from elmokit.tasks.qa import best_spans, squad_scores, train_qa
from elmokit.tasks.report import markdown_report, write_report
from elmokit.tasks.tagger import CRF, entity_f1, iob2_allowed_transitions, train_tagger
from elmokit.tasks.wsd import (
    disambiguate,
    first_sense_predictions,
    train_centroids,
    view_names,
    wsd_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bilm(fixture_dir: Path) -> BiLM:
    return elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")


@pytest.fixture(scope="module")
def encoders(bilm: BiLM) -> suite.Encoders:
    return suite.Encoders(BiLMExtractor(bilm))


def features_for(
    sentences: list[list[str]], encoders: suite.Encoders, cache_dir: Path, name: str, rep: str
) -> list[torch.Tensor]:
    prepared = suite.Prepared(sentences=sentences, splits=[])
    representation = parse_representation(rep, encoders.n_bilm_layers)
    return suite.load_features(prepared, encoders, representation, cache_dir, name)


# -- readers --------------------------------------------------------------------------------


def test_reader_counts_match_the_data_readme(data_dir: Path) -> None:
    assert [len(D.read_conll2003(data_dir, s)) for s in ("train", "dev")] == [14041, 3250]
    assert [len(D.read_wnut17(data_dir, s)) for s in ("train", "dev", "test")] == [
        3394,
        1009,
        1287,
    ]
    assert [len(D.read_conll2000(data_dir, s)) for s in ("train", "test")] == [8936, 2012]
    assert [len(D.read_sst(data_dir, s)) for s in ("train", "dev", "test")] == [8544, 1101, 2210]
    sst2 = [len(D.read_sst(data_dir, s, binary=True)) for s in ("train", "dev", "test")]
    assert sst2 == [6920, 872, 1821]
    assert [len(D.read_sick(data_dir, s)) for s in ("train", "dev", "test")] == [4439, 495, 4906]
    assert len(D.read_mr(data_dir)) == 10662 and len(D.read_subj(data_dir)) == 10000
    rte_train = D.read_rte(data_dir)
    assert len(rte_train) == 567 + 400 + 800
    assert set(Counter(p.label for p in rte_train)) == {"TRUE", "FALSE"}
    assert len(D.read_squad(data_dir / "xquad_en" / "xquad.en.json")) == 1190
    ptb = D.read_ptb_sample(data_dir)
    assert len(ptb) == 3914 and sum(len(s.tokens) for s in ptb) == 94084  # no -NONE- traces
    assert "-NONE-" not in {tag for s in ptb for tag in s.tags}


def test_wsd_readers(data_dir: Path) -> None:
    test = D.read_raganato(data_dir, "ALL")
    assert len(test) == 1173
    assert sum(len(s.instances) for s in test) == 7253
    assert all(i.keys for s in test for i in s.instances)
    wordnet = D.read_wordnet_senses(data_dir)
    assert len(wordnet.keys) == 206941
    # every gold key is a WordNet 3.0 key (README), and first senses are sense number 1
    assert all(k in wordnet.keys for s in test for i in s.instances for k in i.keys)
    assert wordnet.first_sense[("art", "n")] == "art%1:06:00::"
    semcor = D.read_semcor(data_dir, wordnet.keys, limit=50)
    assert len(semcor) == 50
    first = semcor[0]
    assert first.tokens[:5] == ["The", "Fulton", "County", "Grand", "Jury"]  # multiword split
    jury = first.instances[0]
    assert jury.positions == [1, 2, 3, 4] and jury.keys == ["group%1:03:00::"]
    # The WordNet-first-sense baseline on ALL is the well-known ~65 F1.
    baseline = wsd_scores(first_sense_predictions(test, wordnet), test)
    assert 60.0 < baseline["f1"] < 70.0


def test_tokenizer_and_trees() -> None:
    text = "Don't pay $1,000.50 for the U.S. one -- it's John's."
    tokens = D.tokenize_with_offsets(text)
    assert [t for t, _, _ in tokens] == [
        "Do", "n't", "pay", "$", "1,000.50", "for", "the", "U.S.", "one", "--",
        "it", "'s", "John", "'s", ".",
    ]  # fmt: skip
    assert all(text[s:e] == t for t, s, e in tokens)
    leaves, label = D.parse_sst_tree("(3 (2 (2 The) (2 -LRB-Rock-RRB-)) (4 (2 rocks) (2 .)))")
    assert label == 3 and leaves == ["The", "-LRB-Rock-RRB-", "rocks", "."]
    (tree,) = D.parse_ptb_trees("( (S (NP-SBJ (-NONE- *-1)) (VP (VB go) (-LRB- -LRB-)) (. .)) )")
    assert tree.tokens == ["go", "(", "."] and tree.tags == ["VB", "-LRB-", "."]


# -- features -------------------------------------------------------------------------------


def test_feature_cache_round_trip(bilm: BiLM, tmp_path: Path) -> None:
    sentences = [["The", "cat", "sat", "."], ["Hello"], ["A", "much", "longer", "one", "here"]]
    extractor = BiLMExtractor(bilm)
    with ensure_cache(extractor, sentences, tmp_path, "toy") as cache:
        assert len(cache) == 3 and cache.n_layers == 3 and cache.dim == 32
        path = cache.path
        direct = bilm(elmokit.batch_to_ids([sentences[2]])).layers[0]  # reset: batch-free
        torch.testing.assert_close(cache[2], direct, atol=2e-2, rtol=1e-2)  # float16 storage
        assert cache.get(1, layers=[2]).shape == (1, 1, 32)
    mtime = path.stat().st_mtime_ns
    ensure_cache(extractor, sentences, tmp_path, "toy").close()  # reused as is
    assert path.stat().st_mtime_ns == mtime
    ensure_cache(extractor, sentences[:2], tmp_path, "toy").close()  # other sentences: rebuilt
    with FeatureCache(path) as cache:
        assert len(cache) == 2
    standardized = torch.cat(standardize([direct, direct[:, :2]]), dim=1)  # [3, 7, 32]
    torch.testing.assert_close(standardized.mean(dim=1), torch.zeros(3, 32), atol=1e-4, rtol=0)


# -- heads ----------------------------------------------------------------------------------


def test_crf_normalises_and_decodes_like_brute_force() -> None:
    torch.manual_seed(0)
    crf = CRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    sequences = [torch.tensor([[a, b, c]]) for a in range(3) for b in range(3) for c in range(3)]
    log_probs = torch.stack([crf.log_likelihood(emissions, s, mask)[0] for s in sequences])
    torch.testing.assert_close(log_probs.exp().sum(), torch.tensor(1.0))
    assert crf.viterbi(emissions, mask)[0] == sequences[int(log_probs.argmax())][0].tolist()
    allowed = iob2_allowed_transitions(["O", "B-PER", "I-PER"])
    assert allowed is not None and not allowed[0, 2] and not allowed[3, 2] and allowed[1, 2]


def test_concatenated_representation_puts_layer0_beside_every_layer(
    data_dir: Path, encoders: suite.Encoders, tmp_path: Path
) -> None:
    sentences = suite.prepare("ner", data_dir, quick=True).sentences[:40]
    mixed = features_for(sentences, encoders, tmp_path, "ner", "elmo")
    token = features_for(sentences, encoders, tmp_path, "ner", "layer0")
    both = features_for(sentences, encoders, tmp_path, "ner", "layer0+elmo")
    n_layers, dim = mixed[0].shape[0], mixed[0].shape[2]
    for layers, alone, together in zip(mixed, token, both, strict=True):
        assert together.shape == (n_layers, layers.shape[1], 2 * dim)
        torch.testing.assert_close(together[..., :dim], layers)
        for k in range(n_layers):
            torch.testing.assert_close(together[k, :, dim:], alone[0])
    # Weights summing to one: the mix of the extended layers is [mix ; gamma * layer0].
    head = LayerMixer(n_layers, mix=True)
    padded, mask = pad_features(both[:3])
    out = head(padded, mask)
    torch.testing.assert_close(out[..., dim:], pad_features(token[:3])[0][:, 0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no word2vec features"):
        features_for(sentences, encoders, tmp_path, "ner", "word2vec+elmo")


def test_tagger_learns_ner(data_dir: Path, encoders: suite.Encoders, tmp_path: Path) -> None:
    prepared = suite.prepare("ner", data_dir, quick=True)
    assert prepared.tags is not None
    features = features_for(prepared.sentences, encoders, tmp_path, "ner", "elmo")
    train, dev, test = prepared.split(0)
    budget = suite.TASKS["ner"].quick_budget
    run = train_tagger(features, prepared.tags, train, dev, test, True, budget, seed=0)
    # Chance: tags drawn from the training tag distribution.
    rng = random.Random(0)
    tag_counts = Counter(tag for i in train for tag in prepared.tags[i])
    labels, weights = zip(*tag_counts.items(), strict=True)
    chance = [rng.choices(labels, weights, k=len(prepared.tags[i])) for i in test]
    chance_f1 = entity_f1([prepared.tags[i] for i in test], chance)
    assert chance_f1 < 5.0
    assert run.score > chance_f1 + 15.0, (run.score, chance_f1)
    assert run.fit.train_loss[-1] < 0.7 * run.fit.train_loss[0]
    assert run.layer_weights is not None and sum(run.layer_weights) == pytest.approx(1.0)


def test_output_mix_variant_learns_and_rebuilds(
    data_dir: Path, encoders: suite.Encoders, tmp_path: Path
) -> None:
    representation = parse_representation("elmo+output", encoders.n_bilm_layers)
    assert representation.mix and representation.output and representation.name == "elmo+output"
    with pytest.raises(ValueError, match="needs a mixing representation"):
        parse_representation("layer0+output", encoders.n_bilm_layers)
    prepared = suite.prepare("ner", data_dir, quick=True)
    assert prepared.tags is not None
    features = features_for(prepared.sentences, encoders, tmp_path, "ner", "elmo")
    train, dev, test = prepared.split(0)
    budget = suite.TASKS["ner"].quick_budget
    run = train_tagger(
        features, prepared.tags, train, dev, test, True, budget, seed=0, output_mix=True
    )
    assert run.score > 15.0 and run.model is not None
    head = run.model
    assert head.output_mixer is not None and head.output_mixer.scalar_mix is not None
    # Its own weights, trained apart from the input mix.
    output_w = head.output_mixer.scalar_mix.weights().detach()
    assert not torch.allclose(output_w, torch.zeros_like(output_w))
    assert not torch.allclose(output_w, head.mixer.scalar_mix.weights().detach())
    rebuilt = type(head)(**head.config)
    rebuilt.load_state_dict(head.state_dict())
    layers, mask = pad_features(features[:4])
    head.eval()
    rebuilt.eval()
    torch.testing.assert_close(rebuilt.emissions(layers, mask), head.emissions(layers, mask))
    with pytest.raises(ValueError, match="built for tagging and pair tasks"):
        suite.train_once(suite.TASKS["sst5"], prepared, features, representation, 0, budget)


def test_classifier_beats_majority_on_subj(
    data_dir: Path, encoders: suite.Encoders, tmp_path: Path
) -> None:
    subj = D.read_subj(data_dir)
    examples = D.stratified_slice(subj, [s.label for s in subj], 900, seed=1)
    random.Random(0).shuffle(examples)
    labels = [e.label for e in examples]
    features = features_for([e.tokens for e in examples], encoders, tmp_path, "subj", "layer0")
    train, dev, test = list(range(600)), list(range(600, 700)), list(range(700, 900))
    budget = Budget(epochs=5, batch_size=16, lr=3e-3, patience=5)
    run = train_classifier(features, labels, train, dev, test, False, budget, seed=0)
    majority = 100 * majority_accuracy([labels[i] for i in train], [labels[i] for i in test])
    assert run.score > majority + 8.0, (run.score, majority)


def test_pair_model_learns_alignment(
    data_dir: Path, encoders: suite.Encoders, tmp_path: Path
) -> None:
    """ESIM on a task that needs the alignment: is the hypothesis the premise with a word
    replaced (SICK sentences, real features)?"""
    sentences = [p.premise for p in D.read_sick(data_dir, "train")[:240]]
    rng = random.Random(0)
    vocabulary = sorted({t for s in sentences for t in s})
    pairs_text: list[tuple[list[str], list[str], str]] = []
    for sentence in sentences:
        changed = list(sentence)
        changed[rng.randrange(len(changed))] = rng.choice(vocabulary)
        same = rng.random() < 0.5
        pairs_text.append((sentence, list(sentence) if same else changed, str(same)))
    all_sentences = [s for a, b, _ in pairs_text for s in (a, b)]
    features = features_for(all_sentences, encoders, tmp_path, "pairs", "elmo")
    pairs = [(2 * i, 2 * i + 1, label) for i, (_, _, label) in enumerate(pairs_text)]
    train, dev, test = list(range(160)), list(range(160, 200)), list(range(200, 240))
    budget = Budget(epochs=6, batch_size=16, lr=3e-3, patience=6)
    run = train_pair_classifier(features, pairs, train, dev, test, True, budget, seed=0)
    majority = 100 * majority_accuracy([pairs[i][2] for i in train], [pairs[i][2] for i in test])
    assert run.score > majority + 15.0, (run.score, majority)


def test_pos_probe_beats_majority_tag(
    data_dir: Path, encoders: suite.Encoders, tmp_path: Path
) -> None:
    prepared = suite.prepare("pos", data_dir, quick=True)
    assert prepared.tags is not None
    train, dev, test = prepared.split(0)
    tags = prepared.tags
    majority = 100 * majority_accuracy(
        [t for i in train for t in tags[i]], [t for i in test for t in tags[i]]
    )
    features = features_for(prepared.sentences, encoders, tmp_path, "pos", "layer0")
    budget = Budget(epochs=6, batch_size=64, lr=1e-2, patience=6, dropout=0.0)
    run = train_probe(features, tags, train, dev, test, False, budget, seed=0)
    assert majority < 20.0
    assert run.score > majority + 25.0, (run.score, majority)


def test_qa_metrics_and_training_runs(
    data_dir: Path, encoders: suite.Encoders, tmp_path: Path
) -> None:
    assert squad_scores(["the Panthers", "308"], [["Panthers"], ["300", "8"]]) == {
        "em": 50.0,
        "f1": 50.0,
    }
    start = torch.tensor([[-9.0, 5.0, 1.0, -9.0]])
    end = torch.tensor([[9.0, 0.0, 2.0, 0.0]])
    assert best_spans(start, end) == [(1, 2)]  # end >= start even if an earlier end scores more
    prepared = suite.prepare("qa", data_dir, quick=True)
    assert prepared.qa_examples and prepared.qa_context and prepared.qa_question
    features = features_for(prepared.sentences, encoders, tmp_path, "qa", "elmo")
    train, dev, test = prepared.split(0)
    budget = Budget(epochs=1, batch_size=16, hidden=16)
    run = train_qa(
        features,
        prepared.qa_examples,
        prepared.qa_context,
        prepared.qa_question,
        train[:80],
        dev[:20],
        test[:30],
        True,
        budget,
        seed=0,
    )
    assert 0.0 <= run.extra["em"] <= run.score <= 100.0


def test_wsd_nearest_centroid(data_dir: Path, bilm: BiLM) -> None:
    wordnet = D.read_wordnet_senses(data_dir)
    semcor = D.read_semcor(data_dir, wordnet.keys, limit=300)
    extractor = BiLMExtractor(bilm)
    centroids = train_centroids(extractor, semcor)
    assert centroids.vectors.shape[1:] == (3, 32)
    test = D.read_raganato(data_dir, "semeval2007")[:40]
    predictions = disambiguate(centroids, test, extractor([s.tokens for s in test]), wordnet)
    assert list(predictions) == view_names(3) == ["layer0", "layer1", "layer2", "mix"]
    # A lemma seen in training gets one of its training senses; unseen ones the first sense.
    for sentence in test:
        for instance in sentence.instances:
            predicted = predictions["layer1"][instance.instance_id]
            rows = centroids.by_lemma.get((instance.lemma, instance.pos))
            if rows:
                assert predicted in {centroids.keys[r] for r in rows}
            else:
                assert predicted == wordnet.first_sense.get((instance.lemma, instance.pos))
    for predicted in predictions.values():
        assert 20.0 < wsd_scores(predicted, test)["f1"] <= 100.0


# -- report and command line ----------------------------------------------------------------


def test_report_table_and_plots(tmp_path: Path) -> None:
    result = suite.TaskResult("ner", "CoNLL-2003", "F1", "dev", 500, 200, 35.0, "word-majority")
    result.scores = {"layer0": [80.0, 82.0], "word2vec": [78.0, 79.0], "elmo": [85.0, 86.0]}
    result.curves = {"elmo": [[70.0, 85.0], [75.0, 86.0]], "layer0": [[60.0, 81.0]]}
    result.layer_weights = [[0.2, 0.3, 0.5], [0.25, 0.25, 0.5]]
    probe = suite.TaskResult("pos", "PTB probe", "acc", "test", 500, 200, 13.0, "majority")
    probe.scores = {"layer0": [90.0], "elmo": [95.0]}
    probe.by_layer = {"layer0": [90.0], "layer1": [96.0], "layer2": [94.0], "mix": [95.0]}
    report = write_report([result, probe], tmp_path, {"model": "test"})
    text = report.read_text()
    assert "| ner | F1 | dev (200) | 35.00 (word-majority) | 78.50 ± 0.71 | 81.00 ± 1.41" in text
    assert "**85.50 ± 0.71** | +4.50 | +7.00 | 2 |" in text
    assert "| pos, paper's biLM | acc | — | 97.3 | 96.8 | — |" in text
    assert "- ner: yes, by +4.50 (largest seed std 1.41; the rule: more than twice that)." in text
    assert "- pos: yes, by +5.00 (deterministic, one run each)." in text
    for plot in ("layer_weights.png", "learning_curves.png", "by_layer.png"):
        assert (tmp_path / plot).stat().st_size > 1000 and f"({plot})" in text
    assert json.loads((tmp_path / "results.json").read_text())["tasks"][0]["task"] == "ner"

    # With [layer0; ELMo] (and [word2vec; ELMo]) run, +ELMo is the concatenation, the mix
    # alone gets its own column, and each delta is against the matching baseline.
    result.scores.update({"layer0+elmo": [88.0, 88.0], "word2vec+elmo": [84.0, 86.0]})
    text = markdown_report([result], {"model": "test"})
    assert "| ELMo mix alone | [word2vec; ELMo] | +ELMo [layer0; mix] | Δ vs layer0 |" in text
    assert "| 85.50 ± 0.71 | 85.00 ± 1.41 | **88.00 ± 0.00** | +7.00 | +6.50 | 2 |" in text
    result.scores["layer0+elmo+output"] = [89.0, 90.0]
    text = markdown_report([result], {})
    assert "| [word2vec; ELMo] | layer0+elmo+output | +ELMo [layer0; mix] |" in text
    assert "| 85.00 ± 1.41 | 89.50 ± 0.71 | **88.00 ± 0.00** |" in text
    result.scores["layer0+elmo"] = [81.0, 83.0]
    result.scores["layer0+elmo"] = [83.0, 84.0]  # +2.50: above one std, below two
    no = "- ner: **no**, +2.50 (largest seed std 1.41; the rule: more than twice that)."
    assert no in markdown_report([result], {})


def test_cli_train_then_evaluate(
    fixture_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "--model", str(fixture_dir / "options.json"),
        "--weights", str(fixture_dir / "lm_weights.hdf5"),
        "--data-dir", str(data_dir),
        "--cache-dir", str(tmp_path / "cache"),
        "--threads", "1",
    ]  # fmt: skip
    head = tmp_path / "pos-elmo"
    argv = ["task", "train", "pos", "--quick", "--representation", "elmo", "--out", str(head)]
    assert main(argv + common) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (head / "head.pt").exists() and trained["task"] == "pos"
    assert main(["task", "evaluate", str(head), *common]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["acc"] == pytest.approx(trained["score"])
    assert main(["task", "train", "nope", "--out", str(head), *common]) == 2

"""Embedder (bucketing, dedupe, long sentences) and the feature-file pieces, in process."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elmokit
from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.embedder import Embedder
from elmokit.io.features import (
    PROGRESS_GROUP,
    FeatureReader,
    FeatureSpec,
    FeatureWriter,
    parse_layers,
    parse_mix,
    partial_path,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(fixture_dir: Path) -> BiLM:
    return elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")


@pytest.fixture(scope="module")
def ptb(data_dir: Path) -> list[list[str]]:
    lines = (data_dir / "ptb_mikolov" / "ptb.valid.txt").read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines[:160]]


@pytest.fixture(scope="module")
def wiki_tokens(data_dir: Path) -> list[str]:
    return (data_dir / "wikitext2" / "wiki.valid.tokens").read_text(encoding="utf-8").split()


def reference(model: BiLM, sentences: list[list[str]]) -> list[np.ndarray]:
    """The biLM run on the sentences as given, in order, without bucketing."""
    with torch.inference_mode():
        layers = model(batch_to_ids(sentences)).layers.numpy()
    return [layers[row, :, : len(sentence)] for row, sentence in enumerate(sentences)]


def test_embed_sentence_equals_bilm_layers(model: BiLM, ptb: list[list[str]]) -> None:
    embedder = Embedder(model)
    for sentence in (ptb[0], ptb[5], ["Hello"]):
        ours = embedder.embed_sentence(sentence)
        (expected,) = reference(model, [sentence])
        assert ours.shape == (3, len(sentence), 32) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, expected)
    assert embedder.embed_sentence([]).shape == (3, 0, 32)
    # A str is a whitespace-tokenised sentence.
    np.testing.assert_array_equal(
        embedder.embed_sentence(" ".join(ptb[0])), embedder.embed_sentence(ptb[0])
    )


def test_bucketing_preserves_order(model: BiLM, ptb: list[list[str]]) -> None:
    embedder = Embedder(model, batch_size=8, window_batches=3)  # windows of 24 sentences
    outputs = embedder.embed_sentences(iter(ptb))
    assert not isinstance(outputs, list)  # lazy
    outputs_list = list(outputs)
    assert len(outputs_list) == len(ptb)
    expected: list[np.ndarray] = []
    for start in range(0, len(ptb), 40):  # plain batches in input order
        expected.extend(reference(model, ptb[start : start + 40]))
    for ours, theirs in zip(outputs_list, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_duplicates_are_computed_once(model: BiLM, ptb: list[list[str]]) -> None:
    embedder = Embedder(model, batch_size=4)
    rows_run: list[int] = []
    original = embedder._forward

    def counting(sentences: list[list[str]]) -> torch.Tensor:
        rows_run.append(len(sentences))
        return original(sentences)

    embedder._forward = counting  # type: ignore[method-assign]
    sentences = [ptb[1], ptb[2], ptb[1], ptb[3], ptb[2], ptb[1]]
    outputs = list(embedder.embed_sentences(sentences))
    assert sum(rows_run) == 3
    np.testing.assert_array_equal(outputs[0], outputs[2])
    np.testing.assert_array_equal(outputs[0], outputs[5])
    np.testing.assert_array_equal(outputs[1], outputs[4])
    expected = reference(model, [ptb[1], ptb[2], ptb[3]])
    np.testing.assert_array_equal(outputs[3], expected[2])
    outputs[0][:] = 0  # each caller owns its array
    assert np.abs(outputs[2]).max() > 0


def test_long_sentences_run_in_exact_time_chunks(model: BiLM, wiki_tokens: list[str]) -> None:
    sentences = [wiki_tokens[:900], wiki_tokens[900:1300], wiki_tokens[50:60]]
    expected = reference(model, sentences)
    # 16 rows x 900 steps is far over 256 tokens: the LSTM runs in chunks of 16 steps.
    embedder = Embedder(model, max_tokens_per_batch=256)
    for ours, theirs in zip(embedder.embed_sentences(sentences), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_max_sentence_tokens_splits_into_independent_pieces(
    model: BiLM, wiki_tokens: list[str]
) -> None:
    tokens = wiki_tokens[:250]
    ours = Embedder(model, max_sentence_tokens=100).embed_sentence(tokens)
    pieces = reference(model, [tokens[:100], tokens[100:200], tokens[200:]])
    np.testing.assert_array_equal(ours, np.concatenate(pieces, axis=1))


def test_moses_tokenisation_of_raw_text(model: BiLM) -> None:
    embedder = Embedder(model, tokenize="moses")
    assert embedder.tokenize("Hello, world! It's 3.50$ & more.") == [
        "Hello", ",", "world", "!", "It", "'s", "3.50", "$", "&", "more", ".",
    ]
    np.testing.assert_array_equal(
        embedder.embed_sentence("Hello, world!"),
        reference(model, [["Hello", ",", "world", "!"]])[0],
    )


def test_rejects_carried_state_and_a_bare_string(fixture_dir: Path, model: BiLM) -> None:
    carry = elmokit.load(
        fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5", state_policy="carry"
    )
    with pytest.raises(ValueError, match="reset"):
        Embedder(carry)
    with pytest.raises(TypeError, match="embed_sentence"):
        Embedder(model).embed_sentences("not a list of sentences")


def test_feature_spec_reductions() -> None:
    layers = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(FeatureSpec("all").reduce(layers), layers)
    np.testing.assert_array_equal(FeatureSpec("top").reduce(layers), layers[2])
    np.testing.assert_allclose(FeatureSpec("average").reduce(layers), layers.mean(0), atol=1e-7)
    np.testing.assert_array_equal(FeatureSpec("all", layers=(0, 2)).reduce(layers), layers[[0, 2]])
    np.testing.assert_allclose(
        FeatureSpec("average", layers=(1, 2)).reduce(layers), (layers[1] + layers[2]) / 2, atol=1e-7
    )
    weights, gamma = parse_mix("1,0,-1,0.5", 3)
    assert weights == (1.0, 0.0, -1.0) and gamma == 0.5
    w = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
    expected = 0.5 * (w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2])
    mixed = FeatureSpec("mix", mix=weights, gamma=gamma).reduce(layers)
    np.testing.assert_allclose(mixed, expected, atol=1e-6)
    assert parse_layers("0,2") == (0, 2)
    with pytest.raises(ValueError, match="weights"):
        parse_mix("1,2", 3)
    with pytest.raises(ValueError, match="does not exist"):
        FeatureSpec("all", layers=(0, 3)).check_layers(3)
    with pytest.raises(ValueError):
        FeatureSpec("top", layers=(1,))


def test_writer_resume_drops_lines_after_the_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    spec = FeatureSpec("top")
    vectors = [np.full((n, 4), n, dtype=np.float32) for n in range(1, 9)]
    writer = FeatureWriter(path, spec)
    for index in range(3):
        writer.write(index, f"s{index}", vectors[index])
    writer.checkpoint(3)
    for index in range(3, 5):  # written but never checkpointed: lost in a crash
        writer.write(index, f"s{index}", vectors[index])
    writer.close()
    assert not path.exists() and partial_path(path).exists()

    with pytest.raises(ValueError, match="different output options"):
        FeatureWriter(path, FeatureSpec("all"), resume=True)
    resumed = FeatureWriter(path, spec, resume=True)
    assert resumed.completed_lines == 3 and resumed.last_sentence() == (2, "s2")
    with h5py.File(partial_path(path), "r") as partial:
        assert sorted(k for k in partial if k.isdigit()) == ["0", "1", "2"]
    for index in range(3, 8):
        resumed.write(index, "s1" if index == 6 else f"s{index}", vectors[index])
    assert resumed.finish(8) == path and not partial_path(path).exists()

    with h5py.File(path, "r") as file:
        assert PROGRESS_GROUP not in file
    with FeatureReader(path) as reader:
        assert len(reader) == 8
        np.testing.assert_array_equal(reader[7], vectors[7])
        # A repeated sentence maps to its last line, as in AllenNLP.
        assert reader.sentence_to_index()["s1"] == 6
        assert reader.spec == spec


def test_encode_gives_pooled_sentence_vectors(model: BiLM) -> None:
    embedder = Embedder(model)
    sentences = [["The", "cat", "sat", "."], ["Dogs", "bark"], []]
    vectors = embedder.encode(sentences)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    for row, tokens in enumerate(sentences[:2]):
        layers = embedder.embed_sentence(tokens)  # [L+1, T, D]
        np.testing.assert_allclose(vectors[row], layers.mean(axis=0).mean(axis=0), atol=1e-6)
        top_max = embedder.encode([tokens], pooling="max", layer="top")[0]
        np.testing.assert_allclose(top_max, layers[-1].max(axis=0), atol=1e-6)
        first = embedder.encode([tokens], pooling="first", layer=0)[0]
        np.testing.assert_allclose(first, layers[0, 0], atol=1e-6)
    assert not vectors[2].any()  # an empty sentence: zeros
    one = embedder.encode("The cat sat .", normalize_embeddings=True)
    assert one.shape == (embedder.dim,) and abs(float(np.linalg.norm(one)) - 1.0) < 1e-5
    with pytest.raises(ValueError, match="pooling"):
        embedder.encode(sentences, pooling="cls")
    with pytest.raises(ValueError, match="out of range"):
        embedder.encode(sentences, layer=5)

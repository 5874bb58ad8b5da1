"""AllenNLP-style ELMo tests on elmokit: the data classes AllenNLP's tests index their inputs
with (Token, TextField, Instance, Vocabulary, Batch, the two indexers, AllennlpDataset,
PyTorchDataLoader), the AllenNlpTestCase base class, and `allennlp.commands.main` driven by
sys.argv, all from elmokit.compat."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import h5py
import numpy
import pytest
import torch

from elmokit.compat.allennlp import (
    ConfigurationError,
    Elmo,
    ElmoEmbedder,
    ScalarMix,
    _ElmoBiLm,
    _ElmoCharacterEncoder,
    main,
    remove_sentence_boundaries,
    tiny_value_of_dtype,
)
from elmokit.compat.allennlp_data import (
    AllennlpDataset,
    Batch,
    ELMoTokenCharactersIndexer,
    Instance,
    PyTorchDataLoader,
    SingleIdTokenIndexer,
    TextField,
    Token,
    Vocabulary,
)
from elmokit.compat.allennlp_testing import AllenNlpTestCase

pytestmark = pytest.mark.usefixtures("one_thread", "fixture_dir")


class ElmoFixtures(AllenNlpTestCase):
    def setup_method(self) -> None:
        super().setup_method()
        fixtures = self.FIXTURES_ROOT / "elmo"
        self.options_file = str(fixtures / "options.json")
        self.weight_file = str(fixtures / "lm_weights.hdf5")
        self.fixtures = fixtures

    def expected_top_layers(self) -> tuple[list[list[str]], list[list[numpy.ndarray]]]:
        sentences = json.loads((self.fixtures / "sentences.json").read_text())
        expected = []
        for k in range(len(sentences)):
            with h5py.File(self.fixtures / f"lm_embeddings_{k}.hdf5", "r") as handle:
                expected.append(
                    [
                        numpy.concatenate([handle[str(i)][0], handle[str(i)][1]], -1)
                        for i in range(10)
                    ]
                )
        return sentences, expected

    @staticmethod
    def indexed(batch: list[list[str]]) -> tuple[Vocabulary, dict]:
        instances = [
            Instance(
                {
                    "elmo": TextField(
                        [Token(t) for t in sentence],
                        {
                            "character_ids": ELMoTokenCharactersIndexer(),
                            "tokens": SingleIdTokenIndexer(),
                        },
                    )
                }
            )
            for sentence in batch
        ]
        dataset = Batch(instances)
        vocab = Vocabulary.from_instances(instances)
        dataset.index_instances(vocab)
        return vocab, dataset.as_tensor_dict()["elmo"]


class TestBiLmThroughTheDataApi(ElmoFixtures):
    def test_top_layer_matches_the_reference_through_a_data_loader(self) -> None:
        sentences, expected = self.expected_top_layers()
        bilm = _ElmoBiLm(self.options_file, self.weight_file)
        instances = [
            Instance(
                {
                    "elmo": TextField(
                        [Token(t) for t in s.split()],
                        {"character_ids": ELMoTokenCharactersIndexer()},
                    )
                }
            )
            for batch in zip(*sentences, strict=True)
            for s in batch
        ]
        loader = PyTorchDataLoader(AllennlpDataset(instances, Vocabulary()), 3)
        for i, batch in enumerate(loader):
            output = bilm(batch["elmo"]["character_ids"]["elmo_tokens"])
            top, mask = remove_sentence_boundaries(output["activations"][2], output["mask"])
            lengths = mask.numpy().sum(axis=1)
            assert lengths.tolist() == [len(sentences[k][i].split()) for k in range(3)]
            for k in range(3):
                assert numpy.allclose(
                    top[k, : lengths[k]].detach().numpy(), expected[k][i], atol=1e-6
                )

    def test_cached_words_equal_the_char_cnn(self) -> None:
        vocab, tensors = self.indexed(
            [["This", "is", "a", "sentence"], ["Here", "'s", "one"], ["Another", "one"]]
        )
        words = list(vocab.get_token_to_index_vocabulary("tokens").keys())
        assert words[:2] == ["@@PADDING@@", "@@UNKNOWN@@"] and words[2] == "one"  # by count
        chars = tensors["character_ids"]["elmo_tokens"]
        no_cache = _ElmoBiLm(self.options_file, self.weight_file).eval()(chars, chars)
        cached = _ElmoBiLm(self.options_file, self.weight_file, vocab_to_cache=words).eval()(
            chars, tensors["tokens"]["tokens"]
        )
        for a, b in zip(cached["activations"], no_cache["activations"], strict=True):
            numpy.testing.assert_array_almost_equal(
                a.detach().numpy(), b.detach().numpy(), decimal=6
            )
        _, oov = self.indexed([["This", "is", "OOV"], ["so", "is", "this"]])
        _ElmoBiLm(self.options_file, self.weight_file, vocab_to_cache=words)(
            oov["character_ids"]["elmo_tokens"], oov["tokens"]["tokens"]
        )

    def test_higher_dimensional_input_with_cache(self) -> None:
        vocab, tensors = self.indexed(
            [["This", "is", "a", "sentence"], ["Here", "'s", "one"], ["Another", "one"]]
        )
        words = list(vocab.get_token_to_index_vocabulary("tokens").keys())
        chars, ids = tensors["character_ids"]["elmo_tokens"], tensors["tokens"]["tokens"]
        single = Elmo(self.options_file, self.weight_file, 1, vocab_to_cache=words).eval()(
            chars, ids
        )
        elmo = Elmo(self.options_file, self.weight_file, 1, vocab_to_cache=words).eval()
        expanded = elmo(torch.stack([chars] * 4, dim=1), torch.stack([ids] * 4, dim=1))
        for part in torch.split(expanded["elmo_representations"][0], 1, dim=1):
            numpy.testing.assert_array_almost_equal(
                part.squeeze(1).detach().numpy(), single["elmo_representations"][0].detach().numpy()
            )


class TestCharacterEncoderThroughTheIndexer(ElmoFixtures):
    def test_token_vectors_match_the_reference(self) -> None:
        words = (self.fixtures / "vocab_test.txt").read_text().strip().split("\n")
        indexer = ELMoTokenCharactersIndexer()
        indices = indexer.tokens_to_indices([Token(w) for w in words], Vocabulary())
        batch = torch.stack(
            [
                indexer.as_padded_tensor_dict(
                    {"elmo_tokens": indices["elmo_tokens"][k * 50 : (k + 1) * 50]},
                    {"elmo_tokens": 50},
                )["elmo_tokens"]
                for k in range(10)
            ]
        )
        output = _ElmoCharacterEncoder(self.options_file, self.weight_file)(batch)
        actual = remove_sentence_boundaries(output["token_embedding"], output["mask"])[0]
        actual = actual.detach().numpy().reshape(-1, actual.shape[-1])
        with h5py.File(self.fixtures / "elmo_token_embeddings.hdf5", "r") as handle:
            assert numpy.allclose(actual[: len(words)], handle["embedding"][...], atol=1e-6)

    def test_layer_norm_tiny_value(self) -> None:
        assert tiny_value_of_dtype(torch.float) == 1e-13
        assert tiny_value_of_dtype(torch.half) == 1e-4
        assert ScalarMix(3, do_layer_norm=True).do_layer_norm


class TestElmoCommandThroughMain(ElmoFixtures):
    def run_main(self, *flags: str) -> None:
        saved = sys.argv
        sys.argv = ["run.py", "elmo", self.sentences, self.output, *flags]
        sys.argv += ["--options-file", self.options_file, "--weight-file", self.weight_file]
        try:
            main()
        finally:
            sys.argv = saved

    def test_all_top_average_and_errors(self) -> None:
        sentence = "Michael went to the store to buy some eggs ."
        self.sentences = str(self.TEST_DIR / "sentences.txt")
        self.output = str(self.TEST_DIR / "output.hdf5")
        Path(self.sentences).write_text(sentence)
        expected = ElmoEmbedder(options_file=self.options_file, weight_file=self.weight_file)
        want = expected.embed_sentence(sentence.split())
        for flag, shape, value in (
            ("--all", (3, 10, 32), want),
            ("--top", (10, 32), want[2]),
            ("--average", (10, 32), (want[0] + want[1] + want[2]) / 3),
        ):
            self.run_main(flag)
            assert os.path.exists(self.output)
            with h5py.File(self.output, "r") as handle:
                assert set(handle.keys()) == {"0", "sentence_to_index"}
                assert handle.get("0").shape == shape
                numpy.testing.assert_allclose(handle.get("0"), value, rtol=1e-4)
        Path(self.sentences).write_text("A\n\n\nB\n")
        with pytest.raises(ConfigurationError):
            self.run_main("--all")


class OldStyleElmoCase(AllenNlpTestCase):
    """allennlp 0.9's tests set themselves up in unittest's setUp."""

    def setUp(self) -> None:  # noqa: N802
        super().setUp()
        self.options_file = str(self.FIXTURES_ROOT / "elmo" / "options.json")


class TestOldStyleSetUp(OldStyleElmoCase):
    def test_setup_ran(self) -> None:
        assert Path(self.options_file).exists() and self.TEST_DIR.is_dir()

"""The calls AllenNLP's own ELMo tests make (tests/modules/elmo_test.py and
tests/modules/scalar_mix_test.py of allennlp 2.10, allennlp/tests/commands/elmo_test.py of 0.9),
made on elmokit.compat.allennlp with AllenNLP's fixture files and tolerances. AllenNLP's data
classes (Token, TextField, the indexers) are replaced by batch_to_ids, which gives the same ids."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy
import pytest
import torch

from elmokit.compat.allennlp import (
    ConfigurationError,
    Elmo,
    ElmoEmbedder,
    ElmoTokenEmbedder,
    ScalarMix,
    _ElmoBiLm,
    _ElmoCharacterEncoder,
    batch_to_ids,
    remove_sentence_boundaries,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(fixture_dir: Path) -> tuple[str, str]:
    return str(fixture_dir / "options.json"), str(fixture_dir / "lm_weights.hdf5")


def load_sentences_embeddings(
    fixture_dir: Path,
) -> tuple[list[list[str]], list[list[numpy.ndarray]]]:
    """sentences[k][i] and its expected top layer [T, 32]: sentence i of batch k (batch size 3)."""
    sentences = json.loads((fixture_dir / "sentences.json").read_text())
    expected = []
    for k in range(len(sentences)):
        with h5py.File(fixture_dir / f"lm_embeddings_{k}.hdf5", "r") as handle:
            expected.append(
                [
                    numpy.concatenate([handle[str(i)][0], handle[str(i)][1]], axis=-1)
                    for i in range(10)
                ]
            )
    return sentences, expected


def vocab_and_ids(batch: list[list[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """What AllenNLP's Vocabulary + SingleIdTokenIndexer give: padding, OOV, then the words."""
    words = ["@@PADDING@@", "@@UNKNOWN@@"] + sorted({w for s in batch for w in s})
    index = {w: i for i, w in enumerate(words)}
    word_ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
    for row, sentence in enumerate(batch):
        word_ids[row, : len(sentence)] = torch.tensor([index[w] for w in sentence])
    return words, batch_to_ids(batch), word_ids


# -- _ElmoBiLm -------------------------------------------------------------------------------


def test_elmo_bilm(fixture_dir: Path, files: tuple[str, str]) -> None:
    sentences, expected_lm_embeddings = load_sentences_embeddings(fixture_dir)
    elmo_bilm = _ElmoBiLm(*files)
    for i, batch in enumerate(zip(*sentences, strict=True)):
        lm_embeddings = elmo_bilm(batch_to_ids([s.split() for s in batch]))
        top_layer_embeddings, mask = remove_sentence_boundaries(
            lm_embeddings["activations"][2], lm_embeddings["mask"]
        )
        lengths = mask.data.numpy().sum(axis=1)
        assert lengths.tolist() == [len(s.split()) for s in batch]
        for k in range(3):
            assert numpy.allclose(
                top_layer_embeddings[k, : lengths[k], :].data.numpy(),
                expected_lm_embeddings[k][i],
                atol=1.0e-6,
            )


def test_elmo_char_cnn_cache_does_not_raise_error_for_uncached_words(
    files: tuple[str, str],
) -> None:
    sentences = [["This", "is", "OOV"], ["so", "is", "this"]]
    in_vocab_sentences = [["here", "is"], ["a", "vocab"]]
    _, oov_chars, _ = vocab_and_ids(sentences)
    words, in_vocab_chars, in_vocab_words = vocab_and_ids(in_vocab_sentences)
    oov_words = torch.tensor([[len(words) + 5, 2, 1], [3, 2, len(words) + 9]])
    elmo_bilm = _ElmoBiLm(*files, vocab_to_cache=words)
    elmo_bilm(in_vocab_chars, in_vocab_words)
    fallback = elmo_bilm(oov_chars, oov_words)  # ids outside the cache: the char ids are used
    assert fallback["mask"].shape == (2, 5)


def test_elmo_bilm_can_cache_char_cnn_embeddings(files: tuple[str, str]) -> None:
    sentences = [["This", "is", "a", "sentence"], ["Here", "'s", "one"], ["Another", "one"]]
    words, chars, word_ids = vocab_and_ids(sentences)
    elmo_bilm = _ElmoBiLm(*files).eval()
    no_cache = elmo_bilm(chars, chars)
    elmo_bilm = _ElmoBiLm(*files, vocab_to_cache=words).eval()  # stateful: a fresh one
    cached = elmo_bilm(chars, word_ids)
    numpy.testing.assert_array_almost_equal(no_cache["mask"].numpy(), cached["mask"].numpy())
    for activation_cached, activation in zip(
        cached["activations"], no_cache["activations"], strict=True
    ):
        numpy.testing.assert_array_almost_equal(
            activation_cached.detach().numpy(), activation.detach().numpy(), decimal=6
        )


# -- Elmo ------------------------------------------------------------------------------------

TWO = [["The", "sentence", "."], ["ELMo", "helps", "disambiguate", "ELMo", "from", "Elmo", "."]]


def test_elmo(files: tuple[str, str]) -> None:
    elmo = Elmo(*files, 2, dropout=0.0)
    output = elmo(batch_to_ids(TWO))
    assert len(output["elmo_representations"]) == 2
    assert list(output["elmo_representations"][0].size()) == [2, 7, 32]
    assert list(output["elmo_representations"][1].size()) == [2, 7, 32]
    assert list(output["mask"].size()) == [2, 7]


def test_elmo_keep_sentence_boundaries(files: tuple[str, str]) -> None:
    elmo = Elmo(*files, 2, dropout=0.0, keep_sentence_boundaries=True)
    output = elmo(batch_to_ids(TWO))
    assert list(output["elmo_representations"][0].size()) == [2, 7 + 2, 32]
    assert list(output["elmo_representations"][1].size()) == [2, 7 + 2, 32]
    assert list(output["mask"].size()) == [2, 7 + 2]


def test_elmo_4D_input(files: tuple[str, str]) -> None:  # noqa: N802 - AllenNLP's test name
    elmo = Elmo(*files, 2, dropout=0.0)
    sentences = [
        TWO,
        [["1", "2"], ["1", "2", "3", "4", "5", "6", "7"]],
        [["1", "2", "3", "4", "50", "60", "70"], ["The"]],
    ]
    all_character_ids = [batch_to_ids(batch) for batch in sentences]
    character_ids = torch.cat(
        [ids.unsqueeze(1) for ids in all_character_ids], dim=1
    )  # [2, 3, 7, 50]
    embeddings_4d = elmo(character_ids)
    embeddings_3d = []
    for char_ids in all_character_ids:
        elmo._elmo_lstm._elmo_lstm.reset_states()
        embeddings_3d.append(elmo(char_ids))
    for k in range(3):
        numpy.testing.assert_array_almost_equal(
            embeddings_4d["elmo_representations"][0][:, k, :, :].detach().numpy(),
            embeddings_3d[k]["elmo_representations"][0].detach().numpy(),
        )


def test_elmo_with_module(files: tuple[str, str]) -> None:
    elmo = Elmo(None, None, 2, dropout=0.0, module=_ElmoBiLm(*files))
    output = elmo(batch_to_ids(TWO))
    assert len(output["elmo_representations"]) == 2
    for k in range(2):
        assert list(output["elmo_representations"][k].size()) == [2, 7, 32]


def test_elmo_bilm_can_handle_higher_dimensional_input_with_cache(files: tuple[str, str]) -> None:
    sentences = [["This", "is", "a", "sentence"], ["Here", "'s", "one"], ["Another", "one"]]
    words, chars, word_ids = vocab_and_ids(sentences)
    elmo = Elmo(*files, 1, vocab_to_cache=words).eval()
    individual = elmo(chars, word_ids)
    elmo = Elmo(*files, 1, vocab_to_cache=words).eval()
    expanded = elmo(
        torch.stack([chars for _ in range(4)], dim=1),
        torch.stack([word_ids for _ in range(4)], dim=1),
    )
    for part in torch.split(expanded["elmo_representations"][0], 1, dim=1):
        numpy.testing.assert_array_almost_equal(
            part.squeeze(1).detach().numpy(), individual["elmo_representations"][0].detach().numpy()
        )


@pytest.mark.parametrize("requires_grad", [True, False])
def test_elmo_requires_grad(files: tuple[str, str], requires_grad: bool) -> None:
    embedder = ElmoTokenEmbedder(*files, requires_grad=requires_grad)
    char_ids = torch.from_numpy(numpy.random.randint(0, 262, (3, 4, 50)))
    embedder(char_ids).sum().backward()
    bilm_grads = [p.grad for name, p in embedder.named_parameters() if ".bilm." in name]
    assert bilm_grads
    if requires_grad:
        assert all(grad is not None for grad in bilm_grads)
    else:
        assert all(grad is None for grad in bilm_grads)


# -- _ElmoCharacterEncoder -----------------------------------------------------------------


def test_elmo_token_representation(fixture_dir: Path, files: tuple[str, str]) -> None:
    words = (fixture_dir / "vocab_test.txt").read_text().strip().split("\n")
    ids = batch_to_ids([words])[0]  # [457, 50]
    padded = torch.zeros(500, 50, dtype=torch.long)
    padded[: len(words)] = ids
    batch = padded.view(10, 50, 50)  # 10 "sentences" of 50 tokens, as AllenNLP's test pads them
    output = _ElmoCharacterEncoder(*files)(batch)
    actual = remove_sentence_boundaries(output["token_embedding"], output["mask"])[0]
    actual = actual.detach().numpy().reshape(-1, actual.shape[-1])
    with h5py.File(fixture_dir / "elmo_token_embeddings.hdf5", "r") as handle:
        expected = handle["embedding"][...]
    assert numpy.allclose(actual[: len(words)], expected, atol=1e-6)


def test_elmo_token_representation_bos_eos(files: tuple[str, str]) -> None:
    encoder = _ElmoCharacterEncoder(*files)
    for correct_index, token in [[0, "<S>"], [2, "</S>"]]:
        embeddings = encoder(batch_to_ids([[token]]))["token_embedding"]
        assert numpy.allclose(
            embeddings[0, correct_index, :].detach().numpy(), embeddings[0, 1, :].detach().numpy()
        )


# -- ScalarMix -------------------------------------------------------------------------------


def test_scalar_mix_can_run_forward() -> None:
    mixture = ScalarMix(3)
    tensors = [torch.randn([3, 4, 5]) for _ in range(3)]
    for k in range(3):
        mixture.scalar_parameters[k].data[0] = 0.1 * (k + 1)
    mixture.gamma.data[0] = 0.5
    result = mixture(tensors)
    weights = [0.1, 0.2, 0.3]
    normed_weights = numpy.exp(weights) / numpy.sum(numpy.exp(weights))
    expected = 0.5 * sum(normed_weights[k] * tensors[k].numpy() for k in range(3))
    numpy.testing.assert_almost_equal(expected, result.detach().numpy())


def test_scalar_mix_errors() -> None:
    with pytest.raises(ConfigurationError):
        ScalarMix(3)([torch.randn([3, 4, 5]) for _ in range(5)])
    with pytest.raises(ConfigurationError):
        ScalarMix(3, initial_scalar_parameters=[0.0, 0.0])


def test_scalar_mix_trainable_with_initial_scalar_parameters() -> None:
    initial = [1.0, 2.0, 3.0]
    mixture = ScalarMix(3, initial_scalar_parameters=initial, trainable=False)
    for i, parameter in enumerate(mixture.scalar_parameters):
        assert parameter.requires_grad is False
        assert parameter.item() == initial[i]


def test_scalar_mix_layer_norm() -> None:
    mixture = ScalarMix(3, do_layer_norm=True)
    tensors = [torch.randn([3, 4, 5]) for _ in range(3)]
    numpy_mask = numpy.ones((3, 4), dtype="int32")
    numpy_mask[1, 2:] = 0
    weights = [0.1, 0.2, 0.3]
    for k in range(3):
        mixture.scalar_parameters[k].data[0] = weights[k]
    mixture.gamma.data[0] = 0.5
    result = mixture(tensors, torch.from_numpy(numpy_mask).bool())
    normed_weights = numpy.exp(weights) / numpy.sum(numpy.exp(weights))
    expected = numpy.zeros((3, 4, 5))
    for k in range(3):
        values = tensors[k].numpy()
        kept = values[numpy_mask == 1]
        expected += (values - kept.mean()) / (kept.std() + 1e-13) * normed_weights[k]
    numpy.testing.assert_almost_equal(0.5 * expected, result.detach().numpy(), decimal=6)


def test_scalar_mix_state_dict_keys_are_allennlps() -> None:
    mixture = ScalarMix(3)
    assert sorted(mixture.state_dict()) == [
        "gamma", "scalar_parameters.0", "scalar_parameters.1", "scalar_parameters.2"
    ]  # fmt: skip
    assert all(v.shape == (1,) for v in mixture.state_dict().values())
    old = ScalarMix(3)  # elmokit 0.1 kept w in one tensor [3]
    old.load_state_dict(
        {"scalar_parameters": torch.tensor([0.5, 1.0, 1.5]), "gamma": torch.tensor([2.0])}
    )
    assert old.weights().tolist() == [0.5, 1.0, 1.5] and old.gamma.item() == 2.0


# -- ElmoEmbedder (allennlp 0.9 commands/elmo.py) --------------------------------------------

SENTENCE = "Michael went to the store to buy some eggs ."
SENTENCES = [
    SENTENCE,
    "Joel rolled down the street on his skateboard .",
    "test / this is a first sentence",
    "Take a look , then , at Tuesday 's elections in New York City , New Jersey and Virginia :",
]


def test_embeddings_are_as_expected(fixture_dir: Path, files: tuple[str, str]) -> None:
    loaded_sentences, loaded_embeddings = load_sentences_embeddings(fixture_dir)
    batch_size = len(loaded_sentences)
    sentences, expected = [], []
    for batch_number in range(len(loaded_sentences[0])):
        for index in range(batch_size):
            sentences.append(loaded_sentences[index][batch_number].split())
            expected.append(loaded_embeddings[index][batch_number])
    embedder = ElmoEmbedder(options_file=files[0], weight_file=files[1])
    embeddings = list(embedder.embed_sentences(sentences, batch_size))
    assert len(embeddings) == len(sentences)
    for tensor, want in zip(embeddings, expected, strict=True):
        numpy.testing.assert_array_almost_equal(tensor[2], want)


def test_embed_empty_sentences(files: tuple[str, str]) -> None:
    embedder = ElmoEmbedder(options_file=files[0], weight_file=files[1])
    assert embedder.embed_sentence([]).shape == (3, 0, 1024)  # allennlp 0.9's own shape
    assert len(list(embedder.embed_sentences(["This is a test".split(), []]))) == 2


@pytest.mark.parametrize("output_format", ["all", "top", "average"])
def test_embed_file_formats(tmp_path: Path, files: tuple[str, str], output_format: str) -> None:
    path = tmp_path / "sentences.txt"
    path.write_text(SENTENCE)
    with open(path, encoding="utf-8") as handle:
        ElmoEmbedder(*files).embed_file(handle, tmp_path / "out.hdf5", output_format)
    expected = ElmoEmbedder(options_file=files[0], weight_file=files[1]).embed_sentence(
        SENTENCE.split()
    )
    expected = {"all": expected, "top": expected[2], "average": sum(expected) / 3}[output_format]
    with h5py.File(tmp_path / "out.hdf5", "r") as handle:
        assert set(handle.keys()) == {"0", "sentence_to_index"}
        assert handle["0"].shape == expected.shape
        numpy.testing.assert_allclose(handle["0"][...], expected, rtol=1e-4)
        assert json.loads(handle["sentence_to_index"][0]) == {SENTENCE: "0"}


def test_embed_file_keys(tmp_path: Path, files: tuple[str, str]) -> None:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    embedder = ElmoEmbedder(*files)
    embedder.embed_file(str(path), tmp_path / "all.hdf5")
    with h5py.File(tmp_path / "all.hdf5", "r") as handle:
        assert set(handle.keys()) == {"0", "1", "2", "3", "sentence_to_index"}
        for key, sentence in zip("0123", SENTENCES, strict=True):
            assert handle[key].shape == (3, len(sentence.split()), 32)
        assert json.loads(handle["sentence_to_index"][0]) == {
            s: str(i) for i, s in enumerate(SENTENCES)
        }
    embedder.embed_file(str(path), tmp_path / "forget.hdf5", forget_sentences=True)
    with h5py.File(tmp_path / "forget.hdf5", "r") as handle:
        assert set(handle.keys()) == {"0", "1", "2", "3"}
    path.write_text("\n".join(SENTENCES[:2]) + "\n")
    embedder.embed_file(str(path), tmp_path / "keys.hdf5", use_sentence_keys=True)
    with h5py.File(tmp_path / "keys.hdf5", "r") as handle:
        assert set(handle.keys()) == set(SENTENCES[:2])
    path.write_text(f"{SENTENCE}\n{SENTENCE}\n")
    embedder.embed_file(str(path), tmp_path / "dup.hdf5")
    with h5py.File(tmp_path / "dup.hdf5", "r") as handle:
        assert set(handle.keys()) == {"0", "1", "sentence_to_index"}
    path.write_text("A\n\n\nB\n")
    with pytest.raises(ConfigurationError, match="empty lines"):
        embedder.embed_file(str(path), tmp_path / "empty.hdf5")
    assert not (tmp_path / "empty.hdf5").exists()


# -- the `allennlp elmo` command as `elmokit elmo` ---------------------------------------


@pytest.mark.parametrize("flag", ["--all", "--top", "--average"])
def test_elmo_command(tmp_path: Path, files: tuple[str, str], flag: str) -> None:
    from elmokit.cli import main

    path, output = tmp_path / "sentences.txt", tmp_path / "output.hdf5"
    path.write_text(SENTENCE)
    argv = ["elmo", str(path), str(output), flag, "--options-file", files[0]]
    assert main([*argv, "--weight-file", files[1]]) == 0
    expected = ElmoEmbedder(options_file=files[0], weight_file=files[1]).embed_sentence(
        SENTENCE.split()
    )
    expected = {"--all": expected, "--top": expected[2], "--average": sum(expected) / 3}[flag]
    with h5py.File(output, "r") as handle:
        assert set(handle.keys()) == {"0", "sentence_to_index"}
        numpy.testing.assert_allclose(handle["0"][...], expected, rtol=1e-4)
        assert json.loads(handle["sentence_to_index"][0]) == {SENTENCE: "0"}


def test_elmo_command_refuses_empty_lines(tmp_path: Path, files: tuple[str, str]) -> None:
    from elmokit.cli import main

    path = tmp_path / "sentences.txt"
    path.write_text("A\n\n\nB\n")
    argv = ["elmo", str(path), str(tmp_path / "out.hdf5"), "--all", "--options-file", files[0]]
    argv += ["--weight-file", files[1], "--batch-size", "2", "--use-sentence-keys"]
    assert main(argv) == 2
    with pytest.raises(ConfigurationError, match="empty lines"):
        main(["--traceback", *argv])
    assert main([*argv[:2], str(path), "--all"]) == 2  # the output is the input
    assert path.read_text() == "A\n\n\nB\n"


def test_embed_takes_allennlp_elmo_flags(tmp_path: Path, files: tuple[str, str]) -> None:
    from elmokit.cli import main

    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES[:2]) + "\n")
    flags = ["--options-file", files[0], "--weight-file", files[1], "--cuda-device", "-1"]
    flags += ["--batch-size", "2", "--file-friendly-logging", "--vocab-path", "ignored.txt"]
    keyed, forgot = tmp_path / "keyed.hdf5", tmp_path / "forgot.hdf5"
    assert main(["embed", str(path), str(keyed), "--all", *flags, "--use-sentence-keys"]) == 0
    assert main(["embed", str(path), str(forgot), "--top", *flags, "--forget-sentences"]) == 0
    with h5py.File(keyed, "r") as a, h5py.File(forgot, "r") as b:
        assert set(a.keys()) == set(SENTENCES[:2])
        assert a[SENTENCES[0]].shape == (3, len(SENTENCES[0].split()), 32)
        assert set(b.keys()) == {"0", "1"} and b["1"].shape == (len(SENTENCES[1].split()), 32)
    path.write_text(f"{SENTENCE}\n{SENTENCE}\n")
    twice = ["embed", str(path), str(tmp_path / "twice.hdf5"), *flags, "--use-sentence-keys"]
    assert main(twice) == 2

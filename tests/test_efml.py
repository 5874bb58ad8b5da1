"""ELMoForManyLangs models: EFML's own outputs reproduced from its model directories.

The fixtures (../shared/fixtures/efml, its README) are two tiny EFML models with random weights
and what EFML's unmodified code computed for 12 sentences (Chinese, English, mixed, OOV
characters and words, a 40-token sentence, an over-long token, a literal `<bos>`, a space inside
a token). EFML's README puts float32 agreement at about 2e-6; we use atol 1e-5.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elmokit
from elmokit.compat.elmoformanylangs import Embedder as EfmlEmbedder
from elmokit.embedder import Embedder
from elmokit.io.efml import EfmlFormatError, load_efml
from elmokit.io.native import CHARACTERS_NAME, from_pretrained, save_pretrained
from elmokit.io.weights_hdf5 import WeightFileError, save_bilm
from tests.conftest import SHARED

EFML = SHARED / "fixtures" / "efml"
MODELS = ("efml-tiny-cnn-word", "efml-tiny-cnn-charonly")
ATOL = 1e-5


@pytest.fixture(scope="module")
def sentences() -> list[list[str]]:
    if not (EFML / "sentences.json").exists():
        pytest.skip(f"EFML fixtures not found at {EFML}")
    return json.loads((EFML / "sentences.json").read_text(encoding="utf-8"))


def expected(model: str, name: str) -> Iterator[tuple[int, np.ndarray]]:
    with h5py.File(EFML / "expected" / model / f"{name}.hdf5", "r") as file:
        for key in file:
            yield int(key), file[key][()]


def max_error(outputs: list[np.ndarray], model: str, name: str) -> float:
    return max(float(np.abs(outputs[i] - array).max()) for i, array in expected(model, name))


@pytest.mark.parametrize("model_name", MODELS)
def test_input_ids_are_efmls_own(model_name: str, sentences: list[list[str]]) -> None:
    model = elmokit.load(EFML / model_name)
    n_chars = model.config.max_characters_per_token
    with h5py.File(EFML / "expected" / model_name / "expected_inputs.hdf5", "r") as file:
        for index, sentence in enumerate(sentences):
            ids = model.batch_to_ids([["<bos>", *sentence, "<eos>"]])[0].numpy() - 1
            np.testing.assert_array_equal(ids[:, :n_chars], file["char_ids"][str(index)][()])
            if "word_ids" in file:
                np.testing.assert_array_equal(ids[:, n_chars], file["word_ids"][str(index)][()])
            else:
                assert ids.shape[1] == n_chars  # a char-only model has no word column


@pytest.mark.parametrize("precision", ["reference", "fp32"])
@pytest.mark.parametrize("model_name", MODELS)
def test_zero_state_layers_match_efml(
    model_name: str, precision: str, sentences: list[list[str]]
) -> None:
    model = elmokit.load(EFML / model_name, precision=precision)  # type: ignore[arg-type]
    with torch.no_grad():
        batched = model(model.batch_to_ids(sentences)).layers.numpy()
        alone = [model(model.batch_to_ids([s])).layers[0].numpy() for s in sentences]
    trimmed = [batched[i, :, : len(s)] for i, s in enumerate(sentences)]
    assert max_error(trimmed, model_name, "expected_all_layers") <= ATOL
    assert max_error(alone, model_name, "expected_all_layers") <= ATOL
    # The wrong begin/end-of-word order, say, would move every output by far more.
    assert max_error(trimmed, model_name, "expected_stateful_bs4_all_layers") > 0.1


@pytest.mark.parametrize("model_name", MODELS)
def test_efml_embedder_average_and_layers(model_name: str, sentences: list[list[str]]) -> None:
    embedder = EfmlEmbedder(EFML / model_name, batch_size=4, state_policy="reset")
    average = embedder.sents2elmo(sentences)
    assert all(a.dtype == np.float32 and a.ndim == 2 for a in average)
    assert max_error(average, model_name, "expected_average") <= ATOL
    every = embedder.sents2elmo(sentences, output_layer=-2)
    for layer in (0, 1, 2, -3):
        picked = embedder.sents2elmo(sentences, output_layer=layer)
        assert all(np.array_equal(p, e[layer]) for p, e in zip(picked, every, strict=True))
    with pytest.raises(IndexError, match="output_layer"):
        embedder.sents2elmo(sentences, output_layer=3)


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("model_name", MODELS)
def test_stateful_runs_reproduce_efml(
    model_name: str, batch_size: int, sentences: list[list[str]]
) -> None:
    """EFML's default: state carried from batch to batch, batches in random.shuffle order."""
    embedder = EfmlEmbedder(EFML / model_name, batch_size=batch_size)
    random.seed(12345)
    outputs = embedder.sents2elmo(sentences, output_layer=-2)
    name = f"expected_stateful_bs{batch_size}_all_layers"
    assert max_error(outputs, model_name, name) <= ATOL
    # A second call continues from the state the first one left, as in EFML.
    random.seed(12345)
    again = embedder.sents2elmo(sentences, output_layer=-2)
    assert max(float(np.abs(a - b).max()) for a, b in zip(again, outputs, strict=True)) > 0.1


def test_native_round_trip_keeps_dictionaries(tmp_path: Path, sentences: list[list[str]]) -> None:
    model = load_efml(EFML / "efml-tiny-cnn-word").eval()
    save_pretrained(model, tmp_path / "native")
    assert (tmp_path / "native" / CHARACTERS_NAME).exists()
    again = from_pretrained(tmp_path / "native").eval()
    with torch.no_grad():
        a = model(model.batch_to_ids(sentences)).layers
        b = again(again.batch_to_ids(sentences)).layers
    assert torch.equal(a, b)
    (tmp_path / "native" / CHARACTERS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=CHARACTERS_NAME):
        from_pretrained(tmp_path / "native")


def test_hdf5_export_refuses_with_the_reason(tmp_path: Path) -> None:
    model = load_efml(EFML / "efml-tiny-cnn-word")
    with pytest.raises(WeightFileError, match="word embedding"):
        save_bilm(model, tmp_path / "options.json", tmp_path / "weights.hdf5")
    assert not list(tmp_path.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "elmokit.cli", "convert", str(EFML / "efml-tiny-cnn-charonly"),
         str(tmp_path / "out"), "--to", "hdf5"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "own dictionary" in result.stderr and "--to native" in result.stderr
    assert "Traceback" not in result.stderr


def test_embedder_and_elmo_use_the_models_ids(sentences: list[list[str]]) -> None:
    model = elmokit.load(EFML / "efml-tiny-cnn-word")
    embedder = Embedder(model, batch_size=3)
    vectors = list(embedder.embed_sentences(sentences))
    assert max_error(vectors, "efml-tiny-cnn-word", "expected_all_layers") <= ATOL
    elmo = elmokit.Elmo(None, bilm=model, state_policy="reset", dropout=0.0)
    ids = model.batch_to_ids(sentences[:4])
    assert ids.shape[-1] == 51  # 50 char ids and the word id
    out = elmo(ids)["elmo_representations"][0]
    assert out.shape == (4, max(len(s) for s in sentences[:4]), 16)
    with pytest.raises(ValueError, match="model.batch_to_ids"):
        model(elmokit.batch_to_ids(sentences[:2]))


def test_fine_tuning_an_efml_model(tmp_path: Path, sentences: list[list[str]]) -> None:
    from elmokit.training.config import TrainConfig
    from elmokit.training.trainer import Trainer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sentences * 20) + "\n", encoding="utf-8")
    (tmp_path / "train.toml").write_text(
        f"""
output_dir = "{tmp_path / "run"}"
init_from = "{EFML / "efml-tiny-cnn-word"}"
[data]
train = ["{corpus}"]
vocab = "{tmp_path / "vocab.txt"}"
batch_size = 4
unroll_steps = 8
[optim]
lr = 0.01
max_steps = 6
precision = "fp32"
[log]
checkpoint_every = 1000
progress = false
"""
    )
    summary = Trainer(TrainConfig.from_toml(tmp_path / "train.toml")).train()
    assert summary["step"] == 6
    tuned = elmokit.load(tmp_path / "run" / "model")
    original = elmokit.load(EFML / "efml-tiny-cnn-word")
    assert tuned.characters.kind == "dictionary"
    with torch.no_grad():
        a = tuned(tuned.batch_to_ids(sentences[:3])).layers
        b = original(original.batch_to_ids(sentences[:3])).layers
    assert a.shape == b.shape and 0 < float((a - b).abs().max()) < 10


def copy_model(tmp_path: Path, name: str = "efml-tiny-cnn-word") -> Path:
    target = tmp_path / name
    shutil.copytree(EFML / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def test_bad_efml_files_name_the_file(tmp_path: Path, sentences: list[list[str]]) -> None:
    model_dir = copy_model(tmp_path)
    encoder = model_dir / "encoder.pkl"
    good = encoder.read_bytes()
    encoder.write_bytes(good[: len(good) // 2])
    with pytest.raises(EfmlFormatError, match="encoder.pkl is not a readable torch file"):
        elmokit.load(model_dir)
    torch.save([1, 2, 3], encoder)
    with pytest.raises(EfmlFormatError, match="encoder.pkl does not hold a state dict"):
        elmokit.load(model_dir)
    torch.save({"weights": np.arange(3)}, encoder)  # a numpy array: not for weights_only
    with pytest.raises(EfmlFormatError, match="encoder.pkl refused"):
        elmokit.load(model_dir)
    encoder.write_bytes(good)
    (model_dir / "char.dic").unlink()
    with pytest.raises(EfmlFormatError, match="missing: .*char.dic"):
        elmokit.load(model_dir)
    model_dir = copy_model(tmp_path / "second")
    (model_dir / "efml_tiny_cnn_word.json").unlink()
    with pytest.raises(EfmlFormatError, match="config_path .* points nowhere"):
        elmokit.load(model_dir)


def test_config_path_resolution_and_shipped_configs(tmp_path: Path) -> None:
    model_dir = copy_model(tmp_path, "efml-tiny-cnn-charonly")
    options = json.loads((model_dir / "config.json").read_text())
    # An absolute path from the training machine falls back to the file beside config.json.
    options["config_path"] = "/home/trainer/elmo/configs/efml_tiny_cnn_charonly.json"
    (model_dir / "config.json").write_text(json.dumps(options))
    assert elmokit.load(model_dir).config.max_characters_per_token == 20
    # A published model's config name resolves to the config EFML ships, here the wrong shape.
    (model_dir / "efml_tiny_cnn_charonly.json").unlink()
    options["config_path"] = "/home/x/configs/cnn_50_100_512_4096_sample.json"
    (model_dir / "config.json").write_text(json.dumps(options))
    with pytest.raises(EfmlFormatError, match="no word embedding.*word_dim 100"):
        elmokit.load(model_dir)


def test_raw_chinese_text_through_jieba(tmp_path: Path, sentences: list[list[str]]) -> None:
    """Raw Chinese in, EFML's segmentation convention (words) out, through every entry point."""
    pytest.importorskip("jieba")
    from elmokit.tokenizers import make_tokenizer

    segment = make_tokenizer("jieba")
    assert segment("我喜欢吃苹果") == ["我", "喜欢", "吃", "苹果"] == sentences[0]
    assert segment("我去 银行存钱。 ") == ["我", "去", "银行", "存钱", "。"]  # spaces separate
    model = elmokit.load(EFML / "efml-tiny-cnn-word")
    embedder = Embedder(model, tokenize="jieba")
    np.testing.assert_allclose(
        embedder.embed_sentence("我喜欢吃苹果"), embedder.embed_sentence(sentences[0]), atol=0
    )
    text = tmp_path / "zh.txt"
    text.write_text("我喜欢吃苹果\n我去银行存钱\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "elmokit.cli", "embed", str(text), str(tmp_path / "zh.hdf5"),
         "--model", str(EFML / "efml-tiny-cnn-word"), "--tokenize", "jieba", "--all"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "zh.hdf5", "r") as file:
        np.testing.assert_allclose(file["1"][()], embedder.embed_sentence(sentences[3]), atol=1e-6)


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    text = tmp_path / "zh.txt"
    text.write_text("我喜欢吃苹果\n", encoding="utf-8")
    code = (
        "import sys; sys.modules['jieba'] = None; from elmokit.cli import main; "
        f"sys.exit(main(['embed', {str(text)!r}, {str(tmp_path / 'o.hdf5')!r}, '--model', "
        f"{str(EFML / 'efml-tiny-cnn-word')!r}, '--tokenize', 'jieba']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "pip install 'elmokit[zh]'" in result.stderr and "Traceback" not in result.stderr


def test_convert_command_writes_a_native_model(tmp_path: Path, sentences: list[list[str]]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "elmokit.cli", "convert", str(EFML / "efml-tiny-cnn-word"),
         str(tmp_path / "native"), "--to", "native"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert CHARACTERS_NAME in result.stdout
    converted, original = elmokit.load(tmp_path / "native"), load_efml(EFML / "efml-tiny-cnn-word")
    with torch.no_grad():
        ids = original.batch_to_ids(sentences)
        assert torch.equal(converted(ids).layers, original.eval()(ids).layers)

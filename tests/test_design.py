"""One path, one home: the biLM tail, the char-CNN batching, the tokenisers, the native format,
the command line's debug switch and the training config's file handling, each in one place."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import elmokit
from elmokit.bilm import ENCODE_ROWS, BiLM
from elmokit.chars import batch_to_ids
from elmokit.cli import main
from elmokit.config import BiLMConfig
from elmokit.embedder import Embedder
from elmokit.initialization import random_bilm
from elmokit.io.native import load_softmax, save_pretrained
from elmokit.tokenizers import TOKENIZERS, make_tokenizer
from elmokit.training.config import DataConfig, TrainConfig
from elmokit.training.trainer import count_training_tokens

SRC = Path(__file__).resolve().parents[1] / "src" / "elmokit"

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "The bank raised its rates again on Monday .".split(),
    "A river bank".split(),
    "Sales rose".split(),
    "It was the best of times , it was the worst of times , it was the age of wisdom".split(),
]


@pytest.fixture(scope="module")
def model() -> BiLM:
    config = BiLMConfig(
        filters=[(1, 8), (2, 8), (3, 16)], char_embedding_dim=4, lstm_dim=24, projection_dim=8
    )
    return random_bilm(config, seed=3).eval()


def test_token_vectors_path_equals_forward(model: BiLM) -> None:
    char_ids = batch_to_ids(SENTENCES)
    mask = (char_ids > 0).any(dim=-1)
    with torch.no_grad():
        expected = model(char_ids, keep_sentence_boundaries=True)
        layers, boundary_mask = model.layers_from_token_vectors(model.encode_tokens(char_ids), mask)
    assert torch.equal(boundary_mask, expected.mask)
    assert torch.allclose(layers, expected.layers, atol=1e-6, rtol=0)


@pytest.mark.parametrize("policy", ["reset", "carry"])
def test_time_chunks_give_the_same_layers_and_state(model: BiLM, policy: str) -> None:
    char_ids = batch_to_ids(SENTENCES)
    model.state_policy = policy  # type: ignore[assignment]
    try:
        with torch.no_grad():
            whole = model(char_ids).layers
            whole_state = model._carried
            model.reset_states()
            chunked = model(char_ids, time_chunk=3).layers
            chunked_state = model._carried
    finally:
        model.state_policy = "reset"
    assert torch.allclose(chunked, whole, atol=1e-6, rtol=0)
    if policy == "carry":
        assert whole_state is not None and chunked_state is not None
        assert torch.allclose(chunked_state.h, whole_state.h, atol=1e-6, rtol=0)
        assert torch.allclose(chunked_state.c, whole_state.c, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="time_chunk"):
        model(char_ids, time_chunk=0)


def test_encode_tokens_batches_many_distinct_tokens(model: BiLM) -> None:
    words = [f"w{i}" for i in range(ENCODE_ROWS + 37)]  # two char-CNN calls
    char_ids = batch_to_ids([words])[0]  # [V, 50]
    with torch.no_grad():
        together = model.encode_tokens(char_ids)
        one_by_one = torch.cat([model.encode_tokens(char_ids[i : i + 1]) for i in (0, 540)])
    assert together.shape == (len(words), 8)
    assert torch.allclose(together[[0, 540]], one_by_one, atol=1e-6, rtol=0)


def test_embedder_long_sentence_runs_in_chunks_with_the_same_vectors(model: BiLM) -> None:
    long_sentence = SENTENCES[3] * 20  # 340 tokens: over a 256-token batch budget
    chunked = Embedder(model, max_tokens_per_batch=256).embed_sentence(long_sentence)
    whole = Embedder(model, max_tokens_per_batch=100_000).embed_sentence(long_sentence)
    assert chunked.shape == whole.shape == (3, len(long_sentence), 16)
    assert float(abs(chunked - whole).max()) < 1e-5


def test_tokenizers_have_one_home() -> None:
    assert TOKENIZERS == ("whitespace", "moses", "jieba")
    assert make_tokenizer(None)("a  b\tc") == ["a", "b", "c"]
    assert make_tokenizer("moses")("Hello, world!") == ["Hello", ",", "world", "!"]
    assert make_tokenizer("moses", lang="fr")("l'homme") == ["l'", "homme"]
    for bad in (
        lambda: make_tokenizer("spacy"),
        lambda: Embedder(
            random_bilm(BiLMConfig(filters=[(1, 4)], lstm_dim=4, projection_dim=2)),
            tokenize="spacy",
        ),  # type: ignore[arg-type]
        lambda: TrainConfig.from_dict(
            {"data": {"train": ["x"], "tokenize": "spacy"}, "optim": {"max_steps": 1}}
        ),
    ):
        with pytest.raises(ValueError, match="whitespace, moses, jieba"):
            bad()


def test_softmax_lives_in_the_native_file(tmp_path: Path, model: BiLM) -> None:
    softmax = {"weight": torch.randn(5, 8), "bias": torch.randn(5)}
    save_pretrained(model, tmp_path / "m", softmax=softmax)
    loaded = load_softmax(tmp_path / "m")
    assert set(loaded) == {"weight", "bias"}
    assert torch.equal(loaded["weight"], softmax["weight"])
    assert elmokit.from_pretrained(tmp_path / "m").state_dict().keys() == model.state_dict().keys()
    assert load_softmax(tmp_path) == {}  # not a model directory


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("elmokit"):
                own_package = node.module == "elmokit" or node.module.startswith("elmokit._")
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and not own_package:
                    offenders.append(f"{path.name}: {node.module} {private}")
    assert offenders == []


def test_version_has_one_home() -> None:
    from elmokit._version import __version__

    assert elmokit.__version__ == __version__
    pyproject = (SRC.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'version = { attr = "elmokit._version.__version__" }' in pyproject


def test_command_help_does_not_import_the_task_suite() -> None:
    code = (
        "import sys; from elmokit.cli import build_parser; build_parser(); "
        "print('elmokit.tasks.suite' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_traceback_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    argv = ["convert", str(tmp_path / "missing"), str(tmp_path / "out"), "--to", "native"]
    monkeypatch.delenv("ELMOKIT_DEBUG", raising=False)
    assert main(argv) == 2
    assert "error: no model at" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no model at"):
        main(["--traceback", *argv])
    monkeypatch.setenv("ELMOKIT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(argv)


def test_train_config_json_reads_back(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a b c\n", encoding="utf-8")
    toml = tmp_path / "sub" / "train.toml"
    toml.parent.mkdir()
    toml.write_text(
        'output_dir = "run"\n[model]\nlstm_dim = 16\nprojection_dim = 4\n'
        'filters = [[1, 4]]\n[data]\ntrain = ["../train.txt"]\neval_batch_size = 8\n'
        "[optim]\nmax_steps = 3\n",
        encoding="utf-8",
    )
    config = TrainConfig.from_file(toml)
    assert config.data.train == [str(tmp_path / "train.txt")]
    written = tmp_path / "elsewhere" / "train_config.json"
    written.parent.mkdir()
    written.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    assert TrainConfig.from_file(written).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="eval_batch_size"):
        TrainConfig.from_dict(
            {"data": {"train": ["x"], "eval_batch_size": 0}, "optim": {"max_steps": 1}}
        )
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="does not hold a training config"):
        TrainConfig.from_file(tmp_path / "bad.json")


def test_encoding_errors_apply_to_every_file(tmp_path: Path) -> None:
    held_out = tmp_path / "valid.txt"
    held_out.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        list(DataConfig(train=["x"]).sentences([str(held_out)]))
    replaced = list(DataConfig(train=["x"], encoding_errors="replace").sentences([str(held_out)]))
    assert replaced == [["caf\ufffd", "au", "lait"]]


def test_corpus_token_count_follows_the_files_and_settings(tmp_path: Path) -> None:
    corpus = tmp_path / "train.txt"
    corpus.write_text("a b c\nd e\n", encoding="utf-8")
    config = TrainConfig.from_dict(
        {"data": {"train": [str(corpus)]}, "optim": {"max_steps": 1}}, base_dir=tmp_path
    )
    assert count_training_tokens(config, tmp_path) == 7  # 5 words + one </S> per sentence
    corpus.write_text("a b c\nd e\nf\n", encoding="utf-8")
    os.utime(corpus, ns=(1, 1))
    assert count_training_tokens(config, tmp_path) == 9
    corpus.write_text("a,b\n", encoding="utf-8")
    assert count_training_tokens(config, tmp_path) == 2
    config.data.tokenize = "moses"
    assert count_training_tokens(config, tmp_path) == 4


def test_evaluate_takes_the_bundled_model_and_its_vocabulary(tmp_path: Path, capsys) -> None:
    text = tmp_path / "held_out.txt"
    text.write_text("The bank raised its rates .\nA river ran by the town .\n", encoding="utf-8")
    assert main(["evaluate", "elmokit-small-en", str(text), "--batch-size", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 15 and 1.0 < result["test_ppl_mean"] < 20000


def test_torchrun_ranks_get_their_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from elmokit.devices import device_for_rank, rank_device

    assert device_for_rank("cuda", 3) == torch.device("cuda", 3)
    assert device_for_rank("cuda:1", 3) == torch.device("cuda", 1)  # explicit: kept
    assert device_for_rank("cpu", 3) == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert device_for_rank("cuda") == torch.device("cuda")  # not under torchrun
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert device_for_rank("cuda") == torch.device("cuda", 2)
    assert rank_device("cpu") == torch.device("cpu")  # never touches CUDA on a CPU device

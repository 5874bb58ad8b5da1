"""The biLM against the published reference outputs and an independent oracle."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.chars import token_to_char_ids
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm
from elmokit.io.weights_hdf5 import load_bilm, save_bilm
from tests.conftest import DATA
from tests.oracle import OracleBiLM

PARITY_TOLERANCE = 2e-6


def _fixture_model(fixture_dir: Path, **kwargs: object) -> BiLM:
    model = load_bilm(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5", **kwargs)
    model.optimize_for_inference("reference")  # parity is checked on the exact autograd path
    return model.eval()


def test_top_layer_matches_reference_outputs_with_carried_state(fixture_dir: Path) -> None:
    model = _fixture_model(fixture_dir, state_policy="carry")
    sentences = json.loads((fixture_dir / "sentences.json").read_text())
    expected = [h5py.File(fixture_dir / f"lm_embeddings_{k}.hdf5", "r") for k in range(3)]
    worst = 0.0
    with torch.no_grad():
        for i in range(10):
            batch = [sentences[k][i].split() for k in range(3)]
            output = model(batch_to_ids(batch))
            for k, tokens in enumerate(batch):
                reference = expected[k][str(i)][...]
                reference = np.concatenate([reference[0], reference[1]], axis=-1)
                ours = output.layers[k, -1, : len(tokens)].numpy()
                assert ours.shape == reference.shape
                worst = max(worst, float(np.abs(ours - reference).max()))
    assert worst <= PARITY_TOLERANCE, worst


def test_reference_needs_carried_state(fixture_dir: Path) -> None:
    """The fixture only reproduces with state carried: with reset, batch 1 must differ."""
    model = _fixture_model(fixture_dir, state_policy="reset")
    sentences = json.loads((fixture_dir / "sentences.json").read_text())
    batch = [sentences[k][1].split() for k in range(3)]
    with torch.no_grad():
        output = model(batch_to_ids(batch))
    with h5py.File(fixture_dir / "lm_embeddings_0.hdf5", "r") as expected:
        reference = np.concatenate([expected["1"][0], expected["1"][1]], axis=-1)
    assert np.abs(output.layers[0, -1, : len(batch[0])].numpy() - reference).max() > 1e-3


def test_token_encoder_matches_reference_token_embeddings(fixture_dir: Path) -> None:
    model = _fixture_model(fixture_dir)
    vocab = (fixture_dir / "vocab_test.txt").read_text(encoding="utf-8").split("\n")
    with h5py.File(fixture_dir / "elmo_token_embeddings.hdf5", "r") as f:
        reference = f["embedding"][...]
    assert len(vocab) == reference.shape[0] == 458
    char_ids = torch.tensor([token_to_char_ids(word) for word in vocab])
    with torch.no_grad():
        ours = model.token_encoder(char_ids).numpy()
        deduplicated = model.encode_tokens(char_ids).numpy()
    assert np.abs(ours - reference).max() <= PARITY_TOLERANCE
    assert np.abs(deduplicated - reference).max() <= PARITY_TOLERANCE


def test_oracle_agrees_with_reference_fixture(fixture_dir: Path) -> None:
    """The oracle itself is checked against the reference: first sentence (zero state)."""
    options = json.loads((fixture_dir / "options.json").read_text())
    oracle = OracleBiLM(options, str(fixture_dir / "lm_weights.hdf5"))
    tokens = json.loads((fixture_dir / "sentences.json").read_text())[0][0].split()
    with h5py.File(fixture_dir / "lm_embeddings_0.hdf5", "r") as expected:
        reference = np.concatenate([expected["0"][0], expected["0"][1]], axis=-1)
    assert np.abs(oracle.embed(tokens)[-1] - reference).max() < 1e-5


def test_skip_connections_off_really_removes_the_residual(
    fixture_dir: Path, tmp_path: Path
) -> None:
    options = json.loads((fixture_dir / "options.json").read_text())
    options["lstm"]["use_skip_connections"] = False
    (tmp_path / "options.json").write_text(json.dumps(options))
    without = load_bilm(tmp_path / "options.json", fixture_dir / "lm_weights.hdf5").eval()
    without.optimize_for_inference("reference")
    with_skip = _fixture_model(fixture_dir)
    char_ids = batch_to_ids([["The", "bank", "of", "the", "river", "."], ["Hello", "world"]])
    with torch.no_grad():
        a = with_skip(char_ids).layers
        b = without(char_ids).layers
    # Layer 2's input is layer 1's output in both models, so the residual is exactly layer 1.
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(a[:, 2] - b[:, 2], a[:, 1], rtol=0, atol=1e-6)
    assert (a[:, 2] - b[:, 2]).abs().max() > 0.1
    oracle = OracleBiLM(options, str(fixture_dir / "lm_weights.hdf5"))
    expected = oracle.embed(["The", "bank", "of", "the", "river", "."])
    assert np.abs(b[0].numpy() - expected).max() < 1e-5


@pytest.mark.parametrize("shape", ["small", "original"])
def test_oracle_agrees_with_production_on_random_published_shapes(
    shape: str, tmp_path: Path
) -> None:
    model = random_bilm(shape, seed=3)
    save_bilm(model, tmp_path / "options.json", tmp_path / "weights.hdf5")
    loaded = load_bilm(tmp_path / "options.json", tmp_path / "weights.hdf5").eval()
    loaded.optimize_for_inference("reference")
    ptb = (DATA / "ptb_mikolov" / "ptb.valid.txt").read_text().splitlines()
    sentences = [["Ré", "sumé", "costs", "$", "3.50", "."], ["A", "bank", "."], [], ptb[0].split()]
    with torch.no_grad():
        output = loaded(batch_to_ids(sentences))
    oracle = OracleBiLM(
        json.loads((tmp_path / "options.json").read_text()), str(tmp_path / "weights.hdf5")
    )
    for row, tokens in enumerate(sentences):
        expected = oracle.embed(tokens)
        ours = output.layers[row, :, : len(tokens)].numpy()
        assert ours.shape == expected.shape
        if not tokens:
            continue
        # float32 production vs float64 oracle; activations are O(1).
        assert np.abs(ours - expected).max() < 2e-5, shape
    # The random model is not trivial: the cells hit the clip on a small fraction of values.
    cells = np.concatenate(oracle.cell_log)
    clipped = float((np.abs(cells) > 3.0).mean())
    assert 1e-4 < clipped < 0.1, clipped


def test_random_model_activations_are_non_trivial() -> None:
    model = random_bilm("small", seed=0).eval()
    sentences = [
        line.split()
        for line in [
            "The committee approved the budget after a long debate on Tuesday .",
            "She walked along the bank of the river and watched the boats .",
            "Interest rates rose sharply , and the bank raised its lending rate .",
        ]
    ]
    with torch.no_grad():
        output = model(batch_to_ids(sentences))
    values = output.layers[output.mask.unsqueeze(1).expand(-1, 3, -1)]
    for layer in range(3):
        mean_abs = float(output.layers[:, layer][output.mask].abs().mean())
        assert 0.1 < mean_abs < 2.0, (layer, mean_abs)
    saturated = float((values.abs() >= 2.999).float().mean())
    assert saturated < 0.05


def test_config_any_layer_count_and_tanh(tmp_path: Path) -> None:
    config = BiLMConfig(
        filters=[(1, 4), (3, 8)],
        char_embedding_dim=4,
        n_highway=0,
        activation="tanh",
        lstm_dim=12,
        projection_dim=6,
        n_layers=3,
        use_skip_connections=True,
    )
    model = random_bilm(config, seed=1)
    save_bilm(model, tmp_path / "options.json", tmp_path / "weights.hdf5")
    loaded = load_bilm(tmp_path / "options.json", tmp_path / "weights.hdf5").eval()
    loaded.optimize_for_inference("reference")
    tokens = ["tanh", "activations", "work", "too"]
    with torch.no_grad():
        ours = loaded(batch_to_ids([tokens])).layers[0].numpy()
    oracle = OracleBiLM(
        json.loads((tmp_path / "options.json").read_text()), str(tmp_path / "weights.hdf5")
    )
    expected = oracle.embed(tokens)
    assert ours.shape == (4, 4, 12)
    assert np.abs(ours - expected).max() < 1e-5

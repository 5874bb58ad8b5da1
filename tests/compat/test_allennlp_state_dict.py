"""A task model saved by AllenNLP loads into elmokit's Elmo and gives the same logits.

The AllenNLP state dict is built here from the published weight file the way AllenNLP's own
loaders lay the tensors out (allennlp/modules/elmo.py `_ElmoCharacterEncoder._load_*` and
elmo_lstm.py `ElmoLstm.load_weights`): `y = W x` orientation, gates reordered to input,
forget, memory, output with the forget bias folded in, highways as one [2n, n] matrix with
the carry gate negated, a zero row 0 in the char embedding."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elmokit.compat.allennlp import Elmo, batch_to_ids
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm
from tests.test_elmo import Tagger  # the shape of a user model: Elmo inside, a linear layer

pytestmark = pytest.mark.usefixtures("one_thread")


def _allennlp_gate_order(matrix: np.ndarray, cell: int) -> np.ndarray:
    """Rows in TF order (input, memory, forget, output) -> AllenNLP's (input, forget, memory,
    output)."""
    out = matrix.copy()
    out[cell : 2 * cell] = matrix[2 * cell : 3 * cell]
    out[2 * cell : 3 * cell] = matrix[cell : 2 * cell]
    return out


def allennlp_bilm_state(weight_file: Path, prefix: str) -> dict[str, torch.Tensor]:
    state: dict[str, np.ndarray] = {}
    encoder, lstm = prefix + "_token_embedder.", prefix + "_elmo_lstm."
    with h5py.File(weight_file, "r") as fin:
        chars = fin["char_embed"][...]
        state[encoder + "_char_embedding_weights"] = np.concatenate(
            [np.zeros((1, chars.shape[1]), dtype=np.float32), chars]
        )
        for i in range(len(fin["CNN"]) // 2):
            weight = fin["CNN"][f"W_cnn_{i}"][...]
            state[f"{encoder}char_conv_{i}.weight"] = np.transpose(weight.squeeze(0), (2, 1, 0))
            state[f"{encoder}char_conv_{i}.bias"] = fin["CNN"][f"b_cnn_{i}"][...]
        k = 0
        while f"CNN_high_{k}" in fin:
            high = fin[f"CNN_high_{k}"]
            state[f"{encoder}_highways._layers.{k}.weight"] = np.concatenate(
                [high["W_transform"][...].T, -1.0 * high["W_carry"][...].T]
            )
            state[f"{encoder}_highways._layers.{k}.bias"] = np.concatenate(
                [high["b_transform"][...], -1.0 * high["b_carry"][...]]
            )
            k += 1
        state[encoder + "_projection.weight"] = fin["CNN_proj"]["W_proj"][...].T
        state[encoder + "_projection.bias"] = fin["CNN_proj"]["b_proj"][...]
        for direction, side in enumerate(("forward", "backward")):
            cells = fin[f"RNN_{direction}"]["RNN"]["MultiRNNCell"]
            for layer in range(len(cells)):
                data = cells[f"Cell{layer}"]["LSTMCell"]
                weights = data["W_0"][...].T  # [4H, in + P]
                cell = weights.shape[0] // 4
                input_size = weights.shape[1] - data["W_P_0"].shape[1]
                reordered = _allennlp_gate_order(weights, cell)
                bias = data["B"][...].copy()
                bias[2 * cell : 3 * cell] += 1
                name = f"{lstm}{side}_layer_{layer}."
                state[name + "input_linearity.weight"] = reordered[:, :input_size]
                state[name + "state_linearity.weight"] = reordered[:, input_size:]
                state[name + "state_linearity.bias"] = _allennlp_gate_order(bias, cell)
                state[name + "state_projection.weight"] = data["W_P_0"][...].T
    return {key: torch.tensor(np.ascontiguousarray(value)) for key, value in state.items()}


def test_tagger_saved_with_allennlp_keys_gives_the_same_logits(fixture_dir: Path) -> None:
    files = (fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    torch.manual_seed(0)
    trained = Tagger(Elmo(*files, 1, dropout=0.0, state_policy="reset")).eval()
    with torch.no_grad():
        for w, value in zip(trained.elmo.mixes[0].scalar_parameters, [0.3, -0.2, 0.9], strict=True):
            w.fill_(value)
        trained.elmo.mixes[0].gamma.fill_(1.7)
    allennlp_state = {
        **allennlp_bilm_state(files[1], "elmo._elmo_lstm."),
        "elmo.scalar_mix_0.scalar_parameters.0": torch.tensor([0.3]),
        "elmo.scalar_mix_0.scalar_parameters.1": torch.tensor([-0.2]),
        "elmo.scalar_mix_0.scalar_parameters.2": torch.tensor([0.9]),
        "elmo.scalar_mix_0.gamma": torch.tensor([1.7]),
        "out.weight": trained.out.weight.detach().clone(),
        "out.bias": trained.out.bias.detach().clone(),
    }
    config = trained.elmo.bilm.config
    fresh = Tagger(Elmo(None, bilm=random_bilm(config, seed=5), dropout=0.0, state_policy="reset"))
    fresh.eval()
    char_ids = batch_to_ids([["The", "bank", "raised", "rates", "."], ["A", "river", "bank"]])
    with torch.no_grad():
        assert not torch.allclose(fresh(char_ids), trained(char_ids))
        result = fresh.load_state_dict(allennlp_state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        torch.testing.assert_close(fresh(char_ids), trained(char_ids), atol=1e-6, rtol=0)
    assert isinstance(config, BiLMConfig)


def test_elmokit_0_1_keys_still_load(fixture_dir: Path) -> None:
    files = (fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    elmo = Elmo(*files, 2, dropout=0.0)
    old = {
        ("scalar_mixes." + k[len("scalar_mix_") :] if k.startswith("scalar_mix_") else k): v
        for k, v in elmo.state_dict().items()
        if "scalar_parameters" not in k
    }
    old["scalar_mixes.0.scalar_parameters"] = torch.tensor([1.0, 2.0, 3.0])
    old["scalar_mixes.1.scalar_parameters"] = torch.tensor([-1.0, 0.0, 1.0])
    elmo.load_state_dict(old, strict=True)
    assert elmo.mixes[0].weights().tolist() == [1.0, 2.0, 3.0]
    assert elmo.mixes[1].weights().tolist() == [-1.0, 0.0, 1.0]

"""Elmo on the real reference model (2 LSTM layers, P = 16): outputs are the biLM layers
mixed by hand, plus freezing, the word-id cache, torch.compile and state_dict round trips."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import elmokit
from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.elmo import Elmo, elmo_layer_weights
from elmokit.initialization import random_bilm

OUTPUT_DIM = 32  # 2P
N_LAYERS = 3  # token layer + 2 LSTM layers
ATOL = 1e-6


@pytest.fixture(scope="module")
def sentences(fixture_dir: Path) -> list[list[str]]:
    with open(fixture_dir / "sentences.json") as handle:
        batches = json.load(handle)
    # Real sentences of very different lengths (the first is long) plus a one-word row.
    return [batches[0][0].split(), batches[0][2].split()[:7], ["Hello"], batches[1][0].split()[:12]]


@pytest.fixture(scope="module")
def char_ids(sentences: list[list[str]]) -> torch.Tensor:
    return batch_to_ids(sentences)


pytestmark = pytest.mark.usefixtures("one_thread")


def load_bilm(fixture_dir: Path) -> BiLM:
    return elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")


def make_elmo(fixture_dir: Path, **kwargs: object) -> Elmo:
    # These tests check properties of one call, so each call starts from zero state ("reset");
    # Elmo's own default is AllenNLP's "carry" (tests/compat/).
    kwargs.setdefault("dropout", 0.0)
    kwargs.setdefault("state_policy", "reset")
    return Elmo(
        fixture_dir / "options.json",
        fixture_dir / "lm_weights.hdf5",
        **kwargs,  # type: ignore[arg-type]
    ).eval()


def softmax(values: list[float]) -> np.ndarray:
    exp = np.exp(np.array(values, dtype=np.float64))
    return exp / exp.sum()


def test_output_is_the_hand_mixed_bilm_layers(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    params = [0.4, -1.2, 0.9]
    elmo = make_elmo(fixture_dir, scalar_mix_parameters=params)
    with torch.no_grad():
        elmo.mixes[0].gamma.fill_(1.5)
        output = elmo(char_ids)
        reference = load_bilm(fixture_dir)(char_ids)
    (representation,) = output["elmo_representations"]
    assert representation.shape == (*char_ids.shape[:2], OUTPUT_DIM)
    assert elmo.get_output_dim() == OUTPUT_DIM
    assert torch.equal(output["mask"], reference.mask)
    expected = 1.5 * np.einsum("l,bltd->btd", softmax(params), reference.layers.numpy())
    np.testing.assert_allclose(representation.numpy(), expected, atol=ATOL)
    # Fixed weights are not trained, as in AllenNLP.
    assert not any(p.requires_grad for p in elmo.mixes[0].parameters())


def test_default_mix_is_the_layer_average(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir)
    with torch.no_grad():
        representation = elmo(char_ids)["elmo_representations"][0]
        layers = load_bilm(fixture_dir)(char_ids).layers
    torch.testing.assert_close(representation, layers.mean(dim=1), atol=ATOL, rtol=0)
    assert elmo_layer_weights(elmo) == [pytest.approx([1 / 3] * 3)]


def _numpy_layer_norm_mix(layers: np.ndarray, mask: np.ndarray, params: list[float]) -> np.ndarray:
    """layers [B, L, T, D], mask [B, T]: one mean/variance per layer over the real tokens."""
    mixed = np.zeros((layers.shape[0], layers.shape[2], layers.shape[3]))
    for index, weight in enumerate(softmax(params)):
        real = layers[:, index][mask]  # [n_real, D]
        mixed += weight * (layers[:, index] - real.mean()) / np.sqrt(real.var() + 1e-12)
    return mixed * mask[..., None]


@pytest.mark.parametrize("keep_boundaries", [False, True])
def test_layer_norm_matches_numpy(
    fixture_dir: Path, char_ids: torch.Tensor, keep_boundaries: bool
) -> None:
    params = [0.2, 0.5, -0.3]
    elmo = make_elmo(
        fixture_dir,
        do_layer_norm=True,
        scalar_mix_parameters=params,
        keep_sentence_boundaries=keep_boundaries,
    )
    with torch.no_grad():
        output = elmo(char_ids)
        # As in AllenNLP the statistics include the <S> and </S> positions, which are removed
        # from the output afterwards.
        full = load_bilm(fixture_dir)(char_ids, keep_sentence_boundaries=True)
    layers, mask = full.layers.double().numpy(), full.mask.numpy()
    expected = _numpy_layer_norm_mix(layers, mask, params)
    if not keep_boundaries:
        steps = char_ids.shape[1]
        token_mask = (char_ids > 0).any(-1).numpy()
        expected = expected[:, 1 : steps + 1] * token_mask[..., None]
    np.testing.assert_allclose(output["elmo_representations"][0].numpy(), expected, atol=1e-5)


def test_keep_sentence_boundaries_shapes(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir, keep_sentence_boundaries=True, num_output_representations=2)
    with torch.no_grad():
        output = elmo(char_ids)
        full = load_bilm(fixture_dir)(char_ids, keep_sentence_boundaries=True)
    batch, steps = char_ids.shape[:2]
    for representation in output["elmo_representations"]:
        assert representation.shape == (batch, steps + 2, OUTPUT_DIM)
        torch.testing.assert_close(representation, full.layers.mean(1), atol=ATOL, rtol=0)
    lengths = (char_ids > 0).any(-1).sum(1)
    assert output["mask"].shape == (batch, steps + 2)
    assert output["mask"].sum(1).tolist() == (lengths + 2).tolist()


def test_representations_are_independent(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir, num_output_representations=2)
    with torch.no_grad():
        for w, value in zip(elmo.mixes[0].scalar_parameters, [2.0, 0.0, -2.0], strict=True):
            w.fill_(value)
        for w, value in zip(elmo.mixes[1].scalar_parameters, [-2.0, 0.0, 2.0], strict=True):
            w.fill_(value)
    first, second = elmo(char_ids)["elmo_representations"]
    assert (first - second).abs().max() > 0.1
    first.sum().backward()
    assert all(w.grad is not None for w in elmo.mixes[0].scalar_parameters)
    assert all(w.grad is None for w in elmo.mixes[1].scalar_parameters)
    with torch.no_grad():
        for w in elmo.mixes[1].scalar_parameters:
            w.fill_(5.0)
        assert torch.equal(elmo(char_ids)["elmo_representations"][0], first.detach())


def test_frozen_bilm_gets_no_gradient(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir)
    loss = elmo(char_ids)["elmo_representations"][0].pow(2).sum() + 0.1 * elmo.l2_penalty()
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in elmo.bilm.parameters())
    weights_grad = torch.cat([w.grad for w in elmo.mixes[0].scalar_parameters])
    assert weights_grad.abs().sum() > 0
    assert elmo.mixes[0].gamma.grad is not None
    # train() leaves a frozen biLM in eval mode.
    assert elmo.train().training and not elmo.bilm.training


def test_requires_grad_fine_tunes_the_bilm(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir, requires_grad=True)
    elmo(char_ids)["elmo_representations"][0].pow(2).sum().backward()
    grads = {name: p.grad for name, p in elmo.bilm.named_parameters()}
    for name in ("token_encoder.char_embed.weight", "lstm.layers.0.W_0", "lstm.layers.1.W_P"):
        grad = grads[name]
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("requires_grad", [False, True])
def test_vocab_cache_equals_char_path(
    fixture_dir: Path, sentences: list[list[str]], char_ids: torch.Tensor, requires_grad: bool
) -> None:
    vocab = ["@@PADDING@@", *sorted({word for sentence in sentences for word in sentence})]
    index = {word: i for i, word in enumerate(vocab)}
    word_ids = torch.zeros(char_ids.shape[:2], dtype=torch.long)
    for row, sentence in enumerate(sentences):
        word_ids[row, : len(sentence)] = torch.tensor([index[word] for word in sentence])
    for keep in (False, True):
        elmo = make_elmo(
            fixture_dir,
            vocab_to_cache=vocab,
            do_layer_norm=True,
            keep_sentence_boundaries=keep,
            requires_grad=requires_grad,
        )
        with torch.no_grad():
            from_chars = elmo(char_ids)
            from_words = elmo(word_ids)
            from_kwarg = elmo(None, word_inputs=word_ids)
        assert torch.equal(from_words["mask"], from_chars["mask"])
        for output in (from_words, from_kwarg):
            torch.testing.assert_close(
                output["elmo_representations"][0],
                from_chars["elmo_representations"][0],
                atol=ATOL,
                rtol=0,
            )
    # Extra leading dimensions are flattened and restored, as in AllenNLP (such word ids
    # must come as word_inputs: [2, B, 50] would look like character ids).
    with torch.no_grad():
        nested = elmo(None, word_inputs=torch.stack([word_ids, word_ids]))
        nested_chars = elmo(torch.stack([char_ids, char_ids]))
    assert torch.equal(nested["mask"][1], from_words["mask"])
    assert torch.equal(nested_chars["mask"][1], from_words["mask"])
    for output in (nested, nested_chars):
        torch.testing.assert_close(
            output["elmo_representations"][0][1],
            from_words["elmo_representations"][0],
            atol=ATOL,
            rtol=0,
        )


def test_torch_compile(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir, do_layer_norm=True, num_output_representations=2)
    compiled = torch.compile(elmo, backend="aot_eager")
    for batch in (char_ids, char_ids[1:3, :7]):
        expected = elmo(batch)["elmo_representations"]
        got = compiled(batch)["elmo_representations"]
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    got[0].sum().backward()
    assert all(w.grad is not None for w in elmo.mixes[0].scalar_parameters)


class Tagger(nn.Module):
    """The shape of a user's model: Elmo inside, a classifier on top."""

    def __init__(self, elmo: Elmo) -> None:
        super().__init__()
        self.elmo = elmo
        self.out = nn.Linear(elmo.get_output_dim(), 5)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.elmo(char_ids)["elmo_representations"][0])


def test_state_dict_round_trip(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    vocab = ["@@PADDING@@", "Hello", "the"]
    model = Tagger(make_elmo(fixture_dir, vocab_to_cache=vocab))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(char_ids).pow(2).mean().backward()
    optimizer.step()  # the mix weights move away from their initial value
    assert model.elmo.mixes[0].weights().abs().sum() > 0
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert any(key.startswith("elmo.bilm.") for key in model.state_dict())

    # A fresh model with different (random) biLM weights gets everything from the state dict.
    fresh_bilm = random_bilm(model.elmo.bilm.config, seed=3)
    fresh = Tagger(Elmo(None, bilm=fresh_bilm, dropout=0.0, vocab_to_cache=vocab))
    fresh.eval()
    model.eval()
    with torch.no_grad():
        assert not torch.equal(fresh(char_ids), model(char_ids))
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer))
        assert torch.equal(fresh(char_ids), model(char_ids))
        # The word-id cache was rebuilt from the loaded weights.
        words = torch.tensor([[1, 2, 0]])
        torch.testing.assert_close(
            fresh.elmo(words)["elmo_representations"][0],
            model.elmo(words)["elmo_representations"][0],
            atol=0,
            rtol=0,
        )


def test_dropout_only_in_training(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir, dropout=0.5)
    with torch.no_grad():
        clean = elmo(char_ids)["elmo_representations"][0]
        elmo.train()
        noisy = elmo(char_ids)["elmo_representations"][0]
    real = (char_ids > 0).any(-1)
    dropped = (noisy == 0) & (clean != 0)
    assert 0.3 < dropped[real].float().mean() < 0.7
    kept = noisy != 0
    torch.testing.assert_close(noisy[kept], 2 * clean[kept])


def test_constructor_options(fixture_dir: Path) -> None:
    elmo = Elmo(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5", state_policy="reset")
    assert elmo.bilm.state_policy == "reset" and elmo.num_layers == N_LAYERS
    default = Elmo(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    assert default.bilm.state_policy == "carry"  # AllenNLP's stateful default
    bilm = load_bilm(fixture_dir)
    assert Elmo(None, bilm=bilm).bilm is bilm


def test_bad_inputs(fixture_dir: Path, char_ids: torch.Tensor) -> None:
    elmo = make_elmo(fixture_dir)
    with pytest.raises(ValueError, match="vocab_to_cache"):
        elmo(char_ids[:, :, 0])  # word ids without a cache
    with pytest.raises(ValueError, match="vocab_to_cache"):
        elmo(None, word_inputs=char_ids[:, :, 0])
    with pytest.raises(ValueError, match=r"\[batch, time, 50\]"):
        elmo(char_ids[:, :, :20])
    with pytest.raises(TypeError, match="integers"):
        elmo(char_ids.float())
    with pytest.warns(UserWarning, match="without vocab_to_cache"):
        elmo(char_ids, word_inputs=char_ids[:, :, 0])
    cached = make_elmo(fixture_dir, vocab_to_cache=["@@PADDING@@", "a", "b"])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        cached(torch.tensor([[1, 3]]))
    with pytest.raises(ValueError, match="left-aligned"):
        cached(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="not both"):
        Elmo(fixture_dir / "options.json", bilm=load_bilm(fixture_dir))
    with pytest.raises(ValueError, match="needs a model"):
        Elmo(None)
    with pytest.raises(ValueError, match="num_output_representations"):
        make_elmo(fixture_dir, num_output_representations=0)
    with pytest.raises(ValueError, match="2 values for 3 layers"):
        make_elmo(fixture_dir, scalar_mix_parameters=[0.0, 1.0])
    with pytest.raises(FileNotFoundError):
        Elmo("no-such-model")

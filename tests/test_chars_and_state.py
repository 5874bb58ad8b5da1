"""Character ids (FORMATS.md) and the LSTM state policies."""

from __future__ import annotations

import pytest
import torch

from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.chars import BOS_CHAR_IDS, EOS_CHAR_IDS, token_to_char_ids
from elmokit.initialization import random_bilm

PAD = 261


def test_documented_examples() -> None:
    assert token_to_char_ids(chr(256) + "t") == (259, 197, 129, 117, 260) + (PAD,) * 45
    assert token_to_char_ids("<S>") == BOS_CHAR_IDS == (259, 257, 260) + (PAD,) * 47
    assert token_to_char_ids("</S>") == EOS_CHAR_IDS == (259, 258, 260) + (PAD,) * 47


def test_long_tokens_are_truncated_to_48_bytes() -> None:
    ids = token_to_char_ids("x" * 100)
    assert len(ids) == 50 and ids[0] == 259 and ids[49] == 260
    assert ids[1:49] == (ord("x") + 1,) * 48
    # A multi-byte character cut in the middle keeps its leading bytes, as bytes[:48] does.
    ids = token_to_char_ids("é" * 30)
    assert ids[1:49] == ((0xC3 + 1, 0xA9 + 1) * 24)


def test_batch_to_ids_pads_with_zero() -> None:
    ids = batch_to_ids([["a", "bb"], ["c"], []])
    assert ids.shape == (3, 2, 50) and ids.dtype == torch.long
    assert ids[1, 1].eq(0).all() and ids[2].eq(0).all()
    assert tuple(ids[0, 1].tolist()) == token_to_char_ids("bb")
    assert batch_to_ids([]).shape == (0, 0, 50)


SENTENCES = [
    ["The", "bank", "raised", "its", "rates", "."],
    "We sat on the bank of the river and watched the water go by .".split(),
    ["Hello"],
    ["Interest", "rates", "are", "rising", "again", "this", "year", ",", "analysts", "said", "."],
]


@pytest.fixture(scope="module")
def model() -> BiLM:
    return random_bilm("small", seed=7).eval()


def test_reset_policy_output_independent_of_batch(model: BiLM) -> None:
    target = SENTENCES[1]
    with torch.no_grad():
        alone = model(batch_to_ids([target])).layers[0]
        for batch in (SENTENCES, SENTENCES[::-1], [SENTENCES[2], target], [target] * 3):
            output = model(batch_to_ids(batch))
            for row, sentence in enumerate(batch):
                if sentence == target:
                    assert (output.layers[row, :, : len(target)] - alone).abs().max() <= 1e-6
                    assert output.layers[row, :, len(target) :].abs().sum() == 0
        again = model(batch_to_ids([target])).layers[0]
    assert torch.equal(alone, again)


def test_carry_policy_feeds_state_forward(model: BiLM) -> None:
    model.state_policy = "carry"
    try:
        with torch.no_grad():
            first = model(batch_to_ids([SENTENCES[0]])).layers
            second = model(batch_to_ids([SENTENCES[0]])).layers
            model.reset_states()
            third = model(batch_to_ids([SENTENCES[0]])).layers
            # A larger batch later: new rows start from zero, row 0 carries.
            wider = model(batch_to_ids([SENTENCES[0], SENTENCES[0]])).layers
    finally:
        model.state_policy = "reset"
    assert torch.equal(first[:, 0], second[:, 0])  # layer 0 is context-free
    assert (first[:, 1:] - second[:, 1:]).abs().max() > 1e-3
    assert torch.equal(first, third)
    assert (wider[1] - first[0]).abs().max() <= 1e-6
    assert (wider[0] - first[0]).abs().max() > 1e-3


def test_empty_sentences_give_empty_outputs(model: BiLM) -> None:
    with torch.no_grad():
        all_empty = model(batch_to_ids([[], []]))
        mixed = model(batch_to_ids([[], ["word"]]))
    assert all_empty.layers.shape == (2, 3, 0, 256) and all_empty.mask.shape == (2, 0)
    assert mixed.layers.shape == (2, 3, 1, 256)
    assert not mixed.mask[0].any() and mixed.layers[0].abs().max() == 0


def test_keep_sentence_boundaries(model: BiLM) -> None:
    with torch.no_grad():
        trimmed = model(batch_to_ids(SENTENCES[:2]))
        kept = model(batch_to_ids(SENTENCES[:2]), keep_sentence_boundaries=True)
    assert kept.layers.shape[2] == trimmed.layers.shape[2] + 2
    assert kept.mask[0].sum() == len(SENTENCES[0]) + 2
    torch.testing.assert_close(
        kept.layers[:, :, 1:-1] * trimmed.mask[:, None, :, None], trimmed.layers
    )


def test_runs_in_float64_and_on_requested_device(model: BiLM) -> None:
    double = random_bilm("small", seed=7).to(torch.float64).eval()
    with torch.no_grad():
        out32 = model(batch_to_ids(SENTENCES[:2])).layers
        out64 = double(batch_to_ids(SENTENCES[:2])).layers
    assert out64.dtype == torch.float64
    assert (out32.double() - out64).abs().max() < 1e-4


def test_boundary_vectors_are_cached_without_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    model = random_bilm("small", seed=7).eval()
    calls: list[int] = []
    encode = model.encode_tokens

    def counting(ids: torch.Tensor) -> torch.Tensor:
        calls.append(ids.shape[0])
        return encode(ids)

    monkeypatch.setattr(model, "encode_tokens", counting)
    device = torch.device("cpu")
    with torch.no_grad():
        first = model.boundary_vectors(device)
        second = model.boundary_vectors(device)
        assert len(calls) == 1
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
        model.token_encoder.char_embed.weight.add_(0.5)  # a parameter update
        changed = model.boundary_vectors(device)
        assert len(calls) == 2 and not torch.equal(changed[0], first[0])
    model.token_encoder.char_embed.weight.requires_grad_(True)
    with torch.enable_grad():
        bos, _ = model.boundary_vectors(device)  # with gradients: computed, never cached
        assert bos.requires_grad and len(calls) == 3

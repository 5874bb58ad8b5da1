"""The inference fast paths (BiLM.optimize_for_inference) against the autograd reference path.

Tolerances, measured on random models of the published small shape over 1,000 WikiText-2
sentences (benchmarks/README.md): fp32 differs from the reference by < 1e-5 (float rounding in
a different order: the reference is itself ~5e-6 from float64); per-token cosine to the
reference is >= 0.9998 for bf16 and >= 0.998 for int8. The thresholds below leave margin.
"""

from __future__ import annotations

import copy
import pickle
from typing import cast

import pytest
import torch

from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.initialization import lstm_layers, random_bilm
from elmokit.modules.fast_inference import InferenceMode, PackedLinear, bucket_rows
from elmokit.modules.token_encoder import Highway

SENTENCES = [
    "The committee approved the budget after a long debate on Tuesday .".split(),
    "She walked along the bank of the river and watched the boats .".split(),
    ["Hello"],
    "Interest rates rose sharply , and the bank raised its lending rate again .".split(),
    # Long tokens: more than 44 characters take the masked-window branch of the char CNN.
    ["Pneumonoultramicroscopicsilicovolcanoconiosis" * 2, "Résumé", "x" * 60, "."],
    [],
]
FP32_TOLERANCE = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> BiLM:
    return random_bilm("small", seed=5).eval()


@pytest.fixture(scope="module")
def char_ids() -> torch.Tensor:
    return batch_to_ids(SENTENCES)


def _layers(
    model: BiLM, char_ids: torch.Tensor, mode: InferenceMode, keep_sentence_boundaries: bool = False
) -> torch.Tensor:
    model.optimize_for_inference(mode)
    try:
        with torch.no_grad():
            return model(char_ids, keep_sentence_boundaries).layers
    finally:
        model.optimize_for_inference("fp32")


def _token_cosines(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    a = a.transpose(1, 2)[mask]  # [tokens, layers, 2P]
    b = b.transpose(1, 2)[mask]
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_default_is_the_fast_fp32_path(model: BiLM) -> None:
    # Fast by default; the exact autograd path is one argument away (and what parity uses).
    assert random_bilm("small", seed=5).inference_mode == "fp32"
    assert random_bilm("small", seed=5).optimize_for_inference("reference").inference_mode == (
        "reference"
    )
    with pytest.raises(ValueError, match="inference mode"):
        model.optimize_for_inference("fp16")  # type: ignore[arg-type]


@pytest.mark.parametrize("keep_boundaries", [False, True])
def test_fp32_matches_reference(model: BiLM, char_ids: torch.Tensor, keep_boundaries: bool) -> None:
    reference = _layers(model, char_ids, "reference", keep_sentence_boundaries=keep_boundaries)
    fast = _layers(model, char_ids, "fp32", keep_sentence_boundaries=keep_boundaries)
    assert fast.shape == reference.shape
    assert (fast - reference).abs().max() < FP32_TOLERANCE
    if not keep_boundaries:
        assert fast[5].abs().max() == 0  # the empty sentence


def test_fp32_token_encoder_matches_reference(model: BiLM) -> None:
    ids = batch_to_ids([["a", "bank", "x" * 45, "y" * 49, "z" * 70, "<S>"]])[0]
    # Odd but valid inputs: all padding characters, padding inside a token.
    odd = torch.full((2, 50), 261)
    odd[1, :3] = torch.tensor([259, 100, 261])
    odd[1, 5] = 260
    ids = torch.cat([ids, odd])
    with torch.no_grad():
        fast = model.token_encoder(ids)
        model.optimize_for_inference("reference")
        reference = model.token_encoder(ids)
        model.optimize_for_inference("fp32")
    assert (fast - reference).abs().max() < 5e-6  # rounding only: same windows, other order


def test_fp32_carry_policy_matches_reference(model: BiLM) -> None:
    outputs = {}
    modes: tuple[InferenceMode, ...] = ("reference", "fp32")
    for mode in modes:
        model.optimize_for_inference(mode)
        model.state_policy = "carry"
        with torch.no_grad():
            outputs[mode] = [model(batch_to_ids(SENTENCES[k : k + 2])).layers for k in (0, 2, 0)]
        model.state_policy = "reset"
    model.optimize_for_inference("fp32")
    for fast, reference in zip(outputs["fp32"], outputs["reference"], strict=True):
        assert (fast - reference).abs().max() < FP32_TOLERANCE


def test_fp32_is_batch_invariant(model: BiLM) -> None:
    target = SENTENCES[1]
    with torch.no_grad():
        alone = model(batch_to_ids([target])).layers[0]
        for batch in (SENTENCES, [SENTENCES[2], target], [target] * 20):
            row = batch.index(target)
            together = model(batch_to_ids(batch)).layers[row, :, : len(target)]
            assert torch.equal(together, alone)


@pytest.mark.parametrize(("mode", "min_cosine"), [("bf16", 0.999), ("int8", 0.99)])
def test_reduced_precision_modes_stay_close(
    model: BiLM, char_ids: torch.Tensor, mode: InferenceMode, min_cosine: float
) -> None:
    if mode == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no bf16 support on this CPU")
    reference = _layers(model, char_ids, "fp32")
    reduced = _layers(model, char_ids, mode)
    mask = (char_ids > 0).any(-1)
    cosines = _token_cosines(reduced, reference, mask)
    assert cosines.min() > min_cosine, float(cosines.min())
    assert cosines.mean() > 0.999, float(cosines.mean())
    assert not torch.equal(reduced, reference)  # the mode really is in effect
    assert reduced[5].abs().max() == 0


def test_row_buckets_are_few_and_tight() -> None:
    buckets = [bucket_rows(rows) for rows in range(1, 20_001)]
    assert all(b >= r for r, b in zip(range(1, 20_001), buckets, strict=True))
    assert buckets == sorted(buckets)
    assert all(b <= max(64, 1.125 * r) for r, b in zip(range(1, 20_001), buckets, strict=True))
    # 16..64 by 16, then 8 sizes per doubling up to 20k rows: 4 + 8 * 9 at most.
    assert len(set(buckets)) <= 4 + 8 * 9


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8"])
def test_spare_bucket_rows_change_no_result(mode: InferenceMode) -> None:
    torch.manual_seed(0)
    linear = PackedLinear(torch.randn(96, 200), torch.randn(200), mode)
    x = torch.randn(300, 96)
    full = linear(x)  # 300 rows run as 320
    for rows in (1, 17, 65, 73, 150, 299):
        part = linear(x[:rows])  # run as bucket_rows(rows) rows, the spare ones zero
        for spare in (0, 7, 200):
            padded = torch.cat([x[:rows], torch.zeros(spare, 96)])
            assert torch.equal(linear._call(padded)[:rows], part), (rows, spare)
        if mode != "int8":  # int8 scales activations per tensor: rows depend on each other
            assert torch.equal(part, full[:rows]), rows


def test_int8_needs_float32_on_cpu() -> None:
    double = random_bilm("small", seed=5).double().eval().optimize_for_inference("int8")
    with torch.no_grad(), pytest.raises(ValueError, match="int8"):
        double(batch_to_ids(SENTENCES[:1]))


def test_autograd_uses_the_reference_path(model: BiLM, char_ids: torch.Tensor) -> None:
    output = model(char_ids).layers  # grad enabled, parameters require grad
    assert output.requires_grad
    output[:, 2].sum().backward()
    grads = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    assert all(g is not None for g in grads)
    with torch.no_grad():
        fast = model(char_ids).layers
    assert (fast - output.detach()).abs().max() < FP32_TOLERANCE


def test_prepared_weights_follow_parameter_changes(char_ids: torch.Tensor) -> None:
    model = random_bilm("small", seed=6).eval()
    with torch.no_grad():
        before = model(char_ids).layers
        lstm_layers(model)[1].W_P.mul_(0.5)
        cast(Highway, model.token_encoder.highways[0]).b_transform.add_(0.1)
        after = model(char_ids).layers
        reference = _layers(model, char_ids, "reference")
    assert (after - before).abs().max() > 1e-2
    assert (after - reference).abs().max() < FP32_TOLERANCE


def test_copies_and_pickles_after_use(model: BiLM, char_ids: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(char_ids).layers  # prepared weights exist now
        copied = copy.deepcopy(model)
        unpickled = pickle.loads(pickle.dumps(model))
        assert torch.equal(copied(char_ids).layers, expected)
        assert torch.equal(unpickled(char_ids).layers, expected)
    assert set(model.state_dict()) == set(copied.state_dict())

"""ScalarMix against the formula of FORMATS.md ("ScalarMix"), computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elmokit.modules.scalar_mix import ScalarMix

N_LAYERS, BATCH, STEPS, DIM = 3, 4, 6, 5


@pytest.fixture()
def layers() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    # Different offsets and scales per layer so that layer norm visibly matters.
    scale = torch.tensor([1.0, 3.0, 0.5]).view(1, N_LAYERS, 1, 1)
    offset = torch.tensor([0.0, 2.0, -1.0]).view(1, N_LAYERS, 1, 1)
    return torch.randn(BATCH, N_LAYERS, STEPS, DIM, generator=generator) * scale + offset


@pytest.fixture()
def mask() -> torch.Tensor:
    lengths = torch.tensor([6, 3, 1, 4])
    return torch.arange(STEPS).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]


def _softmax(values: np.ndarray) -> np.ndarray:
    exp = np.exp(values - values.max())
    return exp / exp.sum()


def test_initial_mix_is_the_mean_of_the_layers(layers: torch.Tensor) -> None:
    mix = ScalarMix(N_LAYERS)
    assert mix.weights().tolist() == [0.0] * N_LAYERS and mix.gamma.tolist() == [1.0]
    out = mix(layers)
    assert out.shape == (BATCH, STEPS, DIM)
    torch.testing.assert_close(out, layers.mean(dim=1))


def test_weights_and_gamma_match_the_formula(layers: torch.Tensor) -> None:
    params = [0.5, -1.0, 2.0]
    mix = ScalarMix(N_LAYERS, initial_scalar_parameters=params)
    with torch.no_grad():
        mix.gamma.fill_(1.7)
    weights = _softmax(np.array(params))
    expected = 1.7 * np.einsum("l,bltd->btd", weights, layers.numpy())
    np.testing.assert_allclose(mix(layers).detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    # A list of [B, T, D] layers is the same input as one [B, L, T, D] tensor.
    as_list = mix(list(layers.unbind(dim=1)))
    torch.testing.assert_close(as_list, mix(layers))
    np.testing.assert_allclose(mix.layer_weights().numpy(), weights, rtol=1e-6)


def test_layer_norm_matches_numpy_over_unmasked_elements(
    layers: torch.Tensor, mask: torch.Tensor
) -> None:
    params = [0.3, 0.0, -0.4]
    mix = ScalarMix(N_LAYERS, do_layer_norm=True, initial_scalar_parameters=params)
    out = mix(layers, mask).detach().numpy()

    h, m = layers.numpy().astype(np.float64), mask.numpy()
    expected = np.zeros((BATCH, STEPS, DIM))
    for layer, weight in enumerate(_softmax(np.array(params))):
        values = h[:, layer]  # [B, T, D]
        real = values[m]  # [n_real_tokens, D]: one mean/variance over all of them
        normed = (values - real.mean()) / np.sqrt(real.var() + 1e-12)
        expected += weight * normed
    np.testing.assert_allclose(out[m], expected[m], rtol=1e-5, atol=1e-5)
    # Not a per-token LayerNorm: a real token's vector does not have zero mean by itself.
    assert np.abs(out[m].mean(axis=-1)).max() > 0.1
    # Padding values do not move the statistics.
    poisoned = layers.clone()
    poisoned[~mask.unsqueeze(1).expand(-1, N_LAYERS, -1)] = 1000.0
    poisoned_out = mix(poisoned, mask).detach().numpy()
    np.testing.assert_allclose(poisoned_out[m], out[m], rtol=1e-5, atol=1e-5)


def test_gradients_reach_weights_and_gamma(layers: torch.Tensor, mask: torch.Tensor) -> None:
    mix = ScalarMix(N_LAYERS, do_layer_norm=True)
    mix(layers, mask).pow(2).sum().backward()
    assert all(p.grad is not None for p in mix.scalar_parameters)
    assert torch.cat([p.grad for p in mix.scalar_parameters]).abs().sum() > 0
    assert mix.gamma.grad is not None and mix.gamma.grad.abs().sum() > 0


def test_fixed_weights_are_not_trainable() -> None:
    mix = ScalarMix(N_LAYERS, initial_scalar_parameters=[1.0, 2.0, 3.0], trainable=False)
    assert not any(p.requires_grad for p in mix.scalar_parameters)
    assert not mix.gamma.requires_grad


def test_l2_penalty_and_layer_weights() -> None:
    mix = ScalarMix(N_LAYERS, initial_scalar_parameters=[1.0, -2.0, 0.5])
    penalty = mix.l2_penalty()
    assert penalty.item() == pytest.approx(1.0 + 4.0 + 0.25)
    penalty.backward()
    grad = torch.cat([p.grad for p in mix.scalar_parameters])
    torch.testing.assert_close(grad, 2 * mix.weights().detach())
    weights = mix.layer_weights()
    assert not weights.requires_grad and weights.sum().item() == pytest.approx(1.0)
    assert ScalarMix(2).l2_penalty().item() == 0.0


def test_bad_inputs(layers: torch.Tensor, mask: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="3 values for 2 layers"):
        ScalarMix(2, initial_scalar_parameters=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least one layer"):
        ScalarMix(0)
    with pytest.raises(ValueError, match="built for 2 layers, got 3"):
        ScalarMix(2)(layers)
    with pytest.raises(ValueError, match="built for 2 layers, got 3"):
        ScalarMix(2)(list(layers.unbind(1)))
    with pytest.raises(ValueError, match="shape"):
        ScalarMix(N_LAYERS)(layers[0])  # [L, T, D]: batch dimension missing
    with pytest.raises(ValueError, match="one shape"):
        ScalarMix(2)([layers[:, 0], layers[:, 1, :3]])
    with pytest.raises(ValueError, match="needs the mask"):
        ScalarMix(N_LAYERS, do_layer_norm=True)(layers)
    with pytest.raises(ValueError, match="mask shape"):
        ScalarMix(N_LAYERS, do_layer_norm=True)(layers, mask[:, :3])

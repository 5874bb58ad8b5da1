"""Weight initialisation: for training from scratch and for random-weight test models.

The char CNN, highway and projection follow bilm-tf's initialisers (scaled normals, highway
carry bias -2 so layers start close to identity). The LSTM matrices use Glorot-uniform, TF's
LSTMCell default. `lstm_gain` scales the LSTM matrices: random test models use a gain above 1
so the activations look like a trained model's (cells reaching the clip on a small fraction of
values) instead of staying near zero.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from elmokit.bilm import BiLM
from elmokit.modules.lstm import ProjectedLSTMLayer
from elmokit.modules.token_encoder import Highway


def init_bilm_weights(model: BiLM, seed: int = 0, lstm_gain: float = 1.0) -> BiLM:
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    encoder = model.token_encoder

    def normal_(tensor: torch.Tensor, std: float) -> None:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

    def uniform_(tensor: torch.Tensor, bound: float) -> None:
        tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)

    with torch.no_grad():
        uniform_(encoder.char_embed.weight, 1.0)
        encoder.char_embed.weight[0].zero_()  # id 0: batch padding
        if encoder.word_embed is not None:
            uniform_(encoder.word_embed.weight, 1.0)
            encoder.word_embed.weight[0].zero_()
        convs = cast(list[nn.Conv1d], list(encoder.convs))
        for conv, (width, _) in zip(convs, config.filters, strict=True):
            normal_(conv.weight, math.sqrt(1.0 / (width * config.char_embedding_dim)))
            assert conv.bias is not None
            conv.bias.zero_()
        n_filters = config.n_filters
        for highway in cast(list[Highway], list(encoder.highways)):
            normal_(highway.W_carry, math.sqrt(1.0 / n_filters))
            highway.b_carry.fill_(-2.0)
            normal_(highway.W_transform, math.sqrt(1.0 / n_filters))
            highway.b_transform.zero_()
        if encoder.use_projection:
            normal_(encoder.W_proj, math.sqrt(1.0 / config.token_features_dim))
            encoder.b_proj.zero_()
        for layer in lstm_layers(model):
            fan_in, fan_out = layer.W_0.shape[1], layer.W_0.shape[2]
            uniform_(layer.W_0, lstm_gain * math.sqrt(6.0 / (fan_in + fan_out)))
            layer.B.zero_()
            hidden, projection = layer.W_P.shape[1], layer.W_P.shape[2]
            uniform_(layer.W_P, lstm_gain * math.sqrt(6.0 / (hidden + projection)))
    return model


def random_bilm(
    config_name_or_config: object,
    seed: int = 0,
    lstm_gain: float = 2.0,
    stored_forget_bias: float = 1.0,
) -> BiLM:
    """A BiLM with random weights, for tests and benchmarks (published shapes by name).

    The defaults (gain 2, a stored forget bias of 1 as trained LSTMs learn) give activations
    of order 1 with the cell clip reached on a few percent of values over PTB sentences.
    """
    from elmokit.config import BiLMConfig

    if isinstance(config_name_or_config, str):
        config = BiLMConfig.published(config_name_or_config)
    elif isinstance(config_name_or_config, BiLMConfig):
        config = config_name_or_config
    else:
        raise TypeError("random_bilm takes a published config name or a BiLMConfig")
    model = init_bilm_weights(BiLM(config), seed=seed, lstm_gain=lstm_gain)
    with torch.no_grad():
        for layer in lstm_layers(model):
            hidden = layer.B.shape[1] // 4
            layer.B[:, 2 * hidden : 3 * hidden] = stored_forget_bias
    return model


def lstm_layers(model: BiLM) -> list[ProjectedLSTMLayer]:
    return cast(list[ProjectedLSTMLayer], list(model.lstm.layers))

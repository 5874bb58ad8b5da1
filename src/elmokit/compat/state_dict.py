"""AllenNLP's state-dict layout of the biLM inside `Elmo`, translated to elmokit's.

AllenNLP keeps the pre-trained biLM under `_elmo_lstm.` in its own layout (weights in
`y = W x` orientation, the LSTM gates in the order input, forget, memory, output with the
forget bias folded into the state bias, each highway as one matrix with the carry gate
negated). elmokit keeps the published file's layout (FORMATS.md): `x @ W`, TF's gate order
input, memory, forget, output, the forget bias added at run time, carry and transform apart.
A task model trained with AllenNLP (its `Elmo` at `model.elmo`, say) is therefore loaded by
translating every `_elmo_lstm.` tensor, exactly (permutations, transposes, negations and the
+1 of the forget bias only).
"""

from __future__ import annotations

import torch

from elmokit.config import BiLMConfig
from elmokit.modules.lstm import FORGET_BIAS

ALLENNLP_BILM = "_elmo_lstm."
_ENCODER = ALLENNLP_BILM + "_token_embedder."
_LSTM = ALLENNLP_BILM + "_elmo_lstm."
# Derived in AllenNLP from the weights and a vocabulary; elmokit rebuilds its own cache.
_DERIVED = (ALLENNLP_BILM + "_word_embedding.weight",)


def _tf_gate_order(tensor: torch.Tensor, hidden: int, dim: int) -> torch.Tensor:
    """Swap the 2nd and 3rd gate blocks along `dim` (AllenNLP i,f,j,o <-> TF i,j,f,o)."""
    i, f, j, o = tensor.split(hidden, dim=dim)
    return torch.cat([i, j, f, o], dim=dim)


def translate_allennlp_elmo_keys(
    state_dict: dict[str, torch.Tensor], prefix: str, config: BiLMConfig
) -> None:
    """Rewrite, in place, AllenNLP's `{prefix}_elmo_lstm.*` tensors as `{prefix}bilm.*`."""
    if not any(key.startswith(prefix + ALLENNLP_BILM) for key in state_dict):
        return
    for name in _DERIVED:
        state_dict.pop(prefix + name, None)

    def take(name: str) -> torch.Tensor:
        return state_dict.pop(prefix + name)

    out = prefix + "bilm."
    if prefix + _ENCODER + "_char_embedding_weights" in state_dict:
        state_dict[out + "token_encoder.char_embed.weight"] = take(
            _ENCODER + "_char_embedding_weights"
        )
    for index in range(len(config.filters)):
        for part in ("weight", "bias"):
            key = f"{_ENCODER}char_conv_{index}.{part}"
            if prefix + key in state_dict:
                state_dict[f"{out}token_encoder.convs.{index}.{part}"] = take(key)
    n = config.n_filters
    for index in range(config.n_highway):
        key = f"{_ENCODER}_highways._layers.{index}."
        if prefix + key + "weight" not in state_dict:
            continue
        weight, bias = take(key + "weight"), take(key + "bias")  # [2n, n], [2n]
        target = f"{out}token_encoder.highways.{index}."
        state_dict[target + "W_transform"] = weight[:n].t().contiguous()
        state_dict[target + "W_carry"] = (-weight[n:]).t().contiguous()
        state_dict[target + "b_transform"] = bias[:n].clone()
        state_dict[target + "b_carry"] = -bias[n:]
    if prefix + _ENCODER + "_projection.weight" in state_dict:
        state_dict[out + "token_encoder.W_proj"] = take(_ENCODER + "_projection.weight").t()
        state_dict[out + "token_encoder.b_proj"] = take(_ENCODER + "_projection.bias")
    hidden = config.lstm_dim
    for layer in range(config.n_layers):
        cells = [f"{_LSTM}{side}_layer_{layer}." for side in ("forward", "backward")]
        if not all(prefix + cell + "input_linearity.weight" in state_dict for cell in cells):
            continue
        w_0, biases, w_p = [], [], []
        for cell in cells:
            input_w = take(cell + "input_linearity.weight")  # [4H, in]
            state_w = take(cell + "state_linearity.weight")  # [4H, P]
            state_b = take(cell + "state_linearity.bias")  # [4H], forget bias included
            w_0.append(_tf_gate_order(torch.cat([input_w, state_w], dim=1), hidden, 0).t())
            bias = _tf_gate_order(state_b, hidden, 0).clone()
            bias[2 * hidden : 3 * hidden] -= FORGET_BIAS
            biases.append(bias)
            w_p.append(take(cell + "state_projection.weight").t())  # [H, P]
        target = f"{out}lstm.layers.{layer}."
        state_dict[target + "W_0"] = torch.stack(w_0).contiguous()
        state_dict[target + "B"] = torch.stack(biases)
        state_dict[target + "W_P"] = torch.stack(w_p).contiguous()

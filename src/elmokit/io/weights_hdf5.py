"""The published biLM weight file (bilm-tf layout, HDF5): read it exactly, write it back.

Every dataset is float32 with no attributes. The layout (FORMATS.md) maps one-to-one onto
the parameters of `BiLM`; only the conv kernels are transposed and the char embedding gains
a zero row for batch padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch

from elmokit.bilm import BiLM
from elmokit.config import BiLMConfig, ConfigError
from elmokit.io.files import atomic_path


class WeightFileError(ValueError):
    """The weight file is missing, unreadable, misshapen or inconsistent with the options."""


def _lstm_prefix(direction: int, layer: int) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def expected_shapes(config: BiLMConfig) -> dict[str, tuple[int, ...]]:
    """Every dataset of the weight file for this config, with its shape."""
    char_dim, n_filters, proj = config.char_embedding_dim, config.n_filters, config.projection_dim
    hidden = config.lstm_dim
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (261, char_dim)}
    for index, (width, count) in enumerate(config.filters):
        shapes[f"CNN/W_cnn_{index}"] = (1, width, char_dim, count)
        shapes[f"CNN/b_cnn_{index}"] = (count,)
    for k in range(config.n_highway):
        for name in ("carry", "transform"):
            shapes[f"CNN_high_{k}/W_{name}"] = (n_filters, n_filters)
            shapes[f"CNN_high_{k}/b_{name}"] = (n_filters,)
    if n_filters != proj:
        shapes["CNN_proj/W_proj"] = (n_filters, proj)
        shapes["CNN_proj/b_proj"] = (proj,)
    for direction in range(2):
        for layer in range(config.n_layers):
            prefix = _lstm_prefix(direction, layer)
            shapes[f"{prefix}/W_0"] = (proj + proj, 4 * hidden)
            shapes[f"{prefix}/B"] = (4 * hidden,)
            shapes[f"{prefix}/W_P_0"] = (hidden, proj)
    return shapes


def _parameter_views(model: BiLM) -> Iterator[tuple[str, torch.Tensor, str]]:
    """(dataset name, parameter slice, how to convert) for every dataset of the file.

    conversions: "embed" (drop/prepend the padding row), "conv" (TF kernel <-> Conv1d),
    "plain" (same array).
    """
    encoder = model.token_encoder
    yield "char_embed", encoder.char_embed.weight, "embed"
    for index, conv in enumerate(encoder.convs):
        yield f"CNN/W_cnn_{index}", conv.weight, "conv"  # type: ignore[misc]
        yield f"CNN/b_cnn_{index}", conv.bias, "plain"  # type: ignore[misc]
    for k, highway in enumerate(encoder.highways):
        for name in ("carry", "transform"):
            yield f"CNN_high_{k}/W_{name}", getattr(highway, f"W_{name}"), "plain"
            yield f"CNN_high_{k}/b_{name}", getattr(highway, f"b_{name}"), "plain"
    if encoder.use_projection:
        yield "CNN_proj/W_proj", encoder.W_proj, "plain"
        yield "CNN_proj/b_proj", encoder.b_proj, "plain"
    for direction in range(2):
        for index, layer in enumerate(model.lstm.layers):
            prefix = _lstm_prefix(direction, index)
            yield f"{prefix}/W_0", layer.W_0[direction], "plain"  # type: ignore[index]
            yield f"{prefix}/B", layer.B[direction], "plain"  # type: ignore[index]
            yield f"{prefix}/W_P_0", layer.W_P[direction], "plain"  # type: ignore[index]


def _to_parameter(array: np.ndarray, conversion: str) -> np.ndarray:
    if conversion == "embed":
        return np.concatenate([np.zeros((1, array.shape[1]), array.dtype), array])
    if conversion == "conv":
        return array[0].transpose(2, 1, 0)  # (width, in, out) -> (out, in, width)
    return array


def _to_dataset(array: np.ndarray, conversion: str) -> np.ndarray:
    if conversion == "embed":
        return array[1:]
    if conversion == "conv":
        return array.transpose(2, 1, 0)[np.newaxis]
    return array


def _open_weights(path: Path) -> h5py.File:
    if not path.exists():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise WeightFileError(
            f"{path} is not a readable HDF5 file (truncated or wrong format?): {error}"
        ) from None


def check_weight_file(path: str | Path, config: BiLMConfig) -> None:
    """Raise WeightFileError naming every dataset that is missing or misshapen."""
    path = Path(path)
    with _open_weights(path) as weights:
        problems = _shape_problems(weights, config)
    if problems:
        raise WeightFileError(f"{path} does not match the options: " + "; ".join(problems))


def _shape_problems(weights: h5py.File, config: BiLMConfig) -> list[str]:
    problems = []
    for name, shape in expected_shapes(config).items():
        if name not in weights:
            problems.append(f"dataset '{name}' is missing (expected shape {shape})")
        elif not isinstance(weights[name], h5py.Dataset):
            problems.append(f"'{name}' is a group, expected a dataset of shape {shape}")
        elif tuple(weights[name].shape) != shape:
            problems.append(
                f"dataset '{name}' has shape {tuple(weights[name].shape)}, expected {shape}"
            )
    return problems


def load_weights_into(model: BiLM, path: str | Path) -> None:
    """Copy the weight file into `model` (whose config must match the file)."""
    path = Path(path)
    with _open_weights(path) as weights:
        copy_weights(weights, model, str(path))


def copy_weights(weights: h5py.File, model: BiLM, path: str) -> None:
    """Copy an open weight file (a path's, or one read from an archive) into `model`."""
    problems = _shape_problems(weights, model.config)
    if problems:
        raise WeightFileError(
            f"{path} does not match the options: "
            + "; ".join(problems[:8])
            + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else "")
        )
    with torch.no_grad():
        for name, parameter, conversion in _parameter_views(model):
            try:
                array = np.asarray(weights[name][...], dtype=np.float32)
            except OSError as error:
                raise WeightFileError(
                    f"{path}: cannot read dataset '{name}' (truncated file?): {error}"
                ) from None
            if not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                raise WeightFileError(f"{path}: dataset '{name}' has {bad} NaN/inf values")
            parameter.copy_(torch.from_numpy(_to_parameter(array, conversion)))


def hdf5_layout_problems(config: BiLMConfig) -> list[str]:
    """Why the bilm-tf layout cannot hold this model ([] when it can)."""
    problems = []
    if config.characters != "bytes":
        problems.append(
            f"its characters are ids in its own dictionary ({config.characters!r} scheme), and "
            "bilm-tf files only know the 262 UTF-8 byte ids"
        )
    if config.word_embedding_dim:
        problems.append("it has a word embedding, which bilm-tf files have no place for")
    if config.always_project and config.n_filters == config.projection_dim:
        problems.append("its projection has the CNN's width, and bilm-tf would drop it")
    return problems


def save_weights(model: BiLM, path: str | Path) -> None:
    """Write the published layout (float32, no attributes); atomic: a temp file is renamed."""
    problems = hdf5_layout_problems(model.config)
    if problems:
        raise WeightFileError(
            "this model cannot be written in the bilm-tf HDF5 layout: "
            + "; ".join(problems)
            + " (save it natively instead: elmokit convert ... --to native)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".hdf5.tmp") as temporary, h5py.File(temporary, "w") as weights:
        for name, parameter, conversion in _parameter_views(model):
            array = parameter.detach().to("cpu", torch.float32).numpy()
            weights.create_dataset(name, data=np.ascontiguousarray(_to_dataset(array, conversion)))


def load_bilm(options_path: str | Path, weights_path: str | Path, **bilm_kwargs: object) -> BiLM:
    """A BiLM from the published options.json + weights.hdf5 pair."""
    try:
        config = BiLMConfig.from_json_file(options_path)
    except ConfigError:
        raise
    model = BiLM(config, **bilm_kwargs)  # type: ignore[arg-type]
    load_weights_into(model, weights_path)
    return model


def save_bilm(model: BiLM, options_path: str | Path, weights_path: str | Path) -> None:
    """Write options.json + weights.hdf5 in the published format."""
    save_weights(model, weights_path)
    model.config.to_json_file(options_path)

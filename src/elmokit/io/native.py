"""Native model directories: `config.json` (options.json structure) + `model.safetensors`.

The one home of the native format: file names, the config layout, and the trained softmax,
which lives in the same safetensors file under SOFTMAX_PREFIX (`softmax.weight` [V, P],
`softmax.bias` [V]) beside the biLM's own tensors. safetensors holds only tensors, so loading a
model never executes code from the file. Training checkpoints (training/checkpoint.py) are a
native model directory plus the optimizer and trainer state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from elmokit.bilm import BiLM, StatePolicy
from elmokit.chars import CharacterScheme, DictionaryCharacters
from elmokit.config import BiLMConfig
from elmokit.io.files import atomic_path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
SOFTMAX_PREFIX = "softmax."
VOCAB_NAME = "vocab.txt"  # the training vocabulary, saved beside a model that has a softmax
# A model with its own character (and word) dictionaries (ELMoForManyLangs) keeps them here.
CHARACTERS_NAME = "characters.json"


def save_pretrained(
    model: BiLM,
    directory: str | Path,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    metadata: dict[str, Any] | None = None,
    softmax: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `directory/config.json` and `directory/model.safetensors` (atomically each).

    softmax: a trained softmax's state_dict (weight, bias), stored under SOFTMAX_PREFIX.
    dtype=torch.float16 halves the file; loading casts back to float32.
    """
    extra_tensors = {
        **(extra_tensors or {}),
        **{SOFTMAX_PREFIX + name: value for name, value in (softmax or {}).items()},
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().to("cpu", dtype).contiguous()
        for name, tensor in model.state_dict().items()
    }
    for name, tensor in extra_tensors.items():
        if name in tensors:
            raise ValueError(f"extra tensor {name!r} clashes with a biLM parameter")
        tensors[name] = tensor.detach().to("cpu", dtype).contiguous()
    config = {
        "elmokit_format_version": FORMAT_VERSION,
        "options": model.config.to_options(),
        "metadata": metadata or {},
    }
    _atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(tensors, str(path)))
    if isinstance(model.characters, DictionaryCharacters):
        text = json.dumps(model.characters.to_json(), ensure_ascii=False) + "\n"
        _atomic_write(
            directory / CHARACTERS_NAME, lambda path: path.write_text(text, encoding="utf-8")
        )
    _atomic_write(
        directory / CONFIG_NAME,
        lambda path: path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
    )
    return directory


def read_native_config(directory: str | Path) -> tuple[BiLMConfig, dict[str, Any]]:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not an elmokit model directory: no {CONFIG_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if "options" not in data:
        raise ValueError(f"{path} has no 'options' section")
    return BiLMConfig.from_options(data["options"]), data.get("metadata", {})


def load_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_NAME
    if not path.exists():
        raise FileNotFoundError(f"{Path(directory)} has no {WEIGHTS_NAME}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from None


def split_softmax(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A native file's tensors -> (the biLM's and other tensors, the softmax's without prefix)."""
    rest = {k: v for k, v in tensors.items() if not k.startswith(SOFTMAX_PREFIX)}
    softmax = {
        k[len(SOFTMAX_PREFIX) :]: v for k, v in tensors.items() if k.startswith(SOFTMAX_PREFIX)
    }
    return rest, softmax


def load_softmax(directory: str | Path) -> dict[str, torch.Tensor]:
    """The trained softmax of a native model directory ({} if it has none or is not one)."""
    if not (Path(directory) / WEIGHTS_NAME).exists():
        return {}
    return split_softmax(load_tensors(directory))[1]


def from_pretrained(
    directory: str | Path, state_policy: StatePolicy = "reset", device: str | torch.device = "cpu"
) -> BiLM:
    """Load a BiLM saved by `save_pretrained` (extra tensors such as a softmax are ignored)."""
    config, _ = read_native_config(directory)
    tensors = load_tensors(directory)
    model = BiLM(config, state_policy=state_policy, characters=read_characters(directory, config))
    expected = model.state_dict()
    problems = [
        f"'{name}' missing (expected shape {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name not in tensors
    ] + [
        f"'{name}' has shape {tuple(tensors[name].shape)}, expected {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in tensors and tensors[name].shape != tensor.shape
    ]
    if problems:
        raise ValueError(f"{directory} does not match its config: " + "; ".join(problems))
    state = {name: tensors[name].to(torch.float32) for name in expected}
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{directory}: tensor '{name}' has NaN/inf values")
    model.load_state_dict(state)
    return model.to(device)


def read_characters(directory: str | Path, config: BiLMConfig) -> CharacterScheme | None:
    """The dictionaries of a model with the dictionary scheme (None for the byte scheme)."""
    if config.characters == "bytes":
        return None
    path = Path(directory) / CHARACTERS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DictionaryCharacters.from_json(data)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{directory}: the model uses its own character dictionary, and {CHARACTERS_NAME} "
            "is missing"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid character dictionary: {error}") from None


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as temporary:
        write(temporary)

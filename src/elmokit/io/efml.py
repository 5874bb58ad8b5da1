"""ELMoForManyLangs (EFML) model directories, read exactly as EFML computes them.

EFML (HIT-SCIR/ELMoForManyLangs) publishes ELMo models for 44 languages in its own format:
`config.json` (training options; only `config_path` is read), the model config it points to,
`char.dic` / `word.dic` (`token<TAB>id` lines), and two torch pickles of state dicts,
`token_embedder.pkl` and `encoder.pkl`. The format, EFML's quirks and its statefulness are
described in ../shared/fixtures/efml/README.md; the parts that shape this reader:
- the model config is looked up at `dir/config_path`, then `dir/basename(config_path)`, then
  among the configs EFML ships (the published ZIPs lack theirs: their `config_path` is a path
  on the authors' machine);
- dictionary lines are parsed as EFML parses them (a line with one field is U+3000);
- the encoder is AllenNLP's ElmoLstm, so its state dict goes through the same translation as an
  AllenNLP `Elmo` (compat/state_dict.py); the token embedder's highways too;
- pickles are opened with `torch.load(weights_only=True)` only, never as arbitrary objects.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from elmokit.bilm import BiLM, StatePolicy
from elmokit.chars import DictionaryCharacters
from elmokit.compat.state_dict import ALLENNLP_BILM, translate_allennlp_elmo_keys
from elmokit.config import BiLMConfig, ConfigError

OPTIONS_NAME = "config.json"
TOKEN_EMBEDDER_NAME = "token_embedder.pkl"
ENCODER_NAME = "encoder.pkl"
CHAR_DICT_NAME = "char.dic"
WORD_DICT_NAME = "word.dic"

# The model configs EFML ships in elmoformanylangs/configs/ (the two files are byte-identical:
# its "cnn_0_100" config also has a 100-wide word embedding). Published models need them.
_EFML_PUBLISHED_CONFIG: dict[str, Any] = {
    "encoder": {
        "name": "elmo",
        "projection_dim": 512,
        "cell_clip": 3,
        "proj_clip": 3,
        "dim": 4096,
        "n_layers": 2,
    },
    "token_embedder": {
        "name": "cnn",
        "activation": "relu",
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
        "n_highway": 2,
        "word_dim": 100,
        "char_dim": 50,
        "max_characters_per_token": 50,
    },
    "classifier": {"name": "sampled_softmax", "n_samples": 8192},
    "dropout": 0.1,
}
EFML_SHIPPED_CONFIGS = {
    "cnn_50_100_512_4096_sample.json": _EFML_PUBLISHED_CONFIG,
    "cnn_0_100_512_4096_sample.json": _EFML_PUBLISHED_CONFIG,
}


class EfmlFormatError(ValueError):
    """An EFML model directory is incomplete, unreadable or inconsistent."""


def is_efml_directory(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / ENCODER_NAME).exists() and (path / OPTIONS_NAME).exists()


def load_efml(directory: str | Path, state_policy: StatePolicy = "reset") -> BiLM:
    """The biLM of an EFML model directory (float32, CPU, eval mode left to the caller)."""
    directory = Path(directory)
    model_config = read_model_config(directory)
    token_embedder = _read_state_dict(directory / TOKEN_EMBEDDER_NAME)
    encoder = _read_state_dict(directory / ENCODER_NAME)
    config = _bilm_config(model_config, token_embedder, directory)
    chars = read_dictionary(directory / CHAR_DICT_NAME)
    words = read_dictionary(directory / WORD_DICT_NAME) if config.word_embedding_dim else None
    try:
        characters = DictionaryCharacters(chars, words, config.max_characters_per_token)
        model = BiLM(config, state_policy=state_policy, characters=characters)
    except ValueError as error:
        raise EfmlFormatError(f"{directory}: {error}") from None
    state = _elmokit_state_dict(token_embedder, encoder, config)
    expected = model.state_dict()
    problems = [f"'{name}' missing" for name in expected if name not in state] + [
        f"'{name}' has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    unused = sorted(set(state) - set(expected))
    if problems or unused:
        raise EfmlFormatError(
            f"{directory}: the weights do not match the model config: "
            + "; ".join(problems + [f"unexpected tensors {unused}"] * bool(unused))
        )
    model.load_state_dict({name: tensor.to(torch.float32) for name, tensor in state.items()})
    return model


def read_model_config(directory: Path) -> dict[str, Any]:
    """The model config `config.json`'s config_path names, found as EFML finds it."""
    options_path = directory / OPTIONS_NAME
    if not options_path.exists():
        raise EfmlFormatError(f"{directory} is not an EFML model directory: no {OPTIONS_NAME}")
    options = _read_json(options_path)
    config_path = options.get("config_path") if isinstance(options, dict) else None
    if not isinstance(config_path, str) or not config_path:
        raise EfmlFormatError(f"{options_path} has no 'config_path' naming the model config")
    base = os.path.basename(config_path)
    for candidate in (directory / config_path, directory / base):
        if candidate.is_file():
            return _check_model_config(_read_json(candidate), candidate)
    if base in EFML_SHIPPED_CONFIGS:
        return EFML_SHIPPED_CONFIGS[base]
    raise EfmlFormatError(
        f"{options_path}: config_path {config_path!r} points nowhere: tried "
        f"{directory / config_path} and {directory / base}, and it is not one of the configs "
        f"EFML ships ({', '.join(EFML_SHIPPED_CONFIGS)}); put the model config beside "
        f"{OPTIONS_NAME} or set config_path to its name"
    )


def read_dictionary(path: Path) -> dict[str, int]:
    """`token<TAB>id` lines, parsed as EFML parses them: fields of `line.strip()`; a line left
    with one field (a whitespace token) is U+3000; later duplicates overwrite earlier ones.
    Lines break where Python's codecs reader breaks them (str.splitlines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EfmlFormatError(f"EFML model file missing: {path}") from None
    except UnicodeDecodeError as error:
        raise EfmlFormatError(f"{path} is not UTF-8 text: {error}") from None
    entries: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split("\t")
        if len(fields) == 1:
            fields.insert(0, "\u3000")
        if len(fields) != 2 or not fields[1].isdigit():
            raise EfmlFormatError(f"{path}, line {number}: expected 'token<TAB>id', got {line!r}")
        entries[fields[0]] = int(fields[1])
    if not entries:
        raise EfmlFormatError(f"{path} is empty")
    return entries


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EfmlFormatError(f"{path} is not valid JSON: {error}") from None


def _check_model_config(config: Any, path: Path) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise EfmlFormatError(f"{path}: the model config must be a JSON object")
    for section in ("encoder", "token_embedder"):
        if not isinstance(config.get(section), dict):
            raise EfmlFormatError(f"{path}: the model config has no '{section}' section")
    return config


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, opened in torch's weights-only mode (no arbitrary objects)."""
    if not path.exists():
        raise EfmlFormatError(f"EFML model file missing: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EfmlFormatError(
            f"{path} refused: it is not a plain state dict of tensors that torch's weights-only "
            f"loader accepts ({first_line}); elmokit never unpickles arbitrary objects"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise EfmlFormatError(
            f"{path} is not a readable torch file (truncated?): {error}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise EfmlFormatError(
            f"{path} does not hold a state dict (names -> tensors), but a {type(state).__name__}"
        )
    return state


def _section_value(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise EfmlFormatError(f"{where}: the model config lacks '{key}'")
    return section[key]


def _bilm_config(
    model_config: dict[str, Any], token_embedder: dict[str, torch.Tensor], directory: Path
) -> BiLMConfig:
    encoder, embedder = model_config["encoder"], model_config["token_embedder"]
    where = f"{directory} model config"
    if encoder.get("name") != "elmo" or embedder.get("name") != "cnn":
        raise EfmlFormatError(
            f"{where}: encoder {encoder.get('name')!r} with token embedder "
            f"{embedder.get('name')!r}; elmokit reads EFML's 'elmo' encoder with the 'cnn' "
            "token embedder (what every published EFML model uses)"
        )
    char_dim = _section_value(embedder, "char_dim", where)
    word_dim = _section_value(embedder, "word_dim", where) or 0
    if not char_dim:
        raise EfmlFormatError(f"{where}: char_dim is 0 (a word-only model); elmokit needs chars")
    char_rows = token_embedder.get("char_emb_layer.embedding.weight")
    word_rows = token_embedder.get("word_emb_layer.embedding.weight")
    if char_rows is None:
        raise EfmlFormatError(f"{directory / TOKEN_EMBEDDER_NAME} has no character embedding")
    if word_dim and word_rows is None:
        raise EfmlFormatError(
            f"{directory / TOKEN_EMBEDDER_NAME} has no word embedding, and the model config "
            f"asks for one (word_dim {word_dim}): is config_path the model's own config?"
        )

    def clip(value: Any) -> float | None:
        return float(value) if value else None  # EFML: 0 or null means no clip

    try:
        return BiLMConfig(
            filters=[tuple(entry) for entry in _section_value(embedder, "filters", where)],
            char_embedding_dim=int(char_dim),
            n_highway=int(_section_value(embedder, "n_highway", where)),
            activation=str(_section_value(embedder, "activation", where)),
            n_characters=int(char_rows.shape[0]),
            max_characters_per_token=int(
                _section_value(embedder, "max_characters_per_token", where)
            ),
            lstm_dim=int(_section_value(encoder, "dim", where)),
            projection_dim=int(_section_value(encoder, "projection_dim", where)),
            n_layers=int(_section_value(encoder, "n_layers", where)),
            cell_clip=clip(encoder.get("cell_clip")),
            proj_clip=clip(encoder.get("proj_clip")),
            use_skip_connections=True,
            characters="dictionary",
            word_embedding_dim=int(word_dim),
            n_words=int(word_rows.shape[0]) if word_dim and word_rows is not None else 0,
            always_project=True,
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise EfmlFormatError(f"{where}: {error}") from None


def _elmokit_state_dict(
    token_embedder: dict[str, torch.Tensor],
    encoder: dict[str, torch.Tensor],
    config: BiLMConfig,
) -> dict[str, torch.Tensor]:
    """EFML's two state dicts as BiLM's. EFML's encoder is AllenNLP's ElmoLstm and its
    highways AllenNLP's Highway, so they go through the AllenNLP translation; the embeddings
    get the row for batch padding (id 0) that elmokit's ids reserve."""
    renamed: dict[str, torch.Tensor] = {}
    embeddings: dict[str, torch.Tensor] = {}
    encoder_prefix = ALLENNLP_BILM + "_token_embedder."
    for name, tensor in token_embedder.items():
        if name.endswith("embedding.weight"):
            embeddings[name] = tensor
        elif name.startswith("convolutions."):
            index, part = name[len("convolutions.") :].split(".", 1)
            renamed[f"{encoder_prefix}char_conv_{index}.{part}"] = tensor
        elif name.startswith("highways.") or name.startswith("projection."):
            renamed[encoder_prefix + "_" + name] = tensor
        else:
            renamed[name] = tensor  # reported as unexpected below
    for name, tensor in encoder.items():
        renamed[ALLENNLP_BILM + "_elmo_lstm." + name] = tensor
    translate_allennlp_elmo_keys(renamed, "", config)
    state = {
        (name[len("bilm.") :] if name.startswith("bilm.") else name): tensor
        for name, tensor in renamed.items()
    }
    for source, target in (
        ("char_emb_layer.embedding.weight", "token_encoder.char_embed.weight"),
        ("word_emb_layer.embedding.weight", "token_encoder.word_embed.weight"),
    ):
        if source in embeddings:
            table = embeddings.pop(source)
            state[target] = torch.cat([table.new_zeros(1, table.shape[1]), table])
    state.update(embeddings)  # anything else is unexpected
    return state

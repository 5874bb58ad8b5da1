"""BiLMConfig: the model options, read from and written to the published options.json.

Unknown keys (training bookkeeping such as `n_epochs` or `batch_size`) are kept in `extra`
so a load -> save round trip loses nothing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VALID_N_CHARACTERS = (261, 262)
VALID_ACTIVATIONS = ("relu", "tanh")
# "bytes": the 50-id UTF-8 scheme of bilm-tf; "dictionary": ELMoForManyLangs' code points
# through the model's own char dictionary (elmokit.chars.DictionaryCharacters).
CHARACTER_SCHEMES = ("bytes", "dictionary")


class ConfigError(ValueError):
    """options.json is missing a key, has a bad value, or disagrees with the weights."""


# The published AllenNLP models (https://allennlp.org/elmo): LSTM cells, projection (ELMo
# vectors are twice it), highway layers; all share the 2048-filter char CNN and 2 LSTM layers.
# The one table of these shapes: BiLMConfig.published and elmokit.io.download read it.
PUBLISHED_SHAPES: dict[str, tuple[int, int, int]] = {
    "small": (1024, 128, 1),
    "medium": (2048, 256, 1),
    "original": (4096, 512, 2),
    "original-5.5b": (4096, 512, 2),
}


@dataclass
class BiLMConfig:
    """Shape and behaviour of a biLM: char CNN token encoder + projected, clipped LSTMs."""

    filters: list[tuple[int, int]] = field(
        default_factory=lambda: [(1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024)]
    )  # (width, number of filters)
    char_embedding_dim: int = 16
    n_highway: int = 1
    activation: str = "relu"
    n_characters: int = 262
    max_characters_per_token: int = 50
    lstm_dim: int = 1024  # LSTM cell size
    projection_dim: int = 128  # token vector and LSTM output size (P)
    n_layers: int = 2
    cell_clip: float | None = 3.0
    proj_clip: float | None = 3.0
    use_skip_connections: bool = True
    # ELMoForManyLangs variants (the bilm-tf layout has none of them): the character scheme,
    # where n_characters counts the dictionary's ids; a word embedding concatenated before
    # the char CNN's features; a projection even when the widths already agree.
    characters: str = "bytes"
    word_embedding_dim: int = 0
    n_words: int = 0
    always_project: bool = False
    # Every options.json key we do not model, kept verbatim for the round trip.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.filters = [(int(width), int(count)) for width, count in self.filters]
        self.validate()

    @property
    def n_filters(self) -> int:
        """Width of the char CNN output (sum of filter counts)."""
        return sum(count for _, count in self.filters)

    @property
    def token_features_dim(self) -> int:
        """Width of what the projection reads: the word embedding, then the CNN features."""
        return self.word_embedding_dim + self.n_filters

    @property
    def uses_projection(self) -> bool:
        # bilm-tf only projects when the CNN width differs from the LSTM input width.
        return self.always_project or self.token_features_dim != self.projection_dim

    @property
    def output_dim(self) -> int:
        """Width of every ELMo layer: forward and backward halves concatenated."""
        return 2 * self.projection_dim

    def validate(self) -> None:
        problems: list[str] = []
        if not self.filters:
            problems.append("char_cnn.filters is empty")
        for width, count in self.filters:
            if width < 1 or count < 1:
                problems.append(f"char_cnn.filters has a bad entry [{width}, {count}]")
            if width > self.max_characters_per_token:
                problems.append(
                    f"filter width {width} is longer than max_characters_per_token "
                    f"{self.max_characters_per_token}"
                )
        if self.characters not in CHARACTER_SCHEMES:
            problems.append(
                f"char_cnn.characters must be one of {CHARACTER_SCHEMES}, got {self.characters!r}"
            )
        elif self.characters == "bytes":
            problems += self._byte_scheme_problems()
        else:
            if self.n_characters < 1:
                problems.append(f"char_cnn.n_characters must be >= 1, got {self.n_characters}")
            if self.max_characters_per_token < 3:
                problems.append(
                    "char_cnn.max_characters_per_token must be >= 3 (word marks and one "
                    f"character), got {self.max_characters_per_token}"
                )
        if (self.word_embedding_dim > 0) != (self.n_words > 0) or min(
            self.word_embedding_dim, self.n_words
        ) < 0:
            problems.append(
                "char_cnn.word_embedding needs both dim and n_words > 0 (or neither), got "
                f"dim {self.word_embedding_dim}, n_words {self.n_words}"
            )
        if self.activation not in VALID_ACTIVATIONS:
            problems.append(f"char_cnn.activation must be relu or tanh, got {self.activation!r}")
        for name in ("char_embedding_dim", "lstm_dim", "projection_dim", "n_layers"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_highway < 0:
            problems.append(f"char_cnn.n_highway must be >= 0, got {self.n_highway}")
        for name in ("cell_clip", "proj_clip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"lstm.{name} must be positive, got {value}")
        if problems:
            raise ConfigError("invalid biLM options: " + "; ".join(problems))

    def _byte_scheme_problems(self) -> list[str]:
        problems = []
        if self.n_characters not in VALID_N_CHARACTERS:
            problems.append(
                f"char_cnn.n_characters is {self.n_characters}; ELMo files use 261 (training) "
                "or 262 (inference)"
            )
        if self.max_characters_per_token != 50:
            problems.append(
                f"char_cnn.max_characters_per_token is {self.max_characters_per_token}; the "
                "ELMo byte scheme is fixed at 50"
            )
        if self.word_embedding_dim:
            problems.append("a word embedding needs the dictionary character scheme")
        return problems

    # -- options.json -------------------------------------------------------------------

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> BiLMConfig:
        """Build from the published options.json structure (`lstm` + `char_cnn`)."""
        if not isinstance(options, dict):
            raise ConfigError(f"options must be a JSON object, got {type(options).__name__}")
        extra = copy.deepcopy(options)
        lstm = _pop_section(extra, "lstm")
        char_cnn = _pop_section(extra, "char_cnn")
        embedding = _pop_section(char_cnn, "embedding", parent="char_cnn")
        words = char_cnn.pop("word_embedding", {"dim": 0, "n_words": 0})
        if not isinstance(words, dict):
            raise ConfigError("options section 'char_cnn.word_embedding' must be an object")
        config = cls(
            filters=_filters(_pop(char_cnn, "filters", "char_cnn")),
            char_embedding_dim=_int(
                _pop(embedding, "dim", "char_cnn.embedding"), "char_cnn.embedding.dim"
            ),
            n_highway=_int(_pop(char_cnn, "n_highway", "char_cnn"), "char_cnn.n_highway"),
            activation=str(_pop(char_cnn, "activation", "char_cnn")),
            n_characters=_int(_pop(char_cnn, "n_characters", "char_cnn"), "char_cnn.n_characters"),
            max_characters_per_token=_int(
                _pop(char_cnn, "max_characters_per_token", "char_cnn"),
                "char_cnn.max_characters_per_token",
            ),
            lstm_dim=_int(_pop(lstm, "dim", "lstm"), "lstm.dim"),
            projection_dim=_int(_pop(lstm, "projection_dim", "lstm"), "lstm.projection_dim"),
            n_layers=_int(_pop(lstm, "n_layers", "lstm"), "lstm.n_layers"),
            cell_clip=_optional_float(lstm.pop("cell_clip", None), "lstm.cell_clip"),
            proj_clip=_optional_float(lstm.pop("proj_clip", None), "lstm.proj_clip"),
            use_skip_connections=_bool(
                lstm.pop("use_skip_connections", False), "lstm.use_skip_connections"
            ),
            characters=str(char_cnn.pop("characters", "bytes")),
            word_embedding_dim=_int(words.get("dim", 0), "char_cnn.word_embedding.dim"),
            n_words=_int(words.get("n_words", 0), "char_cnn.word_embedding.n_words"),
            always_project=_bool(char_cnn.pop("always_project", False), "char_cnn.always_project"),
            extra={"lstm": lstm, "char_cnn": {**char_cnn, "embedding": embedding}, **extra},
        )
        return config

    def to_options(self) -> dict[str, Any]:
        """The options.json structure, unknown keys included."""
        extra = copy.deepcopy(self.extra)
        lstm = extra.pop("lstm", {})
        char_cnn = extra.pop("char_cnn", {})
        embedding = char_cnn.pop("embedding", {})
        lstm.update(
            dim=self.lstm_dim,
            projection_dim=self.projection_dim,
            n_layers=self.n_layers,
            use_skip_connections=self.use_skip_connections,
        )
        if self.cell_clip is not None:
            lstm["cell_clip"] = _json_number(self.cell_clip)
        if self.proj_clip is not None:
            lstm["proj_clip"] = _json_number(self.proj_clip)
        embedding["dim"] = self.char_embedding_dim
        char_cnn.update(
            activation=self.activation,
            embedding=embedding,
            filters=[[width, count] for width, count in self.filters],
            n_highway=self.n_highway,
            n_characters=self.n_characters,
            max_characters_per_token=self.max_characters_per_token,
        )
        # Written only when set, so a bilm-tf options.json round-trips unchanged.
        if self.characters != "bytes":
            char_cnn["characters"] = self.characters
        if self.word_embedding_dim:
            char_cnn["word_embedding"] = {"dim": self.word_embedding_dim, "n_words": self.n_words}
        if self.always_project:
            char_cnn["always_project"] = True
        return {"lstm": lstm, "char_cnn": char_cnn, **extra}

    @classmethod
    def from_json_file(cls, path: str | Path) -> BiLMConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"options file not found: {path}") from None
        try:
            options = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON: {error}") from None
        try:
            return cls.from_options(options)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_options(), indent=2) + "\n", encoding="utf-8")

    # -- published configurations -------------------------------------------------------

    @classmethod
    def published(cls, name: str) -> BiLMConfig:
        """The shape of a published model (PUBLISHED_SHAPES); other fields as published."""
        if name not in PUBLISHED_SHAPES:
            known = ", ".join(PUBLISHED_SHAPES)
            raise ValueError(f"unknown published config {name!r}; known: {known}")
        lstm_dim, projection_dim, n_highway = PUBLISHED_SHAPES[name]
        return cls(lstm_dim=lstm_dim, projection_dim=projection_dim, n_highway=n_highway)


def _pop_section(options: dict[str, Any], key: str, parent: str = "") -> dict[str, Any]:
    where = f"{parent}.{key}" if parent else key
    if key not in options:
        raise ConfigError(f"options missing required section '{where}'")
    section = options.pop(key)
    if not isinstance(section, dict):
        raise ConfigError(f"options section '{where}' must be an object")
    return section


def _pop(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise ConfigError(f"options missing required key '{where}.{key}'")
    return section.pop(key)


def _int(value: Any, where: str) -> int:
    """A whole number from options.json (2 or 2.0), else a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ConfigError(f"options key '{where}' must be a whole number, got {value!r}")
    return int(value)


def _optional_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"options key '{where}' must be a number or null, got {value!r}")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"options key '{where}' must be true or false, got {value!r}")
    return value


def _filters(value: Any) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise ConfigError(f"options key 'char_cnn.filters' must be a list, got {value!r}")
    filters = []
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ConfigError(f"char_cnn.filters entries are [width, count], got {entry!r}")
        filters.append((_int(entry[0], "char_cnn.filters"), _int(entry[1], "char_cnn.filters")))
    return filters


def _json_number(value: float) -> float | int:
    # Published files write whole clip values as ints ("cell_clip": 3); keep them so.
    return int(value) if float(value).is_integer() else value

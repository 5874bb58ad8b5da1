"""TrainConfig: everything a training run needs, read from one TOML file.

```toml
output_dir = "runs/ptb"
seed = 0

[model]          # BiLMConfig fields (options.json names also accepted via `options_file`)
lstm_dim = 512
projection_dim = 256
filters = [[1, 32], [2, 64], [3, 128], [4, 128], [5, 128], [6, 128]]
n_highway = 1

[data]
train = ["../shared/data/ptb_mikolov/ptb.train.txt.gz"]
valid = ["../shared/data/ptb_mikolov/ptb.valid.txt"]
vocab = "runs/ptb/vocab.txt"     # built from `train` if it does not exist

[optim]
optimizer = "adam"
lr = 0.002
```
Relative paths are relative to the config file. The `train_config.json` a run writes into its
output directory (every path resolved) reads back as a config too:
`TrainConfig.from_file("runs/x/train_config.json")`, or `elmokit train --config` on it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elmokit.config import BiLMConfig
from elmokit.tokenizers import Tokenize, check_tokenizer
from elmokit.training.data import ROW_LAYOUTS, RowLayout, iter_sentences


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    vocab: str = "vocab.txt"
    tokenize: Tokenize = "whitespace"
    lang: str = "en"  # of the Moses tokeniser
    # "replace" reads bytes that are not UTF-8 as U+FFFD, in every file: train, valid, test.
    encoding_errors: str = "strict"
    min_count: int = 1
    max_vocab_size: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 64  # rows of the held-out evaluations
    unroll_steps: int = 20
    shuffle_buffer: int = 0
    max_tokens_per_sentence: int | None = 400
    # "packed" (bilm-tf: rows take the next sentence from one shared stream) or "contiguous"
    # (row r reads the r-th contiguous slice, the PTB protocol; held-out text is read the
    # same way). See training/data.py.
    row_layout: RowLayout = "packed"

    def sentences(
        self, paths: list[str], rank: int = 0, world_size: int = 1
    ) -> Iterator[list[str]]:
        """The tokenised sentences of `paths` (training or held-out files), read with this
        config's tokeniser and encoding rules."""
        return iter_sentences(
            paths,
            self.tokenize,
            rank=rank,
            world_size=world_size,
            lang=self.lang,
            errors=self.encoding_errors,
        )


LR_SCHEDULES = ("constant", "cosine", "linear")


def scheduled_lr(
    base_lr: float, min_lr: float, step: int, total_steps: int | None, schedule: str, warmup: int
) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`."""
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    if schedule == "constant" or not total_steps:
        return base_lr * factor
    # Decay measured from the end of warm-up so the peak is base_lr.
    progress = min(max(step - warmup, 0) / max(total_steps - warmup, 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    decay = cosine if schedule == "cosine" else 1.0 - progress
    floor = min(min_lr, base_lr)
    return floor + (base_lr * factor - floor) * decay


@dataclass
class OptimConfig:
    optimizer: str = "adagrad"  # adagrad (bilm-tf), adam, sgd
    lr: float = 0.2
    adagrad_initial_accumulator: float = 1.0
    weight_decay: float = 0.0
    clip_norm: float = 10.0
    dropout: float = 0.1
    n_negative_samples: int = 0  # 0: full softmax; else sampled softmax with this many
    max_steps: int | None = None
    max_epochs: float | None = 10.0  # in passes over the training tokens
    max_minutes: float | None = None
    # Multiply lr by this when held-out perplexity does not improve (1.0: never).
    lr_decay_on_plateau: float = 1.0
    min_lr: float = 0.0
    # lr over the planned steps (max_steps, or max_epochs over the counted training tokens):
    # "constant" (bilm-tf), or "cosine" / "linear" from lr down to min_lr at the last planned
    # step; `warmup_steps` ramps linearly from 0 first. A function of the step, so a resumed
    # run follows the same curve. For a fixed compute budget a decay to the end of the budget
    # beats a constant rate (see docs/training.md, PTB).
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    # "bf16": matrix products under bf16 autocast (weights, optimizer, cell state and loss stay
    # fp32); 1.7x the tokens/s on this AVX512-BF16 CPU. Evaluation is always fp32.
    precision: str = "fp32"
    # Per batch, the probability that a row's carried LSTM state is zeroed (0: bilm-tf,
    # state always carried). Teaches the LM to start from a zero state: see Trainer.
    state_reset_prob: float = 0.0


@dataclass
class LogConfig:
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 3
    eval_max_tokens: int | None = None  # cap periodic evaluation cost; final eval is full
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    model: BiLMConfig = field(default_factory=BiLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    output_dir: str = "runs/bilm"
    seed: int = 0
    init_from: str | None = None  # fine-tuning: a model elmokit.load accepts, or a checkpoint

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A TOML config, or the train_config.json of a run (by its suffix)."""
        path = Path(path)
        return cls.from_json(path) if path.suffix == ".json" else cls.from_toml(path)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(_read_mapping(Path(path), "TOML"), base_dir=Path(path).parent)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(_read_mapping(Path(path), "JSON"), base_dir=Path(path).parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
        raw = dict(raw)
        base = base_dir or Path(".")

        def section(name: str, kind: type) -> Any:
            values = raw.pop(name, {})
            if not isinstance(values, dict):
                raise ValueError(f"[{name}] must be a table, got {values!r}")
            for key in ("train", "valid", "test"):
                if name == "data" and isinstance(values.get(key), str):
                    values = {**values, key: [values[key]]}  # one file given as a string
            _check_keys_and_types(name, kind, values)
            return kind(**values)

        model_raw = dict(raw.pop("model", {}))
        options_file = model_raw.pop("options_file", None)
        if options_file:
            model = BiLMConfig.from_json_file(_resolve(base, options_file))
        elif "lstm" in model_raw or "char_cnn" in model_raw:
            model = BiLMConfig.from_options(model_raw)  # options.json layout (train_config.json)
        else:
            _check_keys_and_types("model", BiLMConfig, model_raw)
            model = BiLMConfig(**model_raw)
        top_level = {"output_dir", "seed", "init_from"}
        unknown = sorted(set(raw) - top_level - {"data", "optim", "log"})
        if unknown:
            raise ValueError(
                f"unknown top-level keys: {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(top_level))} and the [model], [data], [optim], [log] tables"
            )
        data = section("data", DataConfig)
        optim = section("optim", OptimConfig)
        log = section("log", LogConfig)
        config = cls(model=model, data=data, optim=optim, log=log, **raw)
        data.train = [_resolve(base, p) for p in data.train]
        data.valid = [_resolve(base, p) for p in data.valid]
        data.test = [_resolve(base, p) for p in data.test]
        data.vocab = _resolve(base, data.vocab)
        config.output_dir = _resolve(base, config.output_dir)
        if config.init_from and Path(base, config.init_from).exists():
            config.init_from = _resolve(base, config.init_from)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.data.train:
            raise ValueError("[data] train: no training files given")
        if self.optim.optimizer not in ("adagrad", "adam", "sgd"):
            raise ValueError(
                f"[optim] optimizer must be adagrad, adam or sgd, got {self.optim.optimizer!r}"
            )
        if self.optim.precision not in ("fp32", "bf16"):
            raise ValueError(
                f"[optim] precision must be fp32 or bf16, got {self.optim.precision!r}"
            )
        if not 0.0 <= self.optim.state_reset_prob <= 1.0:
            raise ValueError(
                f"[optim] state_reset_prob must be in [0, 1], got {self.optim.state_reset_prob}"
            )
        if self.optim.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"[optim] lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                f"got {self.optim.lr_schedule!r}"
            )
        if self.optim.warmup_steps < 0:
            raise ValueError(f"[optim] warmup_steps must be >= 0, got {self.optim.warmup_steps}")
        if self.optim.lr_schedule != "constant" and not (
            self.optim.max_steps or self.optim.max_epochs
        ):
            raise ValueError(
                f"[optim] lr_schedule = {self.optim.lr_schedule!r} decays over the planned "
                "steps: set max_steps or max_epochs (max_minutes alone has no step count)"
            )
        if self.data.eval_batch_size < 1:
            raise ValueError(
                f"[data] eval_batch_size must be >= 1, got {self.data.eval_batch_size}"
            )
        if self.data.encoding_errors not in ("strict", "replace"):
            raise ValueError(
                "[data] encoding_errors must be strict or replace, "
                f"got {self.data.encoding_errors!r}"
            )
        if self.data.row_layout not in ROW_LAYOUTS:
            raise ValueError(
                f"[data] row_layout must be one of {', '.join(ROW_LAYOUTS)}, "
                f"got {self.data.row_layout!r}"
            )
        if self.data.row_layout == "contiguous" and self.data.shuffle_buffer > 0:
            raise ValueError(
                "[data] row_layout = 'contiguous' reads the corpus in order: set shuffle_buffer = 0"
            )
        try:
            check_tokenizer(self.data.tokenize)
        except ValueError as error:
            raise ValueError(f"[data] {error}") from None
        _check_ranges(self)
        if not (self.optim.max_steps or self.optim.max_epochs or self.optim.max_minutes):
            raise ValueError("[optim] set at least one of max_steps, max_epochs, max_minutes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_options(),
            "data": dataclasses.asdict(self.data),
            "optim": dataclasses.asdict(self.optim),
            "log": dataclasses.asdict(self.log),
            "output_dir": self.output_dir,
            "seed": self.seed,
            "init_from": self.init_from,
        }


# Values that must be >= 1 (counts) or > 0 (rates, times), None allowed where the field allows it.
_AT_LEAST_ONE = {
    "data": (
        "batch_size",
        "unroll_steps",
        "min_count",
        "max_vocab_size",
        "max_tokens_per_sentence",
    ),
    "optim": ("max_steps",),
    "log": ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "eval_max_tokens"),
}
_POSITIVE = {"optim": ("lr", "max_epochs", "max_minutes"), "log": ("checkpoint_minutes",)}
_NOT_NEGATIVE = {
    "data": ("shuffle_buffer",),
    "optim": ("clip_norm", "weight_decay", "n_negative_samples", "min_lr"),
}


def _check_ranges(config: TrainConfig) -> None:
    for rules, test, wording in (
        (_AT_LEAST_ONE, lambda v: v >= 1, ">= 1"),
        (_POSITIVE, lambda v: v > 0, "> 0"),
        (_NOT_NEGATIVE, lambda v: v >= 0, ">= 0"),
    ):
        for name, keys in rules.items():
            for key in keys:
                value = getattr(getattr(config, name), key)
                if value is not None and not test(value):
                    raise ValueError(f"[{name}] {key} must be {wording}, got {value}")
    if not 0.0 <= config.optim.dropout < 1.0:
        raise ValueError(f"[optim] dropout must be in [0, 1), got {config.optim.dropout}")
    if not 0.0 < config.optim.lr_decay_on_plateau <= 1.0:
        raise ValueError(
            f"[optim] lr_decay_on_plateau must be in (0, 1], got {config.optim.lr_decay_on_plateau}"
        )


def _check_keys_and_types(name: str, kind: type, values: dict[str, Any]) -> None:
    """Unknown keys named with the valid ones; each value of the type its field declares."""
    fields = {f.name: f for f in dataclasses.fields(kind) if f.name != "extra"}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown keys in [{name}]: {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    for key, value in values.items():
        expected = _accepted_types(str(fields[key].type))
        if expected is None:
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if not ok:
            names = " or ".join(
                "null" if t is type(None) else "a list" if t is list else t.__name__
                for t in expected
                if t is not tuple and not (t is int and float in expected)
            ).replace("float", "a number")
            raise ValueError(f"[{name}] {key} must be {names}, got {value!r}")


def _accepted_types(annotation: str) -> tuple[type, ...] | None:
    """The Python types a TOML value may have for a field annotation (None: not checked)."""
    accepted: list[type] = []
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None":
            accepted.append(type(None))
        elif part == "int":
            accepted.append(int)
        elif part == "float":
            accepted.extend((int, float))
        elif part == "bool":
            accepted.append(bool)
        elif part in ("str", "Tokenize", "RowLayout"):
            accepted.append(str)
        elif part.startswith(("list", "tuple")):
            accepted.extend((list, tuple))
        else:
            return None
    return tuple(accepted)


def _read_mapping(path: Path, kind: str) -> dict[str, Any]:
    """The top-level table of a TOML or JSON config file, with one-line errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"training config not found: {path}") from None
    try:
        raw = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} does not hold a training config (a {kind} table)")
    return raw


def _resolve(base: Path, value: str) -> str:
    """An absolute path (so that the train_config.json a run writes reads back anywhere)."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return os.path.abspath(path if path.is_absolute() else base / path)

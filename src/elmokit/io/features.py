"""HDF5 embedding files: per-sentence features and the token-embedding cache (FORMATS.md).

Per-sentence features ("Batch embedding output"), the layout the old `allennlp elmo` command
wrote and users' code reads with plain h5py:

- one float32 dataset per input line, key `str(line_index)`: `all` (L+1, T, D), `top` (T, D),
  `average` (T, D); elmokit adds `--layers` (a subset of `all`, or averaged) and `--mix`
  (a fixed ScalarMix, (T, D));
- `sentence_to_index`: shape (1,) variable-length string holding
  `json.dumps({sentence_text: "line_index"})`; when a sentence repeats, the last line wins, as
  in AllenNLP. Keys are written in line order so that a sharded run merges to the same bytes.
- root attributes `elmokit_features` (JSON of the FeatureSpec), `elmokit_lines` (lines in the
  input) and `elmokit_model`; readers that only know the old layout ignore attributes.

Streaming and crash safety. `FeatureWriter` writes `PATH.partial` and renames it to PATH only
when the file is complete, so PATH is never a half-written file. While writing, the sentence
texts do not stay in memory: every checkpoint appends them (with their line indices) to
resizable datasets in a `_elmokit_progress` group, records the number of completed input lines
in its `completed_lines` attribute and flushes the file. `sentence_to_index` is built from that
group when the file is finished (memory then grows with the number of distinct sentences,
once), and the group is deleted. A run killed between checkpoints leaves a partial file whose
recorded progress is consistent with its flushed content; resuming deletes the line datasets
written after the last checkpoint and continues from there. HDF5 is not journaled: between
checkpoints it writes new objects at the end of the file and, with the default metadata cache,
rarely anything else (a checkpoint interval dirties far less metadata than the cache holds), so
a killed run's file reopens at its last checkpoint; a partial file that does not reopen is
reported, and --overwrite starts over. (A larger metadata cache would write even less early, but
HDF5 holds several times its nominal size in memory, which grew the process by hundreds of MB
over 100k lines.) Nothing is fsynced: a power loss is not covered.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Self

import h5py
import numpy as np

FeatureOutput = Literal["all", "top", "average", "mix"]
FEATURE_OUTPUTS: tuple[str, ...] = ("all", "top", "average", "mix")
# Over a sentence's tokens, for one vector per line (`elmokit embed --pool`).
POOLINGS: tuple[str, ...] = ("mean", "max", "first", "last")

SENTENCE_TO_INDEX = "sentence_to_index"
PROGRESS_GROUP = "_elmokit_progress"
COMPLETED_ATTR = "completed_lines"
SPEC_ATTR = "elmokit_features"
LINES_ATTR = "elmokit_lines"
MODEL_ATTR = "elmokit_model"
PRECISION_ATTR = "elmokit_precision"  # the biLM's inference mode; --resume must keep it
SHARD_ATTR = "elmokit_shard"
PARTIAL_SUFFIX = ".partial"
TOKEN_EMBEDDING_DATASET = "embedding"

_SIDE_CHUNK = 4096  # rows per chunk of the progress datasets, and per read when finishing


@dataclass(frozen=True)
class FeatureSpec:
    """What is stored per sentence, computed from the biLM's layers [L+1, T, D].

    output: "all" keeps the (selected) layers, "top" the last layer, "average" the mean of the
    (selected) layers, "mix" `gamma * sum_j softmax(mix)_j * layer_j` over the (selected)
    layers, the ScalarMix formula with fixed weights. pooling ("mean", "max", "first",
    "last") then turns a sentence's [T, D] into one vector [D] (zeros for an empty sentence).
    """

    output: FeatureOutput = "all"
    layers: tuple[int, ...] | None = None
    mix: tuple[float, ...] | None = None
    gamma: float = 1.0
    pooling: str | None = None

    def __post_init__(self) -> None:
        if self.output not in FEATURE_OUTPUTS:
            raise ValueError(f"output must be one of {FEATURE_OUTPUTS}, got {self.output!r}")
        if (self.output == "mix") != (self.mix is not None):
            raise ValueError("mix weights go with output='mix' and only with it")
        if self.output == "top" and self.layers is not None:
            raise ValueError("'top' is the last layer; it cannot be combined with a layer list")
        if self.layers is not None:
            if not self.layers:
                raise ValueError("the layer list is empty")
            if len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
                raise ValueError(f"layers must be distinct indices >= 0, got {self.layers}")
        if self.mix is not None and not all(math.isfinite(w) for w in (*self.mix, self.gamma)):
            raise ValueError("mix weights and gamma must be finite numbers")
        if self.pooling is not None:
            if self.pooling not in POOLINGS:
                raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
            if self.output == "all":
                raise ValueError(
                    "pooling makes one vector per sentence from one vector per token: use it "
                    "with --average (the default then), --top or --mix, not --all"
                )

    def check_layers(self, n_layers: int) -> None:
        """Raise if the spec does not fit a model with n_layers outputs (L + 1)."""
        selected = self.layers if self.layers is not None else tuple(range(n_layers))
        if max(selected) >= n_layers:
            raise ValueError(
                f"layer {max(selected)} does not exist: the model has layers 0..{n_layers - 1}"
            )
        if self.mix is not None and len(self.mix) != len(selected):
            raise ValueError(
                f"--mix needs one weight per layer ({len(selected)}), optionally followed by "
                f"gamma; got {len(self.mix)} weights"
            )

    def mix_weights(self) -> np.ndarray:
        """softmax(mix) * gamma, the per-layer factors of the fixed ScalarMix."""
        if self.mix is None:
            raise ValueError("not a mix spec")
        w = np.asarray(self.mix, dtype=np.float64)
        w = np.exp(w - w.max())
        return (self.gamma * w / w.sum()).astype(np.float32)

    def reduce(self, layers: np.ndarray) -> np.ndarray:
        """layers [L+1, T, D] -> the stored array (float32). Acts on each position alone, so
        it can be applied to pieces of a sentence and the results concatenated on axis -2."""
        if self.layers is not None:
            layers = layers[list(self.layers)]
        if self.output == "all":
            return np.ascontiguousarray(layers, dtype=np.float32)
        if self.output == "top":
            return np.ascontiguousarray(layers[-1], dtype=np.float32)
        if self.output == "average":
            return layers.mean(axis=0, dtype=np.float32)
        return np.tensordot(self.mix_weights(), layers, axes=1).astype(np.float32, copy=False)

    def pool(self, tokens: np.ndarray) -> np.ndarray:
        """A sentence's stored [T, D] -> [D] (unchanged without pooling)."""
        if self.pooling is None:
            return tokens
        if tokens.shape[0] == 0:
            return np.zeros(tokens.shape[1], dtype=np.float32)
        if self.pooling == "mean":
            return tokens.mean(axis=0, dtype=np.float32)
        if self.pooling == "max":
            return tokens.max(axis=0)
        return np.ascontiguousarray(tokens[0] if self.pooling == "first" else tokens[-1])

    def shape(self, n_layers: int, n_tokens: int, dim: int) -> tuple[int, ...]:
        if self.pooling is not None:
            return (dim,)
        if self.output != "all":
            return (n_tokens, dim)
        selected = len(self.layers) if self.layers is not None else n_layers
        return (selected, n_tokens, dim)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        layers, mix = data.get("layers"), data.get("mix")
        return cls(
            output=data["output"],
            layers=tuple(layers) if layers is not None else None,
            mix=tuple(mix) if mix is not None else None,
            gamma=float(data.get("gamma", 1.0)),
            pooling=data.get("pooling"),
        )


def parse_layers(text: str) -> tuple[int, ...]:
    """'0,2' -> (0, 2)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        message = f"--layers takes comma-separated layer indices like 0,2; got {text!r}"
        raise ValueError(message) from None


def parse_mix(text: str, n_layers: int) -> tuple[tuple[float, ...], float]:
    """'w0,w1,w2[,gamma]' -> (weights, gamma), given how many layers are mixed."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--mix takes comma-separated numbers like 0,0,1; got {text!r}") from None
    if len(values) == n_layers:
        return tuple(values), 1.0
    if len(values) == n_layers + 1:
        return tuple(values[:-1]), values[-1]
    raise ValueError(
        f"--mix needs {n_layers} weights (one per mixed layer), optionally followed by gamma; "
        f"got {len(values)} values"
    )


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _open(path: Path, mode: str) -> h5py.File:
    # The default (earliest) file format on purpose: newer superblocks carry a "file is open for
    # writing" flag, and HDF5 then refuses to reopen a file whose writer was killed.
    return h5py.File(path, mode)


def _line_keys(group: h5py.Group) -> Iterator[tuple[int, str]]:
    for key in group:
        if key.isdigit():
            yield int(key), key


class FeatureWriter:
    """Writes per-sentence features to `path` through `path.partial` (see module docstring).

    Lines are written with `write`, in any order (a look-ahead window finishes its longest
    sentences first); `checkpoint(completed)` records every line written so far, and that
    every line before `completed` that belongs to this writer is on disk; `finish` builds
    `sentence_to_index`, renames the file and returns the final path. `close` without `finish`
    keeps the partial file for a later `resume=True`, which keeps every recorded line:
    `done_after` lists those at or past `completed`, for the caller to skip.
    """

    def __init__(
        self,
        path: str | Path,
        spec: FeatureSpec,
        *,
        resume: bool = False,
        attrs: dict[str, str | int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.spec = spec
        self._pending: list[tuple[int, str]] = []
        self._closed = False
        self.done_after: set[int] = set()  # recorded lines at or past completed_lines
        resuming = resume and self.partial.exists()
        try:
            self._file = _open(self.partial, "r+" if resuming else "w")
        except OSError as error:
            if resuming:
                raise OSError(
                    f"cannot reopen {self.partial} to resume it ({error}); "
                    "start over with --overwrite"
                ) from error
            raise OSError(f"cannot create {self.partial}: {error}") from error
        if resuming:
            try:
                self._reopen(attrs or {})
            except (OSError, KeyError, RuntimeError) as error:
                # HDF5 is not journaled: a kill at a bad moment can leave the tail unreadable.
                self._file.close()
                raise OSError(
                    f"{self.partial} is damaged beyond its last checkpoint ({error}); "
                    "start over with --overwrite"
                ) from error
        else:
            self._file.attrs[SPEC_ATTR] = spec.to_json()
            for name, value in (attrs or {}).items():
                self._file.attrs[name] = value
            group = self._file.create_group(PROGRESS_GROUP)
            group.create_dataset(
                "index", (0,), dtype=np.int64, maxshape=(None,), chunks=(_SIDE_CHUNK,)
            )
            group.create_dataset(
                "sentence",
                (0,),
                dtype=h5py.string_dtype(),
                maxshape=(None,),
                chunks=(_SIDE_CHUNK,),
            )
            group.attrs[COMPLETED_ATTR] = 0
            self._file.flush()
        self.completed_lines = int(self._file[PROGRESS_GROUP].attrs[COMPLETED_ATTR])

    def _reopen(self, attrs: dict[str, str | int]) -> None:
        file = self._file
        if PROGRESS_GROUP not in file:
            self._file.close()
            raise ValueError(f"{self.partial} has no recorded progress; cannot resume it")
        stored = FeatureSpec.from_json(str(file.attrs[SPEC_ATTR]))
        if stored != self.spec:
            self._file.close()
            raise ValueError(
                f"{self.partial} was started with different output options "
                f"({stored.to_json()}); resume with the same options or start over"
            )
        for name, value in attrs.items():
            stored_value = file.attrs.get(name, value)
            if stored_value != value:
                self._file.close()  # read the stored value first: a closed file has no attrs
                raise ValueError(
                    f"{self.partial} was started with {name}={stored_value!r}, "
                    f"not {value!r}; resume with the same options or start over"
                )
        completed = int(file[PROGRESS_GROUP].attrs[COMPLETED_ATTR])
        recorded = set(file[PROGRESS_GROUP]["index"][:].tolist())
        # Lines written after the last checkpoint may be incomplete: drop them. Lines recorded
        # at a checkpoint are complete wherever they are.
        for index, key in [item for item in _line_keys(file) if item[0] >= completed]:
            if index not in recorded:
                del file[key]
        self.done_after = {index for index in recorded if index >= completed}
        file.flush()

    def last_sentence(self) -> tuple[int, str] | None:
        """(line index, text) of the furthest line recorded at a checkpoint, if any."""
        group = self._file[PROGRESS_GROUP]
        if group["index"].shape[0] == 0:
            return None
        row = int(np.argmax(group["index"][:]))
        return int(group["index"][row]), group["sentence"].asstr()[row]

    def write(self, index: int, sentence: str, features: np.ndarray) -> None:
        if index < self.completed_lines or index in self.done_after:
            raise ValueError(f"line {index} is already recorded as done")
        self._file.create_dataset(str(index), data=np.asarray(features, dtype=np.float32))
        self._pending.append((index, sentence))

    def checkpoint(self, completed_lines: int) -> None:
        """Record on disk that the lines before `completed_lines` are done."""
        group = self._file[PROGRESS_GROUP]
        if self._pending:
            n, extra = group["index"].shape[0], len(self._pending)
            for name in ("index", "sentence"):
                group[name].resize((n + extra,))
            group["index"][n:] = np.array([i for i, _ in self._pending], dtype=np.int64)
            group["sentence"][n:] = np.array([s for _, s in self._pending], dtype=object)
            self._pending.clear()
        group.attrs[COMPLETED_ATTR] = completed_lines
        self.completed_lines = completed_lines
        self._file.flush()

    @property
    def recorded_lines(self) -> int:
        """How many lines the last checkpoint recorded as done (in any order)."""
        return int(self._file[PROGRESS_GROUP]["index"].shape[0])

    def finish(
        self, total_lines: int, *, sentence_keys: bool = False, sentence_index: bool = True
    ) -> Path:
        """Complete the file (sentence_to_index, attributes) and move it to its final path.

        `allennlp elmo`'s options: sentence_keys names each dataset by its sentence instead of
        its line number (every sentence must then be distinct and free of "/", which HDF5
        reads as a group path), with no sentence_to_index; sentence_index=False
        (--forget-sentences) leaves sentence_to_index out."""
        self.checkpoint(total_lines)
        file = self._file
        group = file[PROGRESS_GROUP]
        mapping: dict[str, int] = {}
        n = group["index"].shape[0]
        for start in range(0, n, _SIDE_CHUNK):
            indices = group["index"][start : start + _SIDE_CHUNK]
            sentences = group["sentence"].asstr()[start : start + _SIDE_CHUNK]
            for index, sentence in zip(indices.tolist(), sentences, strict=True):
                if sentence_keys and (sentence in mapping or "/" in sentence or not sentence):
                    problem = "occurs twice" if sentence in mapping else "is empty or has a /"
                    raise ValueError(
                        f"line {index + 1} {problem}: with --use-sentence-keys every line must "
                        "be a distinct, non-empty dataset name without '/'; the partial output "
                        "is kept (finish it with --resume without --use-sentence-keys)"
                    )
                mapping[sentence] = index
        del file[PROGRESS_GROUP]
        if sentence_keys:
            for sentence, index in mapping.items():
                file.move(str(index), sentence)
        elif sentence_index:
            _write_sentence_to_index(file, mapping)
        file.attrs[LINES_ATTR] = total_lines
        self._file.close()
        self._closed = True
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Close without finishing: the partial file stays, resumable from its last checkpoint."""
        if not self._closed:
            self._closed = True
            self._file.close()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_sentence_to_index(file: h5py.File, mapping: dict[str, int]) -> None:
    ordered = sorted(mapping.items(), key=lambda item: item[1])
    text = json.dumps({sentence: str(index) for sentence, index in ordered})
    dataset = file.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=h5py.string_dtype())
    dataset[0] = text


class HDF5Reader:
    """An HDF5 file open for reading, closed by close() or at the end of a `with` block."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureReader(HDF5Reader):
    """Reads a per-sentence feature file (elmokit's or the old AllenNLP command's)."""

    def __len__(self) -> int:
        return sum(1 for _ in _line_keys(self._file))

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self._file[str(index)][...])

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]

    def sentence_to_index(self) -> dict[str, int]:
        raw = self._file[SENTENCE_TO_INDEX].asstr()[0]
        return {sentence: int(index) for sentence, index in json.loads(raw).items()}

    @property
    def spec(self) -> FeatureSpec | None:
        raw = self._file.attrs.get(SPEC_ATTR)
        return FeatureSpec.from_json(str(raw)) if raw is not None else None


# -- shards -------------------------------------------------------------------------------


def shard_path(path: str | Path, rank: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.rank{rank}")


def find_shards(path: str | Path) -> list[Path]:
    """The finished shard files of `path`, rank order; raises if any rank is missing."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.rank(\d+)$")
    found: dict[int, Path] = {}
    for candidate in path.parent.iterdir():
        match = pattern.match(candidate.name)
        if match:
            found[int(match.group(1))] = candidate
    if not found:
        raise FileNotFoundError(f"no shard files {path}.rank* to merge")
    with h5py.File(found[min(found)], "r") as first:
        shard = str(first.attrs.get(SHARD_ATTR, ""))
    world = int(shard.split("/")[1]) if "/" in shard else len(found)
    missing = [rank for rank in range(world) if rank not in found]
    if missing:
        unfinished = [r for r in missing if partial_path(shard_path(path, r)).exists()]
        hint = f" (still partial: ranks {unfinished})" if unfinished else ""
        raise FileNotFoundError(f"shards of {path} missing for ranks {missing}{hint}")
    return [found[rank] for rank in range(world)]


def merge_shards(path: str | Path, shards: Sequence[str | Path], overwrite: bool = False) -> Path:
    """One feature file from the shard files of a multi-process run (rank r holds the lines
    with index % world == r). Datasets are copied (HDF5 object copy, no decoding), so the
    result does not depend on the shard files and equals a single-process run's file."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    sources = [h5py.File(shard, "r") for shard in shards]
    try:
        world = len(sources)
        spec_texts = {str(s.attrs[SPEC_ATTR]) for s in sources}
        totals = {int(s.attrs[LINES_ATTR]) for s in sources}
        if len(spec_texts) != 1 or len(totals) != 1:
            raise ValueError("the shards were written with different options or inputs")
        for rank, source in enumerate(sources):
            if str(source.attrs.get(SHARD_ATTR, f"{rank}/{world}")) != f"{rank}/{world}":
                raise ValueError(f"{shards[rank]} is not shard {rank} of {world}")
        total = totals.pop()
        partial = partial_path(path)
        with _open(partial, "w") as target:
            for name, value in sources[0].attrs.items():
                if name != SHARD_ATTR:
                    target.attrs[name] = value
            for index in range(total):
                key = str(index)
                source = sources[index % world]
                if key not in source:
                    raise ValueError(f"line {index} is missing from {shards[index % world]}")
                source.copy(source[key], target, name=key)
            mapping: dict[str, int] = {}
            for source in sources:
                for sentence, index in json.loads(source[SENTENCE_TO_INDEX].asstr()[0]).items():
                    mapping[sentence] = max(int(index), mapping.get(sentence, -1))
            _write_sentence_to_index(target, mapping)
        os.replace(partial, path)
        return path
    finally:
        for source in sources:
            source.close()


# -- token-embedding cache ------------------------------------------------------------------


def write_token_embeddings(
    path: str | Path, n_tokens: int, dim: int, batches: Iterable[np.ndarray]
) -> Path:
    """Write the `embedding` dataset (n_tokens, dim) from row batches in vocabulary order,
    through `path.partial` so an interrupted run leaves no truncated cache behind."""
    path = Path(path)
    partial = partial_path(path)
    try:
        file = h5py.File(partial, "w")
    except OSError as error:
        raise OSError(f"cannot create {partial}: {error}") from error
    with file:
        dataset = file.create_dataset(TOKEN_EMBEDDING_DATASET, (n_tokens, dim), dtype=np.float32)
        row = 0
        for batch in batches:
            dataset[row : row + len(batch)] = batch
            row += len(batch)
        if row != n_tokens:
            raise ValueError(f"got {row} token vectors for {n_tokens} vocabulary entries")
    os.replace(partial, path)
    return path


def read_token_embeddings(path: str | Path) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return np.asarray(file[TOKEN_EMBEDDING_DATASET][...])

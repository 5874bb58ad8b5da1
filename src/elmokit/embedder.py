"""`Embedder`: sentences in, ELMo layers out, streaming and in bounded memory.

Batching. Sentences are read in look-ahead windows (`window_batches` batches, or as many
tokens); inside a window identical sentences are computed once, the distinct ones are sorted by
length and cut into batches, and the results are emitted in the input order. Only one window
is held at a time, so memory does not grow with the input. The biLM must use the "reset" state
policy: it makes every sentence's vectors independent of its batch, so bucketing and
deduplication give exactly what one sentence at a time would.

Memory. `max_tokens_per_batch` bounds each biLM call: a batch holds at most that many padded
tokens, and since the LSTM runs every step on at least MIN_GEMM_ROWS rows, a batch whose
`max(rows, MIN_GEMM_ROWS) * length` exceeds it is run in time chunks, carrying each
direction's LSTM state from chunk to chunk (the backward direction reads the reversed
sentence, so its chunks are also in its own processing order). That is the same computation as
one call (`BiLM.layers_from_token_vectors`), so a 10,000-token line works in the memory of an
ordinary batch. The char CNN sees each distinct token of a batch once, in calls of bounded,
bucketed size (`BiLM.encode_tokens`).
`max_sentence_tokens` is different: it splits long sentences into independent pieces (each
with its own <S> and </S>), which changes their vectors, for users who want bounded context.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, cast

import numpy as np
import torch

from elmokit.bilm import BiLM
from elmokit.devices import resolve_device
from elmokit.io.features import (
    MODEL_ATTR,
    PRECISION_ATTR,
    SHARD_ATTR,
    FeatureOutput,
    FeatureSpec,
    FeatureWriter,
    partial_path,
    shard_path,
)
from elmokit.modules.fast_inference import InferenceMode
from elmokit.modules.lstm import MIN_GEMM_ROWS
from elmokit.tokenizers import Tokenize, make_tokenizer

DEFAULT_MAX_TOKENS_PER_BATCH = 4096
DEFAULT_WINDOW_BATCHES = 16
DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_SECONDS = 30.0

K = TypeVar("K")
SENTENCE_POOLINGS = ("mean", "max", "first", "last")
SentenceInput = str | Sequence[str]
Transform = Callable[[np.ndarray], np.ndarray]


class InputError(ValueError):
    """A problem with the input text, reported with its line number."""


class Embedder:
    """Embeds tokenised or raw sentences with a biLM; see the module docstring.

    model: a BiLM or anything `elmokit.load` accepts (with `weights` for an options.json).
    precision: the biLM's arithmetic ("fp32" fast path by default; "reference", "bf16",
    "int8": BiLM.optimize_for_inference); None keeps a passed BiLM's.
    tokenize: how `str` sentences become tokens (elmokit.tokenizers): None or "whitespace"
    splits on whitespace (pre-tokenised text), "moses" runs the sacremoses tokeniser for
    `lang`, "jieba" segments raw Chinese text (elmokit[zh]). Token lists are used as they are.
    """

    def __init__(
        self,
        model: BiLM | str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_tokens_per_batch: int | None = None,
        tokenize: Tokenize | None = None,
        *,
        weights: str | Path | None = None,
        max_sentence_tokens: int | None = None,
        window_batches: int = DEFAULT_WINDOW_BATCHES,
        lang: str = "en",
        precision: InferenceMode | None = None,
    ) -> None:
        device = resolve_device(device)
        if isinstance(model, BiLM):
            self.model = model.to(device).eval()
        else:
            from elmokit.loading import load

            self.model = load(model, weights=weights, device=device)
        if precision is not None:
            self.model.optimize_for_inference(precision)
        if self.model.state_policy != "reset":
            raise ValueError(
                "Embedder needs a biLM with state_policy='reset': with carried state a "
                "sentence's vectors depend on the batches before it, which bucketing reorders"
            )
        for name, value in (
            ("batch_size", batch_size),
            ("max_tokens_per_batch", max_tokens_per_batch),
            ("max_sentence_tokens", max_sentence_tokens),
            ("window_batches", window_batches),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch or DEFAULT_MAX_TOKENS_PER_BATCH
        self.max_sentence_tokens = max_sentence_tokens
        self.window_batches = window_batches
        self._split = make_tokenizer(tokenize, lang)

    @property
    def n_layers(self) -> int:
        """Layers per output, including the token layer (L + 1)."""
        return self.model.config.n_layers + 1

    @property
    def dim(self) -> int:
        """Size of each output vector (2P)."""
        return 2 * self.model.config.projection_dim

    # -- public API --------------------------------------------------------------------------

    def tokenize(self, sentence: SentenceInput) -> list[str]:
        if isinstance(sentence, str):
            return self._split(sentence)
        if not isinstance(sentence, Sequence):
            raise TypeError(
                f"a sentence must be a str or a list of str tokens, got {type(sentence).__name__}"
            )
        return list(sentence)

    def embed_sentence(self, sentence: SentenceInput) -> np.ndarray:
        """One sentence -> float32 [L+1, T, 2P] (layer 0 is the token vector twice)."""
        return next(self.embed_keyed([(0, sentence)]))[1]

    def embed_sentences(
        self, sentences: Iterable[SentenceInput], batch_size: int | None = None
    ) -> Iterator[np.ndarray]:
        """Lazily embed sentences, yielding [L+1, T, 2P] arrays in the input order."""
        if isinstance(sentences, str):
            raise TypeError("embed_sentences takes an iterable of sentences; use embed_sentence")
        return (array for _, array in self.embed_keyed(enumerate(sentences), batch_size))

    def encode(
        self,
        sentences: str | Iterable[SentenceInput],
        batch_size: int | None = None,
        show_progress_bar: bool = False,
        normalize_embeddings: bool = False,
        *,
        pooling: str = "mean",
        layer: int | str = "average",
    ) -> np.ndarray:
        """Sentence vectors, as sentence-transformers' `encode` gives them: float32 [N, 2P]
        for a list of N sentences (each a str or a token list), [2P] for one str.

        layer: "average" (the mean of the L+1 layers, the uniform ScalarMix), "top", or a
        layer index; pooling over tokens: "mean", "max", "first" or "last". An empty sentence
        gives zeros. normalize_embeddings scales each vector to unit length.
        """
        if pooling not in SENTENCE_POOLINGS:
            raise ValueError(f"pooling must be one of {SENTENCE_POOLINGS}, got {pooling!r}")
        if isinstance(layer, int) and not -self.n_layers <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range for {self.n_layers} layers")
        if not isinstance(layer, int) and layer not in ("average", "top"):
            raise ValueError(f"layer must be 'average', 'top' or an index, got {layer!r}")
        # sentence-transformers' convention: one str is one sentence, a list holds sentences
        # (each a str, or a list of tokens).
        single = isinstance(sentences, str)
        items: list[SentenceInput] = (
            [cast(str, sentences)] if single else list(cast(Iterable[SentenceInput], sentences))
        )
        from tqdm import tqdm

        vectors = np.zeros((len(items), self.dim), dtype=np.float32)
        layers = self.embed_sentences(items, batch_size)
        bar = tqdm(layers, total=len(items), disable=not show_progress_bar, desc="encode")
        for row, array in enumerate(bar):  # array [L+1, T, 2P]
            if array.shape[1] > 0:
                chosen = (
                    array.mean(axis=0)
                    if layer == "average"
                    else array[-1 if layer == "top" else int(layer)]
                )  # [T, 2P]
                vectors[row] = _pool(chosen, pooling)
        if normalize_embeddings:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors[0] if single else vectors

    def embed_keyed(
        self,
        items: Iterable[tuple[K, SentenceInput]],
        batch_size: int | None = None,
        transform: Transform | None = None,
        *,
        ordered: bool = True,
    ) -> Iterator[tuple[K, np.ndarray]]:
        """Like embed_sentences for (key, sentence) pairs, yielding (key, array) in order.

        transform maps each sentence's [L+1, T, 2P] to what is kept (e.g. only the top layer),
        applied as soon as a batch is done so that the window holds only the reduced arrays.
        It must treat each token position on its own (axis -2 is the token axis of its
        output): sentences split by max_sentence_tokens are transformed piece by piece.

        ordered=False yields each sentence as soon as its batch is done (within a look-ahead
        window batches run longest first, so the input order would hold every result back
        until the window's last batch): what a writer that records which lines are done
        (embed_file) uses to keep an interruption from costing the whole window.
        """
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        max_sentences = self.window_batches * batch_size
        max_tokens = self.window_batches * self.max_tokens_per_batch
        window: list[tuple[K, list[str]]] = []
        n_tokens = 0
        try:
            for key, sentence in items:
                tokens = self.tokenize(sentence)
                window.append((key, tokens))
                n_tokens += len(tokens)
                if len(window) >= max_sentences or n_tokens >= max_tokens:
                    yield from self._embed_window(window, batch_size, transform, ordered)
                    window, n_tokens = [], 0
        except InputError:
            # A bad line: the lines read before it are still embedded (and, in embed_file,
            # kept) before the error goes on, so a rerun with --resume starts at that line.
            yield from self._embed_window(window, batch_size, transform, ordered)
            raise
        if window:
            yield from self._embed_window(window, batch_size, transform, ordered)

    def embed_file(
        self,
        input_path: str | Path,
        output_path: str | Path,
        output_format: str | None = None,
        *,
        layers: Sequence[int] | None = None,
        mix: Sequence[float] | None = None,
        gamma: float = 1.0,
        pooling: str | None = None,
        resume: bool = False,
        overwrite: bool = False,
        strict: bool = False,
        errors: Literal["strict", "replace"] = "strict",
        batch_size: int | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
        sentence_keys: bool = False,
        sentence_index: bool = True,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = False,
        model_name: str = "",
        on_warning: Callable[[str], None] | None = None,
        on_checkpoint: Callable[[int], None] | None = None,
        check_stop: Callable[[], None] | None = None,
    ) -> Path:
        """Embed a text file (one sentence per line) into an HDF5 feature file, streaming.

        The thin layer between the line reader and `FeatureWriter` (elmokit.io.features):
        output_format "all" | "top" | "average" (default "all"; "mix" when `mix` is given),
        `layers` selects layers first; `pooling` ("mean", "max", "first", "last") stores one
        vector per line (output "average" unless another is given). Returns the written path
        (OUTPUT, or OUTPUT.rank{r} when world_size > 1, holding the lines with
        index % world_size == rank).
        sentence_keys / sentence_index: `allennlp elmo`'s --use-sentence-keys and
        --forget-sentences (see FeatureWriter.finish). check_stop is called after every line
        written; what it raises stops the run with its progress recorded (the command's
        signal handling uses it).
        """
        spec = make_spec(output_format, layers, mix, gamma, pooling)
        spec.check_layers(self.n_layers)
        if world_size > 1 and (sentence_keys or not sentence_index):
            raise ValueError("sentence keys / no sentence_to_index: run in one process")
        final = check_embed_paths(input_path, output_path, rank, world_size, resume, overwrite)
        warn = on_warning or _warn_to_stderr
        attrs: dict[str, str | int] = {
            MODEL_ATTR: model_name,
            PRECISION_ATTR: self.model.inference_mode,
        }
        if world_size > 1:
            attrs[SHARD_ATTR] = f"{rank}/{world_size}"
        writer = FeatureWriter(final, spec, resume=resume, attrs=attrs)
        progress_of = _Progress(writer.completed_lines)
        written = writer.completed_lines  # every line of ours before this one is on disk
        try:
            start = writer.completed_lines
            reader = _LineReader(Path(input_path), errors, start, rank, world_size)
            reader.expect = writer.last_sentence()
            blank = _BlankLines(strict, warn, spec.shape(self.n_layers, 0, self.dim))
            bar = _progress_bar(Path(input_path), rank, world_size, start, progress)

            def items() -> Iterator[tuple[tuple[int, str], list[str]]]:
                for index, text in reader:
                    if index in writer.done_after:  # kept from the interrupted run
                        progress_of.read(index)
                        progress_of.done(index)
                        bar.update(1)
                        continue
                    tokens = self.tokenize(text)
                    if not tokens:
                        blank.seen(index)
                    progress_of.read(index)
                    yield (index, text), tokens

            since_checkpoint, last_checkpoint = 0, time.monotonic()
            with bar:
                # Unordered: each line is written as soon as its batch is done, so an
                # interruption loses at most the batch running (and the progress bar moves
                # line by line), not the whole look-ahead window.
                results = self.embed_keyed(items(), batch_size, spec.reduce, ordered=False)
                for (index, text), features in results:
                    writer.write(index, text, spec.pool(features))
                    progress_of.done(index)
                    written = progress_of.completed
                    bar.update(1)
                    if check_stop is not None:
                        check_stop()
                    since_checkpoint += 1
                    # Every N lines, and at least every `checkpoint_seconds`: what an
                    # interruption can cost is bounded in time as well as in lines.
                    overdue = checkpoint_seconds is not None and (
                        time.monotonic() - last_checkpoint >= checkpoint_seconds
                    )
                    if since_checkpoint >= checkpoint_every or overdue:
                        writer.checkpoint(written)
                        since_checkpoint, last_checkpoint = 0, time.monotonic()
                        if on_checkpoint is not None:
                            on_checkpoint(writer.recorded_lines)
            blank.summary()
            return writer.finish(
                reader.lines_read, sentence_keys=sentence_keys, sentence_index=sentence_index
            )
        except BaseException:
            # Every line up to the last one written is complete: record that, so a resumed
            # run (also after Ctrl-C or SIGTERM) does not redo it.
            try:
                if written > writer.completed_lines:
                    writer.checkpoint(written)
            except Exception:
                pass
            raise
        finally:
            writer.close()

    # -- batching ------------------------------------------------------------------------------

    def _embed_window(
        self,
        window: list[tuple[K, list[str]]],
        batch_size: int,
        transform: Transform | None,
        ordered: bool = True,
    ) -> Iterator[tuple[K, np.ndarray]]:
        slots: dict[tuple[str, ...], int] = {}
        plans: list[list[int]] = []
        for _, tokens in window:
            plans.append([slots.setdefault(piece, len(slots)) for piece in self._pieces(tokens)])
        users: list[list[int]] = [[] for _ in slots]  # slot -> window positions that need it
        for position, plan in enumerate(plans):
            for slot in set(plan):
                users[slot].append(position)
        missing = [len(set(plan)) for plan in plans]
        results: list[np.ndarray | None] = [None] * len(slots)
        handed_out = [False] * len(slots)

        def assemble(position: int) -> tuple[K, np.ndarray]:
            plan = plans[position]
            if len(plan) > 1:
                return window[position][0], np.concatenate(
                    [cast(np.ndarray, results[slot]) for slot in plan], axis=-2
                )
            slot = plan[0]
            # A repeated sentence gets its own copy: callers may modify what they receive.
            array = cast(np.ndarray, results[slot])
            if handed_out[slot]:
                array = array.copy()
            handed_out[slot] = True
            return window[position][0], array

        for slot, array in self._iter_distinct(list(slots), batch_size, transform):
            results[slot] = array
            if ordered:
                continue
            for position in users[slot]:
                missing[position] -= 1
                if missing[position] == 0:
                    yield assemble(position)
        if ordered:
            for position in range(len(window)):
                yield assemble(position)

    def _pieces(self, tokens: list[str]) -> list[tuple[str, ...]]:
        limit = self.max_sentence_tokens
        if limit is None or len(tokens) <= limit:
            return [tuple(tokens)]
        return [tuple(tokens[start : start + limit]) for start in range(0, len(tokens), limit)]

    def _iter_distinct(
        self, sentences: list[tuple[str, ...]], batch_size: int, transform: Transform | None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(slot, array) for each sentence, batch by batch, longest sentences first."""
        empty = np.zeros((self.n_layers, 0, self.dim), dtype=np.float32)

        def stored(layers: np.ndarray) -> np.ndarray:
            out = transform(layers) if transform is not None else layers
            # Own the memory: a view would keep the whole padded batch tensor alive.
            return np.array(out, dtype=np.float32, copy=True)

        def run(batch: list[int]) -> Iterator[tuple[int, np.ndarray]]:
            layers = self._forward([list(sentences[slot]) for slot in batch]).numpy()
            for row, slot in enumerate(batch):
                yield slot, stored(layers[row, :, : len(sentences[slot])])

        order = sorted(range(len(sentences)), key=lambda slot: len(sentences[slot]), reverse=True)
        batch: list[int] = []
        for slot in order:
            length = len(sentences[slot])
            if length == 0:
                yield slot, stored(empty)
                continue
            if batch:
                longest = len(sentences[batch[0]])  # sorted: the first is the longest
                padded = (len(batch) + 1) * longest
                if len(batch) == batch_size or padded > self.max_tokens_per_batch:
                    yield from run(batch)
                    batch = []
            batch.append(slot)
        if batch:
            yield from run(batch)

    # -- biLM calls ----------------------------------------------------------------------------

    def _forward(self, sentences: list[list[str]]) -> torch.Tensor:
        """[B, L+1, T, 2P] on the CPU, the LSTM in one call or in time chunks (module doc)."""
        rows = max(len(sentences), MIN_GEMM_ROWS)
        steps = max(len(sentence) for sentence in sentences) + 2  # with <S> and </S>
        budget = self.max_tokens_per_batch
        chunk = None if rows * steps <= budget else max(1, budget // rows)
        with torch.inference_mode():
            ids = self.model.batch_to_ids(sentences)
            return self.model(ids, time_chunk=chunk).layers.cpu()


def _pool(tokens: np.ndarray, pooling: str) -> np.ndarray:
    """[T, D] -> [D]."""
    if pooling == "mean":
        return tokens.mean(axis=0)
    if pooling == "max":
        return tokens.max(axis=0)
    return tokens[0] if pooling == "first" else tokens[-1]


# -- files -----------------------------------------------------------------------------------


def make_spec(
    output_format: str | None,
    layers: Sequence[int] | None = None,
    mix: Sequence[float] | None = None,
    gamma: float = 1.0,
    pooling: str | None = None,
) -> FeatureSpec:
    if mix is not None and output_format not in (None, "mix"):
        raise ValueError(f"--mix is its own output; it cannot be combined with {output_format!r}")
    default = "average" if pooling is not None else "all"
    output = "mix" if mix is not None else (output_format or default)
    if output not in ("all", "top", "average", "mix"):
        raise ValueError(f"output_format must be all, top or average, got {output_format!r}")
    return FeatureSpec(
        output=cast(FeatureOutput, output),
        layers=tuple(layers) if layers is not None else None,
        mix=tuple(float(w) for w in mix) if mix is not None else None,
        gamma=float(gamma),
        pooling=pooling,
    )


def check_embed_paths(
    input_path: str | Path,
    output_path: str | Path,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Fail early (before loading a model) on the usual path mistakes; returns the file this
    process writes (OUTPUT, or OUTPUT.rank{r} when world_size > 1)."""
    input_path, output_path = Path(input_path), Path(output_path)
    if str(input_path) == STDIN:
        pass  # standard input: nothing to check, and never the same file as the output
    elif not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    if str(input_path) != STDIN and (
        output_path.resolve() == input_path.resolve()
        or (output_path.exists() and os.path.samefile(input_path, output_path))
    ):
        raise ValueError(f"{output_path} is the input file: give another output path")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    final = output_path if world_size == 1 else shard_path(output_path, rank)
    for existing in dict.fromkeys([output_path, final]):
        if existing.is_dir():
            raise IsADirectoryError(f"output {existing} is a directory; give a file name")
        if existing.exists() and not overwrite:
            raise FileExistsError(f"{existing} exists; pass --overwrite to replace it")
    partial = partial_path(final)
    if partial.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"{partial} is left from an earlier run that did not finish (interrupted, or "
            "stopped by an error): pass --resume to continue it or --overwrite to start over"
        )
    if not final.parent.is_dir():
        raise FileNotFoundError(f"output directory {final.parent} does not exist")
    if partial.exists():
        if not os.access(partial, os.W_OK):
            raise PermissionError(f"cannot write {partial}: permission denied")
    else:
        try:  # os.access is not reliable (root, network file systems): really try
            partial.open("xb").close()
            partial.unlink()
        except OSError as error:
            raise PermissionError(f"cannot write output {final}: {error.strerror}") from error
    return final


class _Progress:
    """Which lines of ours are done when they finish out of order: `completed` is the index
    before which every line read is done (the resumable prefix)."""

    def __init__(self, start: int) -> None:
        self._outstanding: set[int] = set()
        self._next = start  # one past the last line read

    def read(self, index: int) -> None:
        self._outstanding.add(index)
        self._next = index + 1

    def done(self, index: int) -> None:
        self._outstanding.discard(index)

    @property
    def completed(self) -> int:
        return min(self._outstanding) if self._outstanding else self._next


class _LineReader:
    """Lines of a UTF-8 file (binary reads: one line in memory at a time), stripped, with
    their 0-based index; only this rank's lines from `start` on. Counts all lines read."""

    def __init__(self, path: Path, errors: str, start: int, rank: int, world_size: int) -> None:
        if errors not in ("strict", "replace"):
            raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
        self.path, self.errors = path, errors
        self.start, self.rank, self.world_size = start, rank, world_size
        self.lines_read = 0
        self.expect: tuple[int, str] | None = None  # (index, text) a resumed file ends with

    def _decode(self, raw: bytes, index: int) -> str:
        try:
            text = raw.decode("utf-8", self.errors)
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.start + 1].hex()
            raise InputError(
                f"{self.path}: line {index + 1} is not valid UTF-8 (byte 0x{bad} at byte "
                f"offset {error.start}); fix the file or use errors='replace' "
                "(--errors replace) to read such bytes as U+FFFD"
            ) from None
        if index == 0:
            text = text.lstrip("\ufeff")
        if "\x00" in text:
            # HDF5 cannot store a NUL inside the line text that the output keeps: refuse it here,
            # before anything of this line is written (the lines before it stay resumable).
            if self.errors != "replace":
                raise InputError(
                    f"{self.path}: line {index + 1} contains a NUL character (byte 0x00, at "
                    f"character {text.index(chr(0)) + 1}): is it a binary file? Remove it, or "
                    "use errors='replace' (--errors replace) to read it as U+FFFD"
                )
            text = text.replace("\x00", "\ufffd")
        return text.strip()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        with open_input(self.path) as file:
            for index, raw in enumerate(file):
                self.lines_read = index + 1
                if self.expect is not None and index == self.expect[0]:
                    self._check_resumed_line(raw, index)
                if index < self.start or index % self.world_size != self.rank:
                    continue
                yield index, self._decode(raw, index)
        if self.expect is not None and self.lines_read <= self.expect[0]:
            raise InputError(
                f"{self.path} has {self.lines_read} lines but the partial output already holds "
                f"line {self.expect[0] + 1}: it is not the input this output was started with"
            )

    def _check_resumed_line(self, raw: bytes, index: int) -> None:
        assert self.expect is not None
        try:
            same = self._decode(raw, index) == self.expect[1]
        except InputError:
            same = False
        if not same:
            raise InputError(
                f"{self.path}: line {index + 1} differs from the one recorded in the partial "
                "output: it is not the input this output was started with (use --overwrite "
                "to start over)"
            )


class _BlankLines:
    def __init__(self, strict: bool, warn: Callable[[str], None], shape: tuple[int, ...]) -> None:
        self.strict, self.warn, self.shape = strict, warn, shape
        self._what = "an empty dataset" if 0 in shape else "a zero vector"
        self.count = 0

    def seen(self, index: int) -> None:
        if self.strict:
            raise InputError(
                f"line {index + 1} is blank (strict mode); remove it or drop --strict "
                "to write an empty dataset for it"
            )
        self.count += 1
        if self.count == 1:
            self.warn(
                f"line {index + 1} is blank: writing {self._what} {self.shape} under "
                f"'{index}' to keep line numbers (further blank lines are not reported one "
                "by one)"
            )

    def summary(self) -> None:
        if self.count > 1:
            self.warn(f"{self.count} blank lines in total were written as empty datasets")


def _warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


STDIN = "-"


@contextmanager
def open_input(path: Path) -> Iterator[BinaryIO]:
    """The bytes of an input text: a file, a gzip file (.gz), or standard input ("-")."""
    if str(path) == STDIN:
        yield sys.stdin.buffer
    elif path.suffix == ".gz":
        with gzip.open(path, "rb") as file:
            yield cast(BinaryIO, file)
    else:
        with path.open("rb") as file:
            yield file


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without newline counts), read in blocks."""
    count, last = 0, b"\n"
    with open_input(path) as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _progress_bar(path: Path, rank: int, world_size: int, start: int, enabled: bool) -> Any:
    from tqdm import tqdm

    # A second pass over the file: only if shown, and impossible on standard input.
    total = count_lines(path) if enabled and str(path) != STDIN else 0
    mine = len(range(rank, total, world_size))
    done = len(range(rank, min(start, total), world_size))
    return tqdm(
        total=mine,
        initial=done,
        unit=" sentences",
        unit_scale=True,
        smoothing=0.1,
        mininterval=1.0,
        desc=f"rank {rank}" if world_size > 1 else None,
        disable=not enabled,
    )

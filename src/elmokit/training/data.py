"""Training data for the biLM: streamed corpus sentences and bilm-tf style batches.

A corpus is read one line at a time and never held in memory (the reference recipe trains on
the 1B Word Benchmark). Batches follow bilm-tf's BidirectionalLMDataset: every batch row is an
endless stream of `<S> w1 ... wn </S>` sentences packed back to back, cut into windows of
`unroll_steps` so the trainer can carry each row's LSTM state into the next batch (truncated
BPTT). Within a sentence the target of each input is the next token; as in bilm-tf, the
`</S>` -> `<S>` step between two packed sentences is not a training pair (predicting `<S>`
would be a free, meaningless target), so a sentence of n words gives n + 1 pairs.

`row_layout = "contiguous"` is the other classic layout, the standard protocol for
document-ordered corpora such as Penn Treebank (Mikolov; Zaremba et al.; Kim et al.): row r
reads the r-th of B contiguous, token-balanced slices of the corpus in order, so the state it
carries comes from the text just before; the backward row reads its slice back to front. It
holds one epoch's sentences in memory (fine for PTB-size corpora; large corpora use "packed").
"""

from __future__ import annotations

import glob
import gzip
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any, Literal

import numpy as np
import torch

from elmokit.chars import (
    BATCH_PADDING_ID,
    BOS_TOKEN,
    BYTE_CHARACTERS,
    EOS_TOKEN,
    CharacterScheme,
)
from elmokit.tokenizers import Tokenize, Tokenizer, make_tokenizer
from elmokit.vocab import Vocabulary

RowLayout = Literal["packed", "contiguous"]
ROW_LAYOUTS = ("packed", "contiguous")
SentenceFactory = Callable[[], Iterable[list[str]]]

_STATE_VERSION = 1
# Drawing shuffle indices one at a time costs a numpy call per sentence; drawing them in
# blocks is several times faster and just as reproducible (the replay on resume draws alike).
_SHUFFLE_DRAW_BLOCK = 4096


def expand_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    # A bare string is a Sequence too: iterating it would open one "file" per character.
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for entry in paths:
        pattern = os.path.expanduser(os.fspath(entry))
        if glob.has_magic(pattern):
            # Sorted so that every rank and every run sees the files (and lines) in one order;
            # sharding and exact resume both depend on it.
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern {pattern!r}")
            files.extend(matches)
        else:
            if not os.path.isfile(pattern):
                raise FileNotFoundError(f"corpus file not found: {pattern}")
            files.append(pattern)
    if not files:
        raise ValueError("no corpus files given")
    return files


def _open_text(path: str, errors: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors=errors)
    return open(path, encoding="utf-8", errors=errors)


def iter_sentences(
    paths: Sequence[str | os.PathLike[str]],
    tokenize: Tokenize = "whitespace",
    rank: int = 0,
    world_size: int = 1,
    lang: str = "en",
    errors: str = "strict",
) -> Iterator[list[str]]:
    """Stream the tokenised sentences of text files, one sentence per non-blank line.

    `paths` may hold glob patterns (expanded and sorted); `.gz` files are decompressed on the
    fly. With `world_size` > 1 this rank gets the sentences whose global index k (counting
    non-blank lines over all files in order) has k % world_size == rank, so the ranks together
    see every sentence exactly once; counting non-blank lines rather than raw lines keeps the
    shards balanced on text with many blank lines. Files must be UTF-8: `errors` is passed to
    the decoder ("replace" to read e.g. Latin-1 text with U+FFFD for the bad bytes).

    Paths and arguments are checked now; the files are read lazily as the iterator advances.
    """
    split = make_tokenizer(tokenize, lang)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    files = expand_paths(paths)
    return _read_sentences(files, split, rank, world_size, errors)


def _read_sentences(
    files: list[str],
    split: Tokenizer,
    rank: int,
    world_size: int,
    errors: str,
) -> Iterator[list[str]]:
    index = 0
    for path in files:
        # Counted by hand (not enumerate) so the decode error below can say how far it got.
        lines_read = 0
        try:
            with _open_text(path, errors) as handle:
                for line in handle:
                    lines_read += 1
                    if not line.strip():
                        continue
                    mine = index % world_size == rank
                    index += 1
                    if not mine:
                        # Skipped before tokenising: Moses is the slow part of reading.
                        continue
                    tokens = split(line)
                    if tokens:
                        yield tokens
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}: not valid UTF-8 after line {lines_read} ({error.reason} at byte "
                f"offset {error.start} of a read block); convert the file, or pass "
                "errors='replace' to read it with U+FFFD for the bad bytes"
            ) from error


@dataclass
class DirectionBatch:
    """One direction of a training batch; padded slots have mask False, ids 0 and char ids 0."""

    token_ids: torch.Tensor  # LongTensor [B, T]: vocab ids of the inputs
    char_ids: torch.Tensor  # LongTensor [B, T, 50]: inference char ids of the input tokens
    target_ids: torch.Tensor  # LongTensor [B, T]: vocab id of the next token in the row
    mask: torch.Tensor  # BoolTensor [B, T]: False only after a row's stream ran dry

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DirectionBatch:
        return DirectionBatch(
            *(
                tensor.to(device, non_blocking=non_blocking)
                for tensor in (self.token_ids, self.char_ids, self.target_ids, self.mask)
            )
        )


@dataclass
class LMBatch:
    forward: DirectionBatch
    backward: DirectionBatch

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LMBatch:
        return LMBatch(
            self.forward.to(device, non_blocking), self.backward.to(device, non_blocking)
        )


def _buffer_shuffle(
    sentences: Iterator[list[str]], buffer_size: int, rng: np.random.Generator
) -> Iterator[list[str]]:
    """Approximate shuffle in bounded memory: emit a random element of a buffer, refill it."""
    buffer: list[list[str]] = []
    draws: list[int] = []
    for sentence in sentences:
        if len(buffer) < buffer_size:
            buffer.append(sentence)
            continue
        if not draws:
            draws = rng.integers(buffer_size, size=_SHUFFLE_DRAW_BLOCK).tolist()[::-1]
        slot = draws.pop()
        yield buffer[slot]
        buffer[slot] = sentence
    for slot in rng.permutation(len(buffer)).tolist():
        yield buffer[slot]


class _Position:
    """Where a sentence source is: (epoch, sentences consumed in that epoch), which with the
    data and seed is all it needs to continue exactly."""

    def __init__(self, epochs: int | None) -> None:
        self.epochs = epochs
        self.epoch = 0
        self.consumed = 0

    def seek(self, epoch: int, consumed: int) -> None:
        self.epoch, self.consumed = epoch, consumed


class _SentenceSource(_Position):
    """One direction's sentence supply: epochs of (optionally shuffled) factory output.

    Its position is just (epoch, sentences consumed in that epoch): the shuffle rng of an epoch
    is seeded from (seed, direction, epoch), so reopening the epoch and skipping the consumed
    sentences reproduces the exact continuation without storing the shuffle buffer.
    """

    def __init__(
        self,
        factory: SentenceFactory,
        direction: int,
        seed: int,
        shuffle_buffer: int,
        epochs: int | None,
    ) -> None:
        super().__init__(epochs)
        self.factory = factory
        self.direction = direction
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self._iterator: Iterator[list[str]] | None = None

    def seek(self, epoch: int, consumed: int) -> None:
        super().seek(epoch, consumed)
        self._iterator = None  # reopened (and fast-forwarded) lazily on the next read

    def _open_epoch(self) -> Iterator[list[str]]:
        sentences: Iterator[list[str]] = iter(self.factory())
        if self.shuffle_buffer > 0:
            rng = np.random.default_rng([self.seed, self.direction, self.epoch])
            sentences = _buffer_shuffle(sentences, self.shuffle_buffer, rng)
        if self.consumed:
            skipped = sum(1 for _ in islice(sentences, self.consumed))
            if skipped < self.consumed:
                raise ValueError(
                    f"cannot resume: the state says {self.consumed} sentences of epoch "
                    f"{self.epoch} were consumed, but the data now has only {skipped}"
                )
        return sentences

    def next_sentence(self) -> list[str] | None:
        """The next sentence, or None once the last epoch is used up."""
        while self.epochs is None or self.epoch < self.epochs:
            if self._iterator is None:
                self._iterator = self._open_epoch()
            sentence = next(self._iterator, None)
            if sentence is not None:
                self.consumed += 1
                return sentence
            if self.consumed == 0:
                # Without this, epochs=None would spin forever on an empty corpus.
                if self.epoch == 0:
                    raise ValueError(
                        "the training text has no sentences (every line is blank, or the "
                        "files are empty)"
                    )
                raise ValueError(
                    f"the sentence factory gave no sentences for epoch {self.epoch}; it must "
                    "return a fresh iterator on every call (e.g. lambda: iter_sentences(paths))"
                )
            self.epoch += 1
            self.consumed = 0
            self._iterator = None
        return None


class _SliceSource(_Position):
    """One row's sentence supply in the contiguous layout: its slice of the corpus, epoch
    after epoch (read back to front for the backward direction)."""

    def __init__(self, corpus: _CorpusSlices, row: int, direction: int, epochs: int | None):
        super().__init__(epochs)
        self.corpus = corpus
        self.row = row
        self.direction = direction

    def next_sentence(self) -> list[str] | None:
        while self.epochs is None or self.epoch < self.epochs:
            sentences = self.corpus.slice(self.row)
            if self.consumed < len(sentences):
                index = self.consumed if self.direction == 0 else len(sentences) - 1 - self.consumed
                self.consumed += 1
                return sentences[index]
            self.epoch += 1
            self.consumed = 0
        return None


class _CorpusSlices:
    """The corpus read once into memory and cut into `rows` contiguous slices of about equal
    token counts (cut at sentence boundaries)."""

    def __init__(self, factory: SentenceFactory, rows: int, endless: bool) -> None:
        self.factory = factory
        self.rows = rows
        self.endless = endless
        self._slices: list[list[list[str]]] | None = None

    def slice(self, row: int) -> list[list[str]]:
        if self._slices is None:
            self._slices = self._cut(list(self.factory()))
        return self._slices[row]

    def _cut(self, sentences: list[list[str]]) -> list[list[list[str]]]:
        if len(sentences) < self.rows:
            if self.endless:  # a row without text could never fill a training batch
                raise ValueError(
                    f"row_layout 'contiguous' needs at least batch_size = {self.rows} "
                    f"sentences to train on, the corpus has {len(sentences)}"
                )
            # A small held-out file: one sentence per row, the other rows stay padding.
            return [sentences[row : row + 1] for row in range(self.rows)]
        # Slots a sentence fills: its words plus </S> (see the module docstring).
        ends = np.cumsum([len(sentence) + 1 for sentence in sentences])
        targets = ends[-1] * np.arange(1, self.rows) / self.rows
        cuts = [0, *np.searchsorted(ends, targets, side="left").tolist(), len(sentences)]
        # Every row gets at least one sentence even on very uneven corpora.
        for row in range(1, self.rows):
            cuts[row] = min(max(cuts[row], cuts[row - 1] + 1), len(sentences) - (self.rows - row))
        return [sentences[cuts[row] : cuts[row + 1]] for row in range(self.rows)]


class StreamBatcher:
    """bilm-tf style training batches: an iterator of `LMBatch`.

    `sentences` is called for a fresh sentence iterator at each epoch of each direction. The
    forward and backward directions are separate streams (the backward one packs reversed
    sentences, `<S> wn ... w1 </S>`) with their own shuffle rng, so with `shuffle_buffer` > 0
    a forward row and the same backward row hold unrelated text, as in bilm-tf. With
    `shuffle_buffer` = 0 both directions read the corpus in file order.

    Rows are filled in order 0..B-1 from the shared sentence supply of their direction; a row
    that finishes a sentence takes the next one, so sentences are split across batches. With
    `epochs` = N the supply runs through the data N times without breaks (each epoch reshuffled)
    and iteration stops when both directions are dry. The last batches are padded, not dropped:
    a row whose stream ran dry is padded with mask False (and ids 0), so every token of the
    data is trained on. A direction can be entirely padded in the final batch, so weight any
    loss by `mask`. `epochs=None` iterates forever.

    `max_tokens_per_sentence` truncates longer sentences to their first words (before adding
    `<S>`/`</S>`), bounding the char-id work a single pathological line can cause.
    `tokens_seen` counts the real forward targets yielded so far (the backward direction trains
    on the same tokens in another order, so counting both would double the corpus size).

    `row_layout = "contiguous"` gives each row its own contiguous slice of the corpus instead
    (see the module docstring; `shuffle_buffer` must be 0); a row that ends its slice starts
    its slice of the next epoch.

    `state_dict()` taken after any batch and `load_state_dict()` on a new batcher built with the
    same data and arguments resume with exactly the batches that would have come next.

    `characters` is the model's character scheme (BiLM.characters; the byte scheme by
    default): its ids are what the char CNN reads, and its boundary ids stand for `<S>`/`</S>`.
    """

    def __init__(
        self,
        sentences: SentenceFactory,
        vocab: Vocabulary,
        batch_size: int,
        unroll_steps: int,
        seed: int = 0,
        shuffle_buffer: int = 0,
        max_tokens_per_sentence: int | None = None,
        epochs: int | None = 1,
        row_layout: RowLayout = "packed",
        characters: CharacterScheme = BYTE_CHARACTERS,
    ) -> None:
        if not callable(sentences):
            raise TypeError(
                "sentences must be a callable returning a fresh sentence iterator "
                "(e.g. lambda: iter_sentences(paths)), so the data can be read once per epoch"
            )
        if batch_size < 1 or unroll_steps < 1:
            raise ValueError(
                f"batch_size and unroll_steps must be >= 1, got {batch_size}, {unroll_steps}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if max_tokens_per_sentence is not None and max_tokens_per_sentence < 1:
            raise ValueError(
                f"max_tokens_per_sentence must be >= 1 or None, got {max_tokens_per_sentence}"
            )
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None, got {epochs}")
        if row_layout not in ROW_LAYOUTS:
            raise ValueError(f"row_layout must be one of {ROW_LAYOUTS}, got {row_layout!r}")
        if row_layout == "contiguous" and shuffle_buffer > 0:
            raise ValueError(
                "row_layout 'contiguous' reads the corpus in order: set shuffle_buffer = 0"
            )
        self.vocab = vocab
        self.characters = characters
        self.batch_size = batch_size
        self.unroll_steps = unroll_steps
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.max_tokens_per_sentence = max_tokens_per_sentence
        self.epochs = epochs
        self.tokens_seen = 0
        self.batches_yielded = 0
        self.row_layout = row_layout
        self._sources = [
            _SentenceSource(sentences, direction, seed, shuffle_buffer, epochs)
            for direction in (0, 1)
        ]
        # Contiguous layout: one source per direction and row, over one shared in-memory copy.
        self._row_sources: list[list[_SliceSource]] = []
        if row_layout == "contiguous":
            corpus = _CorpusSlices(sentences, batch_size, endless=epochs is None)
            self._row_sources = [
                [_SliceSource(corpus, row, direction, epochs) for row in range(batch_size)]
                for direction in (0, 1)
            ]
        # Per direction and row: the not yet used tail of the row's current wrapped sentence
        # (a tail of one token is just the final </S>, which is never an input).
        self._rows: list[list[list[str]]] = [[[] for _ in range(batch_size)] for _ in (0, 1)]

    @property
    def epoch(self) -> int:
        """The forward stream's current epoch (0-based; equals `epochs` once it is dry); in the
        contiguous layout the epoch of the row furthest behind."""
        if self._row_sources:
            return min(source.epoch for source in self._row_sources[0])
        return self._sources[0].epoch

    def _next_sentence(self, direction: int, row: int) -> list[str] | None:
        if self._row_sources:
            return self._row_sources[direction][row].next_sentence()
        return self._sources[direction].next_sentence()

    def __iter__(self) -> StreamBatcher:
        return self

    def __next__(self) -> LMBatch:
        forward = self._direction_batch(0)
        backward = self._direction_batch(1)
        n_forward = forward.num_tokens
        if n_forward == 0 and backward.num_tokens == 0:
            raise StopIteration
        self.tokens_seen += n_forward
        self.batches_yielded += 1
        return LMBatch(forward, backward)

    def _wrap(self, words: list[str], direction: int) -> list[str]:
        if self.max_tokens_per_sentence is not None:
            words = words[: self.max_tokens_per_sentence]
        if direction == 1:
            return [BOS_TOKEN, *reversed(words), EOS_TOKEN]
        return [BOS_TOKEN, *words, EOS_TOKEN]

    def _direction_batch(self, direction: int) -> DirectionBatch:
        size, steps = self.batch_size, self.unroll_steps
        rows = self._rows[direction]
        inputs: list[str] = []  # all rows, concatenated: each row's real slots are a prefix
        targets: list[str] = []
        lengths: list[int] = []
        for row in range(size):
            row_start = len(inputs)
            tail = rows[row]
            while len(inputs) - row_start < steps:
                if len(tail) < 2:
                    sentence = self._next_sentence(direction, row)
                    if sentence is None:
                        tail = []
                        break
                    tail = self._wrap(sentence, direction)
                take = min(len(tail) - 1, steps - (len(inputs) - row_start))
                inputs.extend(tail[:take])
                targets.extend(tail[1 : take + 1])
                tail = tail[take:]
            rows[row] = tail
            lengths.append(len(inputs) - row_start)
        mask = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
        token_ids = np.zeros((size, steps), dtype=np.int64)
        target_ids = np.zeros((size, steps), dtype=np.int64)
        width = self.characters.width
        char_ids = np.full((size, steps, width), BATCH_PADDING_ID, dtype=np.int64)
        if inputs:
            # Boolean-mask assignment fills in row-major order, matching the concatenation.
            token_ids[mask] = self.vocab.encode(inputs)
            target_ids[mask] = self.vocab.encode(targets)
            # From the token strings, not the vocab ids: the char CNN is what lets the model
            # see out-of-vocabulary words, which all share the <UNK> id. Converting each
            # distinct token once and gathering is much faster than converting every slot.
            slot_of: dict[str, int] = {}
            positions = [slot_of.setdefault(token, len(slot_of)) for token in inputs]
            table = np.array([self._token_ids(token) for token in slot_of], dtype=np.int64)
            char_ids[mask] = table[positions]
        return DirectionBatch(
            torch.from_numpy(token_ids),
            torch.from_numpy(char_ids),
            torch.from_numpy(target_ids),
            torch.from_numpy(mask),
        )

    def _token_ids(self, token: str) -> tuple[int, ...]:
        if token == BOS_TOKEN:
            return self.characters.bos_ids
        if token == EOS_TOKEN:
            return self.characters.eos_ids
        return self.characters.token_ids(token)

    def _config(self) -> dict[str, Any]:
        # `epochs` is left out on purpose: resuming with a larger limit extends a run.
        return {
            "batch_size": self.batch_size,
            "unroll_steps": self.unroll_steps,
            "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer,
            "max_tokens_per_sentence": self.max_tokens_per_sentence,
            "row_layout": self.row_layout,
        }

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of the position in the data."""
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "epoch": self.epoch,
            "tokens_seen": self.tokens_seen,
            "batches_yielded": self.batches_yielded,
            "directions": {
                name: {
                    # The shuffle rng state is implied by (config.seed, direction, epoch).
                    "epoch": self._sources[direction].epoch,
                    "sentences_consumed": self._sources[direction].consumed,
                    "rows": [list(tail) for tail in self._rows[direction]],
                    # Contiguous layout: (epoch, sentences consumed) of each row's slice.
                    "row_positions": [
                        [source.epoch, source.consumed] for source in self._row_sources[direction]
                    ]
                    if self._row_sources
                    else [],
                }
                for direction, name in enumerate(("forward", "backward"))
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`; the consumed sentences are re-read and skipped."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"unsupported StreamBatcher state version {state.get('version')!r} "
                f"(expected {_STATE_VERSION})"
            )
        # States written before row_layout existed are packed-layout states.
        saved = {"row_layout": "packed", **state["config"]}
        mismatched = {
            key: (saved.get(key), value)
            for key, value in self._config().items()
            if saved.get(key) != value
        }
        if mismatched:
            details = ", ".join(
                f"{key}: saved {old!r}, now {new!r}" for key, (old, new) in mismatched.items()
            )
            raise ValueError(f"cannot resume with different batching arguments ({details})")
        rows: list[list[list[str]]] = []
        positions: list[tuple[int, int]] = []
        slice_positions: list[list[tuple[int, int]]] = []
        for name in ("forward", "backward"):
            direction = state["directions"][name]
            tails = direction["rows"]
            if len(tails) != self.batch_size or not all(
                isinstance(tail, list) and all(isinstance(token, str) for token in tail)
                for tail in tails
            ):
                raise ValueError(f"bad {name} rows in the state: need {self.batch_size} lists")
            rows.append([list(tail) for tail in tails])
            positions.append((int(direction["epoch"]), int(direction["sentences_consumed"])))
            row_positions = direction.get("row_positions", [])
            if self._row_sources and len(row_positions) != self.batch_size:
                raise ValueError(f"bad {name} row_positions in the state")
            slice_positions.append([(int(epoch), int(done)) for epoch, done in row_positions])
        # Everything is validated before anything is changed, so a bad state leaves the
        # batcher as it was.
        self._rows = rows
        for source, (epoch, consumed) in zip(self._sources, positions, strict=True):
            source.seek(epoch, consumed)
        for row_sources, row_positions in zip(self._row_sources, slice_positions, strict=False):
            for row_source, (epoch, consumed) in zip(row_sources, row_positions, strict=True):
                row_source.seek(epoch, consumed)
        self.tokens_seen = int(state["tokens_seen"])
        self.batches_yielded = int(state.get("batches_yielded", 0))

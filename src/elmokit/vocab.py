"""The training vocabulary: one token per line, `<S>`, `</S>`, `<UNK>` first (FORMATS.md).

The order is part of the contract, not cosmetics: the log-uniform negative sampler assumes
id order is frequency order, and ids index the softmax, so a vocabulary must load back with
exactly the ids it was saved with. Ties are broken alphabetically so that two builds over the
same corpus give byte-identical files (and identical softmax rows).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from elmokit.chars import BOS_TOKEN, EOS_TOKEN, UNK_TOKEN
from elmokit.io.files import atomic_path

SPECIAL_TOKENS: tuple[str, str, str] = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2


def _check_token(token: object, where: str) -> str:
    if not isinstance(token, str):
        raise TypeError(f"{where}: a token must be a str, got {type(token).__name__}: {token!r}")
    if not token or token.strip() != token or "\n" in token or "\r" in token:
        # Such a token could not survive the one-token-per-line file: it would come back
        # stripped, split or blank, shifting every later id.
        raise ValueError(f"{where}: token {token!r} is empty or has surrounding whitespace")
    return token


class Vocabulary:
    """An ordered token list; a token's id is its position.

    `counts`, when known (built from a corpus), holds one count per token: for `<S>` and
    `</S>` the number of sentences, for `<UNK>` the number of corpus tokens that fell outside
    the vocabulary. A vocabulary read from a file has no counts (the format stores none).
    """

    def __init__(self, tokens: Iterable[str], counts: Sequence[int] | None = None) -> None:
        token_list = list(tokens)
        if tuple(token_list[:3]) != SPECIAL_TOKENS:
            raise ValueError(
                f"a vocabulary must start with {', '.join(SPECIAL_TOKENS)} (ids 0, 1, 2), "
                f"got {token_list[:3]!r}"
            )
        index: dict[str, int] = {}
        for position, token in enumerate(token_list):
            _check_token(token, f"token {position}")
            if token in index:
                raise ValueError(f"duplicate token {token!r} at ids {index[token]} and {position}")
            index[token] = position
        if counts is not None:
            if len(counts) != len(token_list):
                raise ValueError(f"{len(counts)} counts given for {len(token_list)} tokens")
            self._counts: tuple[int, ...] | None = tuple(int(count) for count in counts)
        else:
            self._counts = None
        self._tokens = tuple(token_list)
        self._index = index

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read a vocabulary file; errors name the file and line so a bad file is easy to fix."""
        path = Path(path)
        tokens: list[str] = []
        first_line: dict[str, int] = {}
        # Iterating the file (rather than str.splitlines) splits only on \n, \r\n and \r, the
        # same separators save() can never put inside a token; a missing final newline is fine.
        with open(path, encoding="utf-8", newline=None) as handle:
            for line_number, line in enumerate(handle, start=1):
                # Surrounding whitespace is stripped as bilm-tf did when reading its vocab files.
                token = line.strip()
                if not token:
                    raise ValueError(f"{path}: line {line_number} is blank")
                if token in first_line:
                    raise ValueError(
                        f"{path}: line {line_number}: duplicate token {token!r} "
                        f"(first on line {first_line[token]})"
                    )
                first_line[token] = line_number
                tokens.append(token)
        if tuple(tokens[:3]) != SPECIAL_TOKENS:
            found = ", ".join(
                f"{special} on line {first_line[special]}"
                if special in first_line
                else f"{special} missing"
                for special in SPECIAL_TOKENS
            )
            raise ValueError(
                f"{path}: lines 1-3 must be {', '.join(SPECIAL_TOKENS)} in this order "
                f"(ids 0, 1, 2), found {found}"
            )
        return cls(tokens)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one token per line, atomically: a crash never leaves a truncated vocabulary."""
        with (
            atomic_path(Path(path)) as temporary,
            temporary.open("w", encoding="utf-8", newline="\n") as handle,
        ):
            for token in self._tokens:
                handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def tokens(self) -> tuple[str, ...]:
        return self._tokens

    @property
    def counts(self) -> tuple[int, ...] | None:
        return self._counts

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    def __len__(self) -> int:
        return len(self._tokens)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        # Counts are deliberately ignored: a vocabulary loaded from its file has none but
        # assigns exactly the same ids as the one it was saved from.
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def token_to_id(self, token: str) -> int:
        return self._index.get(token, UNK_ID)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get = self._index.get
        return [get(token, UNK_ID) for token in tokens]

    def id_to_token(self, token_id: int) -> str:
        # Negative ids would silently index from the end of the tuple.
        if not 0 <= token_id < len(self._tokens):
            raise IndexError(f"token id {token_id} out of range for {len(self)} tokens")
        return self._tokens[token_id]


def build_vocabulary(
    sentences: Iterable[list[str]], min_count: int = 1, max_size: int | None = None
) -> Vocabulary:
    """Count tokens in one streaming pass and keep the frequent ones.

    `max_size` includes the three special tokens. Literal `<S>`, `</S>` or `<UNK>` tokens in
    the corpus are not counted as words: they already map to the special ids.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise ValueError(
            f"max_size must be >= {len(SPECIAL_TOKENS)} (it counts the special tokens), "
            f"got {max_size}"
        )
    counter: Counter[str] = Counter()
    n_sentences = 0
    for sentence in sentences:
        counter.update(sentence)
        n_sentences += 1
    for special in SPECIAL_TOKENS:
        counter.pop(special, None)
    total = sum(counter.values())
    ranked = sorted(
        ((token, count) for token, count in counter.items() if count >= min_count),
        key=lambda item: (-item[1], item[0]),
    )
    if max_size is not None:
        ranked = ranked[: max_size - len(SPECIAL_TOKENS)]
    kept = sum(count for _, count in ranked)
    tokens = [*SPECIAL_TOKENS, *(token for token, _ in ranked)]
    counts = [n_sentences, n_sentences, total - kept, *(count for _, count in ranked)]
    return Vocabulary(tokens, counts)

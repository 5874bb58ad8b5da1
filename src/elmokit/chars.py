"""Tokens to ELMo character ids (the inference scheme of FORMATS.md).

Every token becomes 50 ids: begin-of-word, up to 48 UTF-8 bytes (each byte b as b + 1),
end-of-word, then in-token padding. Id 0 is reserved for batch padding (a slot with no token),
so a slot holds a real token iff any of its ids is > 0. Training files number characters from 0
(these ids minus 1); elmokit uses the inference ids everywhere and only the weight file
differs (its char embedding has no row for id 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

MAX_CHARS_PER_TOKEN = 50
BEGIN_SENTENCE_CHAR = 257
END_SENTENCE_CHAR = 258
BEGIN_WORD_CHAR = 259
END_WORD_CHAR = 260
PADDING_CHAR = 261
BATCH_PADDING_ID = 0
N_CHARACTERS = 262  # ids 0..261

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"
UNK_TOKEN = "<UNK>"

_MAX_BYTES = MAX_CHARS_PER_TOKEN - 2


def _special_token_ids(marker: int) -> tuple[int, ...]:
    ids = [PADDING_CHAR] * MAX_CHARS_PER_TOKEN
    ids[0], ids[1], ids[2] = BEGIN_WORD_CHAR, marker, END_WORD_CHAR
    return tuple(ids)


BOS_CHAR_IDS: tuple[int, ...] = _special_token_ids(BEGIN_SENTENCE_CHAR)
EOS_CHAR_IDS: tuple[int, ...] = _special_token_ids(END_SENTENCE_CHAR)


@lru_cache(maxsize=200_000)
def token_to_char_ids(token: str) -> tuple[int, ...]:
    """The 50 character ids of one token (cached: corpora repeat words a lot)."""
    if not isinstance(token, str):
        raise TypeError(f"a token must be a str, got {type(token).__name__}: {token!r}")
    if token == BOS_TOKEN:
        return BOS_CHAR_IDS
    if token == EOS_TOKEN:
        return EOS_CHAR_IDS
    word_bytes = token.encode("utf-8", "ignore")[:_MAX_BYTES]
    ids = [PADDING_CHAR] * MAX_CHARS_PER_TOKEN
    ids[0] = BEGIN_WORD_CHAR
    for position, byte in enumerate(word_bytes, start=1):
        ids[position] = byte + 1
    ids[len(word_bytes) + 1] = END_WORD_CHAR
    return tuple(ids)


def check_token_batch(batch: object) -> list[list[str]]:
    """Validate a batch of tokenised sentences; a clear error instead of a deep traceback."""
    if isinstance(batch, str) or not isinstance(batch, Sequence):
        raise TypeError(
            f"expected a list of sentences, each a list of str tokens, got {type(batch).__name__}"
        )
    for index, sentence in enumerate(batch):
        if isinstance(sentence, str) or not isinstance(sentence, Sequence):
            raise TypeError(
                f"sentence {index} must be a list of str tokens, got {type(sentence).__name__}"
                + (
                    " (did you forget to split it into tokens?)"
                    if isinstance(sentence, str)
                    else ""
                )
            )
        for position, token in enumerate(sentence):
            if not isinstance(token, str):
                raise TypeError(
                    f"sentence {index}, token {position} must be a str, "
                    f"got {type(token).__name__}: {token!r}"
                )
    return [list(sentence) for sentence in batch]


def batch_to_ids(batch: Sequence[Sequence[str]]) -> torch.Tensor:
    """Character ids for a batch of tokenised sentences: LongTensor [batch, max_len, 50].

    Sentences are not wrapped in <S> ... </S> here: the biLM adds the boundaries itself.
    Rows shorter than the longest sentence are padded with id 0.
    """
    sentences = check_token_batch(batch)
    max_length = max((len(sentence) for sentence in sentences), default=0)
    char_ids = torch.zeros((len(sentences), max_length, MAX_CHARS_PER_TOKEN), dtype=torch.long)
    for row, sentence in enumerate(sentences):
        if sentence:
            char_ids[row, : len(sentence)] = torch.tensor(
                [token_to_char_ids(token) for token in sentence], dtype=torch.long
            )
    return char_ids

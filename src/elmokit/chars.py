"""Tokens to ELMo character ids: the byte scheme of FORMATS.md, and dictionary schemes.

The byte scheme (bilm-tf, AllenNLP, every published English model): every token becomes 50 ids:
begin-of-word, up to 48 UTF-8 bytes (each byte b as b + 1), end-of-word, then in-token padding.
Id 0 is reserved for batch padding (a slot with no token), so a slot holds a real token iff any
of its ids is > 0. Training files number characters from 0 (these ids minus 1); elmokit uses
the inference ids everywhere and only the weight file differs (its char embedding has no row
for id 0).

`DictionaryCharacters` is ELMoForManyLangs' scheme (see io/efml.py): characters are code points
looked up in the model's own char dictionary, optionally followed by a word id. A model holds
its scheme (`BiLM.characters`) and `BiLM.batch_to_ids` uses it; the module-level
`batch_to_ids` is the byte scheme's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class CharacterScheme:
    """How a model turns one token into its `width` ids (id 0 = batch padding, never a token)."""

    kind = ""
    width = MAX_CHARS_PER_TOKEN
    n_ids = N_CHARACTERS  # character ids are 0..n_ids-1
    bos_ids: tuple[int, ...] = BOS_CHAR_IDS
    eos_ids: tuple[int, ...] = EOS_CHAR_IDS
    filler_ids: tuple[int, ...] = (PADDING_CHAR,) * MAX_CHARS_PER_TOKEN  # a cheap spare row

    def token_ids(self, token: str) -> tuple[int, ...]:
        raise NotImplementedError

    def batch_to_ids(self, batch: Sequence[Sequence[str]]) -> torch.Tensor:
        """LongTensor [batch, max_len, width]; rows shorter than the longest padded with 0."""
        sentences = check_token_batch(batch)
        max_length = max((len(sentence) for sentence in sentences), default=0)
        ids = torch.zeros((len(sentences), max_length, self.width), dtype=torch.long)
        for row, sentence in enumerate(sentences):
            if sentence:
                ids[row, : len(sentence)] = torch.tensor(
                    [self.token_ids(token) for token in sentence], dtype=torch.long
                )
        return ids


class ByteCharacters(CharacterScheme):
    """The 50-id UTF-8 byte scheme above."""

    kind = "bytes"

    def token_ids(self, token: str) -> tuple[int, ...]:
        return token_to_char_ids(token)


BYTE_CHARACTERS = ByteCharacters()

# ELMoForManyLangs' special entries, looked up by name in its dictionaries.
EFML_CHAR_SPECIALS = ("<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>")
EFML_WORD_SPECIALS = ("<oov>", "<pad>")


class DictionaryCharacters(CharacterScheme):
    """ELMoForManyLangs' scheme: code points through the model's char dictionary.

    ids per token: `max_characters` char ids, then the word id if the model has a word
    embedding. Every id is the dictionary's id + 1 (0 stays batch padding). Reproduces EFML's
    `create_one_batch`: a token longer than max_characters - 2 code points is cut (for the
    word lookup too); the row starts with `<eow>` and the token's end is marked `<bow>` (EFML
    swaps the two, in training and inference alike); a literal `<bos>`/`<eos>` token is the
    sentence boundary; unknown characters and words are `<oov>`.
    """

    kind = "dictionary"

    def __init__(
        self,
        chars: Mapping[str, int],
        words: Mapping[str, int] | None,
        max_characters: int,
    ) -> None:
        missing = [name for name in EFML_CHAR_SPECIALS if name not in chars]
        if words is not None:
            missing += [f"word {name}" for name in EFML_WORD_SPECIALS if name not in words]
        if missing:
            raise ValueError(f"the character dictionary lacks the entries {missing}")
        if max_characters < 3:
            raise ValueError(f"max_characters must be >= 3, got {max_characters}")
        self.chars = dict(chars)
        self.words = dict(words) if words is not None else None
        self.max_characters = max_characters
        self.width = max_characters + (1 if words is not None else 0)
        self.n_ids = max(self.chars.values()) + 2
        self.n_word_ids = max(self.words.values()) + 2 if self.words is not None else 0
        self._special = {name: self.chars[name] + 1 for name in EFML_CHAR_SPECIALS}
        self.bos_ids = self._compute("<bos>")
        self.eos_ids = self._compute("<eos>")
        filler = [self._special["<pad>"]] * max_characters
        if self.words is not None:
            filler.append(self.words["<pad>"] + 1)
        self.filler_ids = tuple(filler)
        self.token_ids = lru_cache(maxsize=200_000)(self._compute)  # type: ignore[method-assign]

    def to_json(self) -> dict[str, object]:
        """The dictionaries as stored beside a native model (io/native.py)."""
        return {"chars": self.chars, "words": self.words, "max_characters": self.max_characters}

    @classmethod
    def from_json(cls, data: object) -> DictionaryCharacters:
        if not isinstance(data, dict) or not isinstance(data.get("chars"), dict):
            raise ValueError("expected an object with 'chars', 'words' and 'max_characters'")
        words, max_characters = data.get("words"), data.get("max_characters")
        if words is not None and not isinstance(words, dict):
            raise ValueError("'words' must be an object or null")
        if not isinstance(max_characters, int):
            raise ValueError("'max_characters' must be an integer")
        for table in (data["chars"], words or {}):
            if not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in table.values()
            ):
                raise ValueError("dictionary ids must be non-negative integers")
        return cls(data["chars"], words, max_characters)

    def _compute(self, token: str) -> tuple[int, ...]:
        if not isinstance(token, str):
            raise TypeError(f"a token must be a str, got {type(token).__name__}: {token!r}")
        if len(token) + 2 > self.max_characters:
            token = token[: self.max_characters - 2]
        special = self._special
        row = [special["<pad>"]] * self.max_characters
        row[0] = special["<eow>"]
        if token in ("<bos>", "<eos>"):
            row[1], row[2] = special[token], special["<bow>"]
        else:
            for position, char in enumerate(token, start=1):
                row[position] = self.chars[char] + 1 if char in self.chars else special["<oov>"]
            row[len(token) + 1] = special["<bow>"]
        if self.words is not None:
            row.append(self.words.get(token, self.words["<oov>"]) + 1)
        return tuple(row)

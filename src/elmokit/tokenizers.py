"""text -> tokens: the tokenisers every part of elmokit uses (Embedder, `elmokit embed`,
training corpora, `elmokit vocab` / `evaluate`).

- "whitespace": split on whitespace, for text that is already tokenised (one sentence a line,
  as the 1B Word Benchmark and PTB are distributed);
- "moses": the sacremoses tokeniser for raw text, in the language `lang` (default English),
  with escape=False: the biLM reads plain text, not HTML-escaped "&amp;";
- "jieba": Chinese word segmentation for raw Chinese (or mixed) text, the segmentation the
  Chinese ELMoForManyLangs models were trained on (optional extra `elmokit[zh]`); `lang` is
  not used. Whitespace is a separator, never a token.

A new tokeniser is one more entry in `_BUILDERS`; every command and config validates against
TOKENIZERS, so it becomes available everywhere at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, cast

from elmokit.extras import require

Tokenize = Literal["whitespace", "moses", "jieba"]
Tokenizer = Callable[[str], list[str]]


def _whitespace(lang: str) -> Tokenizer:
    return str.split


def _moses(lang: str) -> Tokenizer:
    # Imported here: sacremoses compiles many regexes at import, which whitespace users
    # should not pay for.
    from sacremoses import MosesTokenizer

    moses = MosesTokenizer(lang=lang)

    def tokenize(text: str) -> list[str]:
        return list(moses.tokenize(text, escape=False))

    return tokenize


def _jieba(lang: str) -> Tokenizer:
    jieba = require("jieba", "zh", "tokenize='jieba'")
    # Its own instance (the global one is shared with the user's code); its dictionary loads on
    # the first call (about a second) and it would log that at INFO on stderr.
    jieba.setLogLevel(logging.WARNING)
    segmenter = jieba.Tokenizer()

    def tokenize(text: str) -> list[str]:
        return [word for word in segmenter.lcut(text) if word.strip()]

    return tokenize


_BUILDERS: dict[str, Callable[[str], Tokenizer]] = {
    "whitespace": _whitespace,
    "moses": _moses,
    "jieba": _jieba,
}
TOKENIZERS: tuple[str, ...] = tuple(_BUILDERS)


def check_tokenizer(name: str) -> Tokenize:
    """`name` if it is a known tokeniser, else a ValueError naming the choices."""
    if name not in _BUILDERS:
        raise ValueError(f"tokenize must be one of {', '.join(TOKENIZERS)}, got {name!r}")
    return cast(Tokenize, name)


def make_tokenizer(name: str | None = "whitespace", lang: str = "en") -> Tokenizer:
    """A function from a line of text to its tokens; None means "whitespace"."""
    return _BUILDERS[check_tokenizer(name or "whitespace")](lang)

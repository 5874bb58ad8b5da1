"""text -> tokens: the tokenisers every part of elmokit uses (Embedder, `elmokit embed`,
training corpora, `elmokit vocab` / `evaluate`).

- "whitespace": split on whitespace, for text that is already tokenised (one sentence a line,
  as the 1B Word Benchmark and PTB are distributed);
- "moses": the sacremoses tokeniser for raw text, in the language `lang` (default English),
  with escape=False: the biLM reads plain text, not HTML-escaped "&amp;".

A new tokeniser is one more entry in `_BUILDERS`; every command and config validates against
TOKENIZERS, so it becomes available everywhere at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast

Tokenize = Literal["whitespace", "moses"]
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


_BUILDERS: dict[str, Callable[[str], Tokenizer]] = {
    "whitespace": _whitespace,
    "moses": _moses,
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

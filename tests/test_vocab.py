"""Vocabulary building, file round trips and the errors a bad vocabulary file gives."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from elmokit.chars import BOS_TOKEN, EOS_TOKEN, UNK_TOKEN
from elmokit.training.data import iter_sentences
from elmokit.vocab import Vocabulary, build_vocabulary

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PTB_VALID = DATA_DIR / "ptb_mikolov" / "ptb.valid.txt"
SPECIALS = [BOS_TOKEN, EOS_TOKEN, UNK_TOKEN]

needs_ptb = pytest.mark.skipif(
    not PTB_VALID.is_file(), reason=f"shared corpus not found: {PTB_VALID}"
)


@pytest.fixture(scope="module")
def ptb_sentences() -> list[list[str]]:
    if not PTB_VALID.is_file():
        pytest.skip(f"shared corpus not found: {PTB_VALID}")
    return list(iter_sentences([str(PTB_VALID)]))


@needs_ptb
def test_specials_first_then_frequency_with_alphabetical_ties(
    ptb_sentences: list[list[str]],
) -> None:
    vocab = build_vocabulary(ptb_sentences)
    counter = Counter(token for sentence in ptb_sentences for token in sentence)
    assert list(vocab.tokens[:3]) == SPECIALS
    assert [vocab.token_to_id(token) for token in SPECIALS] == [0, 1, 2]
    words = list(vocab.tokens[3:])
    assert set(words) == set(counter)
    assert words == sorted(counter, key=lambda token: (-counter[token], token))
    assert vocab.counts is not None
    assert vocab.counts[3:] == tuple(counter[token] for token in words)
    assert vocab.counts[:3] == (len(ptb_sentences), len(ptb_sentences), 0)
    # PTB has ties at every low count, so alphabetical tie-breaking is actually exercised.
    ties = [token for token in words if counter[token] == 1]
    assert len(ties) > 100 and ties == sorted(ties)
    # Deterministic: a second build is identical.
    assert build_vocabulary(iter(ptb_sentences)).tokens == vocab.tokens


@needs_ptb
def test_min_count_and_max_size(ptb_sentences: list[list[str]]) -> None:
    full = build_vocabulary(ptb_sentences)
    counter = Counter(token for sentence in ptb_sentences for token in sentence)
    frequent = build_vocabulary(ptb_sentences, min_count=5)
    assert set(frequent.tokens[3:]) == {token for token, count in counter.items() if count >= 5}
    assert frequent.tokens[3:] == tuple(t for t in full.tokens[3:] if counter[t] >= 5)
    assert frequent.counts is not None
    assert frequent.counts[2] == sum(count for count in counter.values() if count < 5)

    small = build_vocabulary(ptb_sentences, max_size=100)
    assert len(small) == 100
    assert small.tokens == full.tokens[:100]
    both = build_vocabulary(ptb_sentences, min_count=5, max_size=10**6)
    assert both.tokens == frequent.tokens
    assert len(build_vocabulary(ptb_sentences, max_size=3)) == 3

    with pytest.raises(ValueError, match="max_size"):
        build_vocabulary(ptb_sentences, max_size=2)
    with pytest.raises(ValueError, match="min_count"):
        build_vocabulary(ptb_sentences, min_count=0)


def test_lookup_encode_and_literal_specials_in_corpus() -> None:
    sentences = [["b", "a", "<S>", "b"], ["c", "</S>", "a", "b", UNK_TOKEN]]
    vocab = build_vocabulary(iter(sentences))
    assert vocab.tokens == (*SPECIALS, "b", "a", "c")
    assert vocab.token_to_id("b") == 3
    assert vocab.token_to_id("never seen") == vocab.unk_id == 2
    assert vocab.encode(["<S>", "a", "zzz", "</S>"]) == [0, 4, 2, 1]
    assert vocab.id_to_token(5) == "c"
    assert len(vocab) == 6 and "a" in vocab and "zzz" not in vocab
    with pytest.raises(IndexError):
        vocab.id_to_token(6)
    with pytest.raises(IndexError):
        vocab.id_to_token(-1)


@needs_ptb
def test_save_load_round_trip(tmp_path: Path, ptb_sentences: list[list[str]]) -> None:
    vocab = build_vocabulary(ptb_sentences, min_count=2)
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[:4] == [*SPECIALS, "the"]
    assert text.endswith("\n")
    loaded = Vocabulary.from_file(path)
    assert loaded == vocab and loaded.tokens == vocab.tokens
    assert loaded.counts is None
    assert os.listdir(tmp_path) == ["vocab.txt"], "the temporary file must not be left behind"
    # Saving over an existing file replaces it.
    smaller = build_vocabulary(ptb_sentences, max_size=10)
    smaller.save(str(path))
    assert Vocabulary.from_file(str(path)) == smaller


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vocab.txt"
    Vocabulary([*SPECIALS, "old"]).save(path)

    def failing_replace(*args: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        Vocabulary([*SPECIALS, "new", "tokens"]).save(path)
    assert path.read_text(encoding="utf-8") == "<S>\n</S>\n<UNK>\nold\n"
    assert os.listdir(tmp_path) == ["vocab.txt"]


def test_from_file_tolerates_missing_final_newline_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes(b"<S>\r\n</S>\r\n<UNK>\r\nthe\r\ncaf\xc3\xa9")
    assert Vocabulary.from_file(path).tokens == (*SPECIALS, "the", "caf\u00e9")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("</S>\n<UNK>\nthe\n", r"lines 1-3 must be .*<S> missing"),
        ("</S>\n<S>\n<UNK>\nthe\n", r"<S> on line 2"),
        ("", r"<S> missing, </S> missing, <UNK> missing"),
        ("<S>\n</S>\n<UNK>\nthe\na\nthe\n", r"line 6: duplicate token 'the' \(first on line 4\)"),
        ("<S>\n</S>\n<UNK>\nthe\n\na\n", r"line 5 is blank"),
        ("<S>\n</S>\n<UNK>\nthe\n   \n", r"line 5 is blank"),
    ],
)
def test_bad_vocabulary_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad_vocab.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        Vocabulary.from_file(path)
    assert str(path) in str(error.value)


def test_missing_file_and_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Vocabulary.from_file(tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["the", *SPECIALS])
    with pytest.raises(ValueError, match="duplicate token 'a' at ids 3 and 4"):
        Vocabulary([*SPECIALS, "a", "a"])
    with pytest.raises(ValueError, match="surrounding whitespace"):
        Vocabulary([*SPECIALS, "two words "])
    with pytest.raises(ValueError, match="2 counts given for 4 tokens"):
        Vocabulary([*SPECIALS, "a"], counts=[1, 2])


@needs_ptb
def test_cli_vocab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from elmokit.cli import main

    output = tmp_path / "vocab.txt"
    argv = ["vocab", str(PTB_VALID), "--output", str(output), "--min-count", "2"]
    assert main([*argv, "--max-size", "5000"]) == 0
    expected = build_vocabulary(iter_sentences([str(PTB_VALID)]), min_count=2, max_size=5000)
    assert Vocabulary.from_file(output) == expected
    assert f"wrote {len(expected)} entries to {output}" in capsys.readouterr().out

    # User errors are one line on stderr and exit code 2, not a traceback.
    assert main(["vocab", str(tmp_path / "nope*.txt"), "--output", str(output)]) == 2
    assert "no file matches the pattern" in capsys.readouterr().err
    assert main([*argv, "--max-size", "2"]) == 2
    assert "max_size must be >= 3" in capsys.readouterr().err

"""Corpus streaming (iter_sentences) and bilm-tf style batching (StreamBatcher) on real text."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import pytest
import torch

from elmokit.chars import BOS_TOKEN, EOS_TOKEN, token_to_char_ids
from elmokit.training.data import (
    DirectionBatch,
    LMBatch,
    StreamBatcher,
    iter_sentences,
)
from elmokit.vocab import Vocabulary, build_vocabulary

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PTB_DIR = DATA_DIR / "ptb_mikolov"
PTB_VALID = PTB_DIR / "ptb.valid.txt"
PTB_TRAIN_GZ = PTB_DIR / "ptb.train.txt.gz"
GUTENBERG = DATA_DIR / "gutenberg_nltk"

pytestmark = pytest.mark.skipif(
    not (PTB_VALID.is_file() and PTB_TRAIN_GZ.is_file() and GUTENBERG.is_dir()),
    reason=f"shared corpora not found under {DATA_DIR} (ptb_mikolov, gutenberg_nltk)",
)

N_SMALL = 60  # sentences in the small corpus the batching tests loop over (~30 batches)


def _plain_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line for line in handle if line.strip()]


@pytest.fixture(scope="module")
def ptb_valid() -> list[list[str]]:
    return [line.split() for line in _plain_lines(PTB_VALID)]


@pytest.fixture(scope="module")
def small_corpus() -> Callable[[], Iterator[list[str]]]:
    def factory() -> Iterator[list[str]]:
        return islice(iter_sentences([str(PTB_VALID)]), N_SMALL)

    return factory


@pytest.fixture(scope="module")
def vocab(ptb_valid: list[list[str]]) -> Vocabulary:
    # min_count=3 leaves real out-of-vocabulary words, so char ids and <UNK> ids can differ.
    return build_vocabulary(ptb_valid, min_count=3)


# --------------------------------------------------------------------------- iter_sentences


def test_plain_file_whitespace_tokens(ptb_valid: list[list[str]]) -> None:
    sentences = list(iter_sentences([str(PTB_VALID)]))
    assert len(sentences) == 3370  # the published sentence count of the PTB validation split
    assert sentences == ptb_valid
    # A single path string is taken as one path, not as a sequence of one-character paths.
    assert list(islice(iter_sentences(str(PTB_VALID)), 3)) == ptb_valid[:3]


def test_gzip_file_is_streamed_as_text() -> None:
    expected = [line.split() for line in _plain_lines(PTB_TRAIN_GZ)]
    sentences = iter_sentences([str(PTB_TRAIN_GZ)])
    assert isinstance(sentences, Iterator)
    assert list(sentences) == expected
    assert len(expected) == 42068


def test_glob_expands_sorted_and_mixes_gzip() -> None:
    pattern = str(GUTENBERG / "austen-*.txt")
    files = sorted(GUTENBERG.glob("austen-*.txt"))
    assert [f.name for f in files] == [
        "austen-emma.txt",
        "austen-persuasion.txt",
        "austen-sense.txt",
    ]
    expected = [line.split() for path in files for line in _plain_lines(path)]
    assert list(iter_sentences([pattern])) == expected

    # bible-kjv.txt.gz and blake-poems.txt: a gzip file and a plain one from one pattern.
    mixed = list(iter_sentences([str(GUTENBERG / "b*.txt*")]))
    bible = _plain_lines(GUTENBERG / "bible-kjv.txt.gz")
    blake = _plain_lines(GUTENBERG / "blake-poems.txt")
    assert len(mixed) == len(bible) + len(blake)
    assert mixed[0] == bible[0].split() and mixed[-1] == blake[-1].split()


def test_missing_files_and_bad_arguments(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.txt")
    with pytest.raises(FileNotFoundError, match="no file matches the pattern") as error:
        iter_sentences([pattern])
    assert pattern in str(error.value)
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        iter_sentences([str(tmp_path / "absent.txt")])
    with pytest.raises(ValueError, match="tokenize"):
        iter_sentences([str(PTB_VALID)], tokenize="spacy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        iter_sentences([str(PTB_VALID)], rank=2, world_size=2)


def test_non_utf8_file_error_names_the_file() -> None:
    latin1 = GUTENBERG / "shakespeare-caesar.txt"  # ISO-8859-1, see the data README
    with pytest.raises(ValueError, match="not valid UTF-8") as error:
        list(iter_sentences([str(latin1)]))
    assert str(latin1) in str(error.value)
    sentences = list(iter_sentences([str(latin1)], errors="replace"))
    assert any("\ufffd" in token for sentence in sentences for token in sentence)


def test_moses_tokenisation_matches_sacremoses() -> None:
    from sacremoses import MosesTokenizer

    path = GUTENBERG / "austen-emma.txt"
    lines = _plain_lines(path)[:25]
    moses = MosesTokenizer(lang="en")
    expected = [moses.tokenize(line, escape=False) for line in lines]
    # Lazily tokenised: taking 25 sentences tokenises 25 lines, not the whole book.
    assert list(islice(iter_sentences([str(path)], tokenize="moses"), 25)) == expected
    assert any(sentence != line.split() for sentence, line in zip(expected, lines, strict=True))


def test_two_ranks_cover_every_line_once(ptb_valid: list[list[str]]) -> None:
    shards = [list(iter_sentences([str(PTB_VALID)], rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) + len(shards[1]) == len(ptb_valid)
    assert shards[0] == ptb_valid[0::2] and shards[1] == ptb_valid[1::2]


def test_sharding_counts_lines_across_files() -> None:
    paths = [str(GUTENBERG / "blake-poems.txt"), str(GUTENBERG / "shakespeare-macbeth.txt")]
    everything = list(iter_sentences(paths))
    shards = [list(iter_sentences(paths, rank=r, world_size=3)) for r in range(3)]
    # A per-file counter would restart at each file; the global one keeps a strict stride.
    for rank, shard in enumerate(shards):
        assert shard == everything[rank::3]


# --------------------------------------------------------------------------- StreamBatcher


def _wrap(sentence: list[str]) -> list[str]:
    return [BOS_TOKEN, *sentence, EOS_TOKEN]


def _expected_pairs(sentences: list[list[str]]) -> list[tuple[str, str]]:
    """bilm-tf pairs: within each sentence, each token predicts the next one."""
    pairs: list[tuple[str, str]] = []
    for sentence in sentences:
        wrapped = _wrap(sentence)
        pairs.extend(zip(wrapped[:-1], wrapped[1:], strict=True))
    return pairs


def _row_ids(batches: list[LMBatch], direction: str, row: int) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for batch in batches:
        part: DirectionBatch = getattr(batch, direction)
        keep = part.mask[row]
        inputs, targets = part.token_ids[row][keep].tolist(), part.target_ids[row][keep].tolist()
        pairs.extend(zip(inputs, targets, strict=True))
    return pairs


def _split_sentences(pairs: list[tuple[int, int]], vocab: Vocabulary) -> list[tuple[int, ...]]:
    """Cut a row's (input, target) stream back into wrapped sentences of vocab ids."""
    sentences: list[tuple[int, ...]] = []
    current: list[int] = []
    for index, (token, target) in enumerate(pairs):
        if not current:
            assert token == vocab.bos_id, f"a sentence must start with <S> (pair {index})"
            current = [token]
        # The targets are the inputs shifted by one within each sentence of the row's stream.
        assert current[-1] == token
        current.append(target)
        if target == vocab.eos_id:
            sentences.append(tuple(current))
            current = []
    assert not current, "the stream ended inside a sentence"
    return sentences


def _assert_same(a: list[LMBatch], b: list[LMBatch]) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b, strict=True):
        for name in ("forward", "backward"):
            x, y = getattr(first, name), getattr(second, name)
            for field in ("token_ids", "char_ids", "target_ids", "mask"):
                assert torch.equal(getattr(x, field), getattr(y, field)), (name, field)


def test_shapes_dtypes_and_char_ids(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    batcher = StreamBatcher(small_corpus, vocab, batch_size=4, unroll_steps=7, seed=3)
    batch = next(batcher)
    for part in (batch.forward, batch.backward):
        assert part.token_ids.shape == part.target_ids.shape == part.mask.shape == (4, 7)
        assert part.char_ids.shape == (4, 7, 50)
        assert part.token_ids.dtype == part.char_ids.dtype == part.target_ids.dtype == torch.long
        assert part.mask.dtype == torch.bool and bool(part.mask.all())
        # Every in-vocabulary slot's char ids are those of its token.
        for row in range(4):
            for step in range(7):
                token_id = int(part.token_ids[row, step])
                if token_id != vocab.unk_id:
                    expected = token_to_char_ids(vocab.id_to_token(token_id))
                    assert tuple(part.char_ids[row, step].tolist()) == expected
    # Rows start at <S>: the first input of every row in the first batch.
    assert batch.forward.token_ids[:, 0].tolist() == [vocab.bos_id] * 4
    _assert_same([batch.to("cpu")], [batch])


def test_single_row_stream_is_the_packed_corpus(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    sentences = list(small_corpus())
    batcher = StreamBatcher(small_corpus, vocab, batch_size=1, unroll_steps=9)
    batches = list(batcher)
    forward = _expected_pairs(sentences)
    backward = _expected_pairs([sentence[::-1] for sentence in sentences])
    for name, expected in (("forward", forward), ("backward", backward)):
        ids = [(vocab.token_to_id(a), vocab.token_to_id(b)) for a, b in expected]
        assert _row_ids(batches, name, 0) == ids
        # Char ids come from the real token, also for words outside the vocabulary.
        chars = torch.cat([getattr(b, name).char_ids[0][getattr(b, name).mask[0]] for b in batches])
        assert chars.tolist() == [list(token_to_char_ids(a)) for a, _ in expected]
    assert any(vocab.token_to_id(a) == vocab.unk_id for a, _ in forward), "want OOV words here"
    assert batcher.tokens_seen == len(forward) == sum(len(s) + 1 for s in sentences)


def test_rows_pack_every_sentence_once_and_mask_only_at_the_end(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    sentences = list(small_corpus())
    batcher = StreamBatcher(small_corpus, vocab, batch_size=5, unroll_steps=8)
    batches = list(batcher)
    for name, order in (("forward", 1), ("backward", -1)):
        expected = Counter(tuple(vocab.encode(_wrap(s[::order]))) for s in sentences)
        found: Counter[tuple[int, ...]] = Counter()
        for row in range(5):
            found.update(_split_sentences(_row_ids(batches, name, row), vocab))
        assert found == expected, name
        masks = torch.stack([getattr(b, name).mask for b in batches])  # [n, B, T]
        streams = masks.permute(1, 0, 2).reshape(5, -1)  # each row's whole stream
        for row_mask in streams:
            real = int(row_mask.sum())
            assert bool(row_mask[:real].all()) and not bool(row_mask[real:].any())
        # Padding starts once the data ran dry and only rows still holding a sentence tail
        # go on, so it covers a few final batches (the longest sentence bounds how many).
        padded = [index for index, mask in enumerate(masks) if not bool(mask.all())]
        assert padded == list(range(padded[0], len(batches)))
        assert len(padded) <= max(len(s) + 1 for s in sentences) // 8 + 2
        assert not bool(masks[-1].all()), "the last batch is padded, not dropped"
        last = getattr(batches[-1], name)
        padded = ~last.mask
        assert bool((last.char_ids[padded] == 0).all())
        assert bool((last.token_ids[padded] == 0).all() and (last.target_ids[padded] == 0).all())
    assert batcher.tokens_seen == sum(len(s) + 1 for s in sentences)
    assert next(batcher, None) is None  # stays exhausted


def test_shuffling_is_seeded_and_directions_are_independent(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    sentences = list(small_corpus())

    def run(seed: int) -> list[LMBatch]:
        return list(StreamBatcher(small_corpus, vocab, 1, 12, seed=seed, shuffle_buffer=16))

    first, again, other = run(7), run(7), run(8)
    _assert_same(first, again)
    fwd = _split_sentences(_row_ids(first, "forward", 0), vocab)
    bwd = _split_sentences(_row_ids(first, "backward", 0), vocab)
    in_order = [tuple(vocab.encode(_wrap(s))) for s in sentences]
    assert Counter(fwd) == Counter(in_order) and fwd != in_order
    # The backward stream is not the forward order reversed sentence by sentence.
    assert Counter(s[:1] + s[-2:0:-1] + s[-1:] for s in bwd) == Counter(in_order)
    assert [s[:1] + s[-2:0:-1] + s[-1:] for s in bwd] != fwd
    assert _split_sentences(_row_ids(other, "forward", 0), vocab) != fwd


def test_epochs_and_max_tokens(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    sentences = list(small_corpus())
    two = list(StreamBatcher(small_corpus, vocab, 1, 10, epochs=2))
    expected = [(vocab.token_to_id(a), vocab.token_to_id(b)) for a, b in _expected_pairs(sentences)]
    assert _row_ids(two, "forward", 0) == expected * 2  # epochs run on without a break

    endless = StreamBatcher(small_corpus, vocab, 3, 10, shuffle_buffer=8, epochs=None)
    one_epoch = len(expected) // 30 + 1
    batches = list(islice(endless, 3 * one_epoch))
    assert endless.epoch >= 2 and all(bool(b.forward.mask.all()) for b in batches)

    short = list(StreamBatcher(small_corpus, vocab, 1, 10, max_tokens_per_sentence=4))
    truncated = [
        (vocab.token_to_id(a), vocab.token_to_id(b))
        for a, b in _expected_pairs([s[:4] for s in sentences])
    ]
    assert _row_ids(short, "forward", 0) == truncated


@pytest.mark.parametrize(
    ("shuffle_buffer", "epochs", "stops"),
    [(0, 1, [0, 1, 13]), (16, 3, [5, 31, 62, 80]), (16, None, [47])],
)
def test_resume_gives_exactly_the_same_batches(
    small_corpus: Callable[[], Iterator[list[str]]],
    vocab: Vocabulary,
    shuffle_buffer: int,
    epochs: int | None,
    stops: list[int],
) -> None:
    def make() -> StreamBatcher:
        return StreamBatcher(
            small_corpus, vocab, 4, 10, seed=11, shuffle_buffer=shuffle_buffer, epochs=epochs
        )

    limit = 120  # past two epoch boundaries of this corpus (~30 batches per epoch)
    reference = make()
    states = {}
    batches = []
    for index, batch in enumerate(islice(reference, limit)):
        if index in stops:
            states[index] = json.loads(json.dumps(reference.state_dict()))
        batches.append(batch)
    states[len(batches)] = json.loads(json.dumps(reference.state_dict()))  # after the last
    for stop, state in states.items():
        # `state` was taken after batch `stop` (0-based) was yielded... except the final one,
        # taken after all of them.
        done = stop + 1 if stop in stops else stop
        resumed = make()
        resumed.load_state_dict(state)
        assert resumed.tokens_seen == state["tokens_seen"]
        _assert_same(list(islice(resumed, limit - done)), batches[done:])
        if epochs is not None:
            assert next(resumed, None) is None


def test_contiguous_rows_read_balanced_slices_forward_and_back_to_front(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    sentences = list(small_corpus())
    batcher = StreamBatcher(small_corpus, vocab, 4, 9, row_layout="contiguous")
    batches = list(batcher)
    slices: list[list[list[str]]] = []
    start = 0
    for row in range(4):
        found = _split_sentences(_row_ids(batches, "forward", row), vocab)
        # Row r holds the next stretch of the corpus, in order, sentence after sentence.
        stretch = sentences[start : start + len(found)]
        assert found == [tuple(vocab.encode(_wrap(s))) for s in stretch], row
        slices.append(stretch)
        start += len(found)
        # The backward row reads the same stretch from its last sentence to its first.
        backward = _split_sentences(_row_ids(batches, "backward", row), vocab)
        assert backward == [tuple(vocab.encode(_wrap(s[::-1]))) for s in stretch[::-1]], row
    assert start == len(sentences)
    # Token-balanced: no slice is off the even share by more than one sentence.
    share = sum(len(s) + 1 for s in sentences) / 4
    longest = max(len(s) + 1 for s in sentences)
    assert all(abs(sum(len(s) + 1 for s in part) - share) <= longest for part in slices)
    assert batcher.tokens_seen == sum(len(s) + 1 for s in sentences)

    # Training (epochs=None): a row that ends its slice goes on with its slice again.
    endless = StreamBatcher(small_corpus, vocab, 4, 9, row_layout="contiguous", epochs=None)
    again = list(islice(endless, len(batches) * 3))
    first_row = _row_ids(again, "forward", 0)
    pairs = [(vocab.token_to_id(a), vocab.token_to_id(b)) for a, b in _expected_pairs(slices[0])]
    assert first_row[: 2 * len(pairs)] == pairs * 2
    assert all(bool(b.forward.mask.all()) for b in again) and endless.epoch >= 2


@pytest.mark.parametrize("epochs", [1, None])
def test_contiguous_resume_gives_exactly_the_same_batches(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary, epochs: int | None
) -> None:
    def make() -> StreamBatcher:
        return StreamBatcher(small_corpus, vocab, 3, 10, row_layout="contiguous", epochs=epochs)

    reference = make()
    batches = list(islice(reference, 70))
    for stop in (0, 9, 33):
        partial = make()
        list(islice(partial, stop + 1))
        state = json.loads(json.dumps(partial.state_dict()))
        resumed = make()
        resumed.load_state_dict(state)
        _assert_same(list(islice(resumed, 70 - stop - 1)), batches[stop + 1 :])
    packed = StreamBatcher(small_corpus, vocab, 3, 10)
    with pytest.raises(ValueError, match="row_layout: saved 'contiguous', now 'packed'"):
        packed.load_state_dict(state)


def test_contiguous_layout_errors(
    small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary
) -> None:
    with pytest.raises(ValueError, match="set shuffle_buffer = 0"):
        StreamBatcher(small_corpus, vocab, 4, 9, shuffle_buffer=8, row_layout="contiguous")
    with pytest.raises(ValueError, match="row_layout must be one of"):
        StreamBatcher(small_corpus, vocab, 4, 9, row_layout="shuffled")  # type: ignore[arg-type]

    def three() -> Iterator[list[str]]:
        return islice(small_corpus(), 3)

    too_few = StreamBatcher(three, vocab, 4, 9, row_layout="contiguous", epochs=None)
    with pytest.raises(ValueError, match="needs at least batch_size = 4 sentences"):
        next(too_few)
    # Held-out text (one epoch) may be shorter: the spare rows are padding.
    held_out = list(StreamBatcher(three, vocab, 4, 9, row_layout="contiguous"))
    assert not bool(torch.stack([b.forward.mask[3] for b in held_out]).any())
    assert sum(b.forward.num_tokens for b in held_out) == sum(len(s) + 1 for s in three())


def test_resume_errors(small_corpus: Callable[[], Iterator[list[str]]], vocab: Vocabulary) -> None:
    batcher = StreamBatcher(small_corpus, vocab, 4, 10, seed=1)
    next(batcher)
    state = batcher.state_dict()
    other = StreamBatcher(small_corpus, vocab, 4, 12, seed=1)
    with pytest.raises(ValueError, match="unroll_steps: saved 10, now 12"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        batcher.load_state_dict({**state, "version": 99})

    # The data shrank since the state was taken: say so instead of yielding other batches.
    shorter = StreamBatcher(lambda: islice(small_corpus(), 3), vocab, 4, 10, seed=1)
    shorter.load_state_dict(state)
    with pytest.raises(ValueError, match="cannot resume"):
        next(shorter)


def test_factory_must_give_fresh_sentences(vocab: Vocabulary) -> None:
    once = iter(list(islice(iter_sentences([str(PTB_VALID)]), 5)))
    batcher = StreamBatcher(lambda: once, vocab, 2, 10, epochs=None)
    with pytest.raises(ValueError, match="fresh iterator"):
        list(islice(batcher, 100))
    with pytest.raises(TypeError, match="callable"):
        StreamBatcher(iter_sentences([str(PTB_VALID)]), vocab, 2, 10)  # type: ignore[arg-type]

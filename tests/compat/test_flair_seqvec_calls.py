"""The calls flair's ELMoEmbeddings and SeqVec / bio_embeddings' SeqVecEmbedder make on
allennlp's ElmoEmbedder, made on elmokit.compat.allennlp.ElmoEmbedder: outputs equal elmokit's
native path (Embedder for "reset", the biLM itself batch by batch for AllenNLP's "carry")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import elmokit
from elmokit.compat.allennlp import ElmoEmbedder
from elmokit.embedder import Embedder

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "The bank raised its rates .".split(),
    "We sat on the river bank all day".split(),
    "Rates rose".split(),
]


@pytest.fixture(scope="module")
def files(fixture_dir: Path) -> tuple[str, str]:
    return str(fixture_dir / "options.json"), str(fixture_dir / "lm_weights.hdf5")


def test_flair_elmo_embeddings_calls(files: tuple[str, str]) -> None:
    # flair: ElmoEmbedder(options_file=..., weight_file=..., cuda_device=-1 on CPU), then
    # embed_batch(words of each Sentence) and, per token, the three layers concatenated.
    ee = ElmoEmbedder(options_file=files[0], weight_file=files[1], cuda_device=-1)
    embeddings = ee.embed_batch([list(sentence) for sentence in SENTENCES])
    native = elmokit.load(files[0], weights=files[1], state_policy="carry")
    with torch.no_grad():
        expected = native(elmokit.batch_to_ids(SENTENCES)).layers
    for i, sentence in enumerate(SENTENCES):
        sentence_embeddings = embeddings[i]
        assert sentence_embeddings.shape == (3, len(sentence), 32)
        for token_idx in range(len(sentence)):
            word_embedding = torch.cat(
                [torch.FloatTensor(sentence_embeddings[layer, token_idx, :]) for layer in range(3)]
            )
            assert word_embedding.shape == (96,)
        np.testing.assert_allclose(sentence_embeddings, expected[i, :, : len(sentence)].numpy())
    # flair reads the embedding length from a one-token dummy sentence.
    assert len(ee.embed_batch([["hello"]])[0][:, 0].reshape(-1)) == 96


def test_seqvec_and_bio_embeddings_calls(files: tuple[str, str]) -> None:
    # SeqVec: ElmoEmbedder(options, weights, cuda_device=-1); embed_sentence(list(seq)) is
    # [3, L, D]; per-residue = sum over layers, per-protein = its mean over residues.
    # bio_embeddings: embed_sentence(list(sequence)) and embed_sentences(batch).
    sequences = ["MKTAYIAKQR", "SEQWENCE", "MAD"]
    seqvec = ElmoEmbedder(files[0], files[1], cuda_device=-1, state_policy="reset")
    native = Embedder(elmokit.load(files[0], weights=files[1]))
    for sequence in sequences:
        embedding = seqvec.embed_sentence(list(sequence))
        assert embedding.shape == (3, len(sequence), 32)
        residue = torch.tensor(embedding).sum(dim=0)
        protein = residue.mean(dim=0)
        assert residue.shape == (len(sequence), 32) and protein.shape == (32,)
        np.testing.assert_allclose(embedding, native.embed_sentence(list(sequence)), atol=1e-6)
    batched = list(seqvec.embed_sentences([list(s) for s in sequences], batch_size=2))
    one_by_one = [native.embed_sentence(list(s)) for s in sequences]
    for got, want in zip(batched, one_by_one, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_stateful_default_matches_the_biLM_run_batch_by_batch(files: tuple[str, str]) -> None:
    ee = ElmoEmbedder(files[0], files[1])  # AllenNLP's default: state carried between batches
    native = elmokit.load(files[0], weights=files[1], state_policy="carry")
    for batch in (SENTENCES[:2], SENTENCES[2:], SENTENCES[:2]):
        got = ee.embed_batch(batch)
        with torch.no_grad():
            want = native(elmokit.batch_to_ids(batch)).layers
        for i, sentence in enumerate(batch):
            np.testing.assert_allclose(got[i], want[i, :, : len(sentence)].numpy())
    # Carried state changes the vectors of a repeated batch; reset_states brings back the first.
    fresh = ElmoEmbedder(files[0], files[1])
    first = fresh.embed_batch(SENTENCES[:2])[0]
    again = fresh.embed_batch(SENTENCES[:2])[0]
    assert np.abs(first - again).max() > 1e-4
    fresh.elmo_bilm._elmo_lstm.reset_states()
    np.testing.assert_allclose(fresh.embed_batch(SENTENCES[:2])[0], first)

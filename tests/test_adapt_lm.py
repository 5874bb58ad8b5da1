"""--adapt-lm: the biLM fine-tuned on a task's own text (LM loss, early-stopped on its dev
text), then reported beside the general model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import elmokit
from elmokit.tasks.adapt import SUMMARY_NAME, AdaptSettings, adapt_to_text, task_texts
from elmokit.tasks.report import markdown_report
from elmokit.tasks.suite import TaskResult, prepare


@pytest.fixture(scope="module")
def ner_text(data_dir: Path) -> tuple[list[list[str]], list[list[str]]]:
    train, dev = task_texts(prepare("ner", data_dir, quick=True))
    return train[:120], dev[:40]


@pytest.mark.slow
def test_adaptation_lowers_dev_perplexity_and_is_kept(
    tmp_path: Path, ner_text: tuple[list[list[str]], list[list[str]]]
) -> None:
    train, dev = ner_text
    out = tmp_path / "adapt"
    result = adapt_to_text("elmokit-small-en", train, dev, out, AdaptSettings(max_epochs=2))
    assert result.dev_ppl_by_epoch and result.best_epoch >= 1
    assert result.dev_ppl_after < result.dev_ppl_before  # in-domain text: perplexity falls
    adapted, general = elmokit.load(result.model_dir), elmokit.load("elmokit-small-en")
    with torch.no_grad():
        ids = elmokit.batch_to_ids(dev[:4])
        assert float((adapted(ids).layers - general(ids).layers).abs().max()) > 1e-3
    saved = json.loads((out / SUMMARY_NAME).read_text())
    assert saved["best_epoch"] == result.best_epoch
    # A finished adaptation is reused, not trained again.
    again = adapt_to_text("elmokit-small-en", train, dev, out)
    assert again.dev_ppl_by_epoch == result.dev_ppl_by_epoch


def test_adaptation_needs_a_softmax(
    tmp_path: Path, fixture_dir: Path, ner_text: tuple[list[list[str]], list[list[str]]]
) -> None:
    with pytest.raises(ValueError, match="softmax"):
        adapt_to_text(str(fixture_dir / "options.json"), *ner_text, tmp_path / "a")


def test_task_texts_use_train_and_dev_only(data_dir: Path) -> None:
    prepared = prepare("sick", data_dir, quick=True)
    train, dev = task_texts(prepared)
    train_ids, dev_ids, test_ids = prepared.split(0)
    assert prepared.pairs is not None
    test_sides = {tuple(prepared.sentences[s]) for i in test_ids for s in prepared.pairs[i][:2]}
    train_sides = {tuple(prepared.sentences[s]) for i in train_ids for s in prepared.pairs[i][:2]}
    assert {tuple(s) for s in train} == train_sides and len(dev) > 0
    # Sentences that occur only in test never reach the language model.
    only_test = test_sides - train_sides - {tuple(s) for s in dev}
    assert only_test and not only_test & {tuple(s) for s in train + dev}


def test_report_shows_the_adapted_column_and_its_verdict() -> None:
    result = TaskResult("ner", "NER", "F1", "dev", 100, 50)
    result.scores = {
        "layer0": [80.0, 80.5, 79.5],
        "layer0+elmo": [82.0, 82.2, 81.8],
        "layer0+elmo (adapted LM)": [84.0, 84.1, 83.9],
    }
    text = markdown_report([result], {"adapt-lm ner": "dev perplexity 200.0 -> 120.0"})
    assert "| layer0+elmo (adapted LM) |" in text
    assert "ner with the adapted LM: yes, by +4.00" in text
    assert "adapt-lm ner: dev perplexity 200.0 -> 120.0" in text


@pytest.mark.slow
def test_task_report_with_adapt_lm(tmp_path: Path, data_dir: Path) -> None:
    from elmokit.cli import main

    out = tmp_path / "report"
    code = main(["task", "report", "--model", "elmokit-small-en", "--out", str(out), "--quick",
                 "--tasks", "sst5", "--adapt-lm", "--adapt-precision", "bf16",
                 "--representations", "layer0,elmo,layer0+elmo", "--data-dir", str(data_dir),
                 "--word2vec-corpus", "none"])  # fmt: skip
    assert code == 0
    report = (out / "report.md").read_text()
    assert "- adapt-lm sst5: dev perplexity" in report
    assert "layer0+elmo (adapted LM)" in report and "sst5 with the adapted LM:" in report
    assert (out / "adapt-sst5-quick" / SUMMARY_NAME).exists()
    run_config = json.loads((out / "adapt-sst5-quick" / "run" / "train_config.json").read_text())
    assert run_config["optim"]["precision"] == "bf16"

"""Domain adaptation as the paper does it (Peters et al. 2018, section 5.1 and Table 7): before
features are extracted, fine-tune the biLM on the task's own unlabelled training text with the
language-model loss, a few passes, keeping the pass with the best perplexity on the task's dev
text. `elmokit task report --adapt-lm` reports the result beside the general model's.

The model must have its softmax and vocabulary (a native model directory such as the bundled
one): fine-tuning continues its training objective, with its vocabulary, so the first dev
perplexity is the general model's own. Training is `elmokit train` (training/trainer.py) on a
config made here; each extra pass resumes the run, so a pass that makes dev perplexity worse
stops it and the best earlier pass is kept.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elmokit.io.native import VOCAB_NAME, load_softmax
from elmokit.loading import native_directory
from elmokit.tasks.suite import Prepared
from elmokit.training.config import DataConfig, LogConfig, OptimConfig, TrainConfig

ADAPTED_NAME = "adapted"  # the kept model, inside the adaptation folder
SUMMARY_NAME = "adaptation.json"


@dataclass
class AdaptSettings:
    """How the biLM is fine-tuned on a task's text (the paper: "a few" epochs)."""

    max_epochs: int = 3
    lr: float = 5e-4  # Adam; well under the bundled model's peak pre-training rate (3e-3)
    batch_size: int = 32
    unroll_steps: int = 20
    dropout: float = 0.1
    seed: int = 0
    # "bf16": bf16 products with fp32 weights and loss, as the bundled model was pre-trained;
    # ~1.8x faster on CPUs with bf16 matrix units, slower on CPUs without them.
    precision: str = "fp32"


@dataclass
class Adaptation:
    """What fine-tuning did: dev perplexity (mean of both directions) before and after each
    pass, which pass was kept, where the kept model is."""

    model_dir: str
    dev_ppl_before: float
    dev_ppl_by_epoch: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 0: no pass improved on the general model (it is kept)
    train_tokens: int = 0
    minutes: float = 0.0

    @property
    def dev_ppl_after(self) -> float:
        return (
            self.dev_ppl_by_epoch[self.best_epoch - 1] if self.best_epoch else self.dev_ppl_before
        )

    def describe(self) -> str:
        passes = ", ".join(f"{ppl:.1f}" for ppl in self.dev_ppl_by_epoch)
        return (
            f"dev perplexity {self.dev_ppl_before:.1f} -> {self.dev_ppl_after:.1f} "
            f"(after each pass: {passes}; kept pass {self.best_epoch}), "
            f"{self.train_tokens:,} training tokens, {self.minutes:.1f} min"
        )


def adapt_to_text(
    model: str,
    train_sentences: Sequence[Sequence[str]],
    dev_sentences: Sequence[Sequence[str]],
    out: str | Path,
    settings: AdaptSettings | None = None,
) -> Adaptation:
    """Fine-tune `model` (a native model directory or bundled name with its softmax) on
    `train_sentences`, early-stopped on `dev_sentences`; returns what happened. A finished
    adaptation in `out` (its SUMMARY_NAME) is reused as it is."""
    settings = settings or AdaptSettings()
    out = Path(out)
    summary_path = out / SUMMARY_NAME
    if summary_path.exists():
        return Adaptation(**json.loads(summary_path.read_text()))
    source = native_directory(model)
    if source is None or not load_softmax(source) or not (source / VOCAB_NAME).exists():
        raise ValueError(
            f"--adapt-lm fine-tunes the language model, so {model} must be a model directory "
            f"with its trained softmax and {VOCAB_NAME} (as the bundled model and `elmokit "
            "train` outputs are); published HDF5 models have no softmax"
        )
    if not train_sentences or not dev_sentences:
        raise ValueError("--adapt-lm needs the task's training and dev text")
    out.mkdir(parents=True, exist_ok=True)
    # No summary: an earlier adaptation here was interrupted; its passes are redone.
    shutil.rmtree(out / "run", ignore_errors=True)
    train_file, dev_file = out / "train.txt", out / "dev.txt"
    for path, sentences in ((train_file, train_sentences), (dev_file, dev_sentences)):
        path.write_text("".join(" ".join(s) + "\n" for s in sentences if s), encoding="utf-8")
    config = _config(str(source), train_file, dev_file, out / "run", settings)
    start = time.perf_counter()
    adaptation = Adaptation(
        model_dir=str(out / ADAPTED_NAME), dev_ppl_before=_dev_perplexity(config, str(source))
    )
    _keep(source, out / ADAPTED_NAME)
    for epoch in range(1, settings.max_epochs + 1):
        config.optim.max_epochs = float(epoch)
        summary = _train(config, resume=epoch > 1)
        ppl = float(summary["valid_ppl_mean"])
        adaptation.dev_ppl_by_epoch.append(ppl)
        adaptation.train_tokens = int(summary.get("tokens", 0))
        if ppl >= adaptation.dev_ppl_after:
            break  # early stopping: this pass made dev perplexity worse
        adaptation.best_epoch = epoch
        _keep(out / "run" / "model", out / ADAPTED_NAME)
    adaptation.minutes = (time.perf_counter() - start) / 60
    summary_path.write_text(json.dumps(asdict(adaptation), indent=2) + "\n")
    return adaptation


def _config(source: str, train: Path, dev: Path, run: Path, settings: AdaptSettings) -> TrainConfig:
    config = TrainConfig(
        data=DataConfig(
            train=[str(train)],
            valid=[str(dev)],
            vocab=str(Path(source) / VOCAB_NAME),
            batch_size=settings.batch_size,
            unroll_steps=settings.unroll_steps,
            shuffle_buffer=1000,
        ),
        optim=OptimConfig(
            optimizer="adam",
            lr=settings.lr,
            dropout=settings.dropout,
            max_epochs=1.0,
            precision=settings.precision,
        ),
        log=LogConfig(eval_every=10**9, checkpoint_every=10**9, progress=False, tensorboard=False),
        output_dir=str(run),
        seed=settings.seed,
        init_from=source,
    )
    from elmokit.io.native import read_native_config

    config.model = read_native_config(source)[0]
    return config


def _train(config: TrainConfig, resume: bool) -> dict[str, float]:
    from elmokit.training.trainer import Trainer

    return Trainer(config, resume=resume).train()


def _dev_perplexity(config: TrainConfig, source: str) -> float:
    """The general model's dev perplexity, computed as the trainer computes it."""
    import elmokit
    from elmokit.training.language_model import BiLanguageModel
    from elmokit.training.trainer import evaluate_perplexity
    from elmokit.vocab import Vocabulary

    vocab = Vocabulary.from_file(config.data.vocab)
    model = BiLanguageModel(elmokit.load(source), len(vocab), dropout=0.0)
    model.softmax.load_state_dict(load_softmax(source))
    result = evaluate_perplexity(
        model,
        lambda: config.data.sentences(config.data.valid),
        vocab,
        batch_size=config.data.eval_batch_size,
        unroll_steps=config.data.unroll_steps,
    )
    return float(result.mean)


def _keep(model_dir: Path, target: Path) -> None:
    """Copy the model files that matter (config, weights with softmax, vocabulary)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.suffix in (".json", ".safetensors", ".txt"):
            shutil.copyfile(path, target / path.name)


def task_texts(prepared: Prepared) -> tuple[list[list[str]], list[list[str]]]:
    """The unlabelled text of a task's first fold: (its training sentences, its dev sentences).
    Pairs give both sides, QA its contexts and questions; test text is never used."""
    train_ids, dev_ids, _ = prepared.split(0)

    def sentences_of(ids: list[int]) -> list[list[str]]:
        if prepared.pairs is not None:
            chosen = [side for i in ids for side in prepared.pairs[i][:2]]
        elif prepared.qa_context is not None and prepared.qa_question is not None:
            chosen = [prepared.qa_context[i] for i in ids] + [prepared.qa_question[i] for i in ids]
        else:
            chosen = list(ids)
        return [prepared.sentences[i] for i in dict.fromkeys(chosen)]

    return sentences_of(train_ids), sentences_of(dev_ids)

"""The training loop: bilm-tf's recipe in plain PyTorch, resumable, DDP through torchrun.

Every batch: both directions' streams through the shared token encoder and LSTMs with the
state carried from the previous batch (truncated backprop over `unroll_steps`), mean of the
two cross-entropies, gradient-norm clipping, one optimizer step. Checkpoints are periodic, on
SIGINT/SIGTERM and at the end; `resume=True` continues from the newest one exactly (same data
position, RNG, optimizer, LSTM state).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from elmokit.bilm import BiLM
from elmokit.devices import rank_device
from elmokit.initialization import init_bilm_weights
from elmokit.io.files import atomic_path
from elmokit.modules.lstm import LSTMState
from elmokit.training import checkpoint as ckpt
from elmokit.training.config import TrainConfig, scheduled_lr
from elmokit.training.data import RowLayout, StreamBatcher, expand_paths
from elmokit.training.language_model import BiLanguageModel
from elmokit.vocab import Vocabulary, build_vocabulary


@dataclass
class Perplexity:
    forward: float
    backward: float
    tokens: int

    @property
    def mean(self) -> float:
        """Arithmetic mean of the two directions' perplexities (the ELMo paper's number)."""
        return (self.forward + self.backward) / 2

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_ppl_forward": self.forward,
            f"{prefix}_ppl_backward": self.backward,
            f"{prefix}_ppl_mean": self.mean,
        }


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup_distributed(device_type: str) -> DistributedContext:
    """torchrun sets RANK / WORLD_SIZE; gloo on CPU, nccl on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def prepare_vocabulary(
    config: TrainConfig, context: DistributedContext, progress: bool
) -> Vocabulary:
    path = Path(config.data.vocab)
    if not path.exists():
        if context.is_main:
            sentences = config.data.sentences(config.data.train)
            vocab = build_vocabulary(
                tqdm(sentences, desc="vocabulary", unit=" lines", disable=not progress),
                min_count=config.data.min_count,
                max_size=config.data.max_vocab_size,
            )
            vocab.save(path)
        context.barrier()
    return Vocabulary.from_file(path)


def count_training_tokens(config: TrainConfig, output_dir: Path) -> int:
    """Forward targets in one pass over the training files, cached in corpus_stats.json for
    as long as the files (path, size, modification time) and the reading settings are the
    same."""
    stats_path = output_dir / "corpus_stats.json"
    data = config.data
    key = {
        "files": [
            [path, os.stat(path).st_size, os.stat(path).st_mtime_ns]
            for path in expand_paths(data.train)
        ],
        "tokenize": data.tokenize,
        "lang": data.lang,
        "encoding_errors": data.encoding_errors,
        "max_tokens_per_sentence": data.max_tokens_per_sentence,
    }
    if stats_path.exists():
        try:
            stats = json.loads(stats_path.read_text())
        except json.JSONDecodeError:
            stats = {}
        if stats.get("key") == key:
            return int(stats["tokens"])
    tokens = 0
    limit = data.max_tokens_per_sentence
    for sentence in data.sentences(data.train):
        tokens += min(len(sentence), limit or len(sentence)) + 1
    stats_path.write_text(json.dumps({"key": key, "tokens": tokens}))
    return tokens


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.optimizer == "adagrad":
        return torch.optim.Adagrad(
            params,
            lr=optim.lr,
            initial_accumulator_value=optim.adagrad_initial_accumulator,
            weight_decay=optim.weight_decay,
        )
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(params, lr=optim.lr, weight_decay=optim.weight_decay)


def evaluate_perplexity(
    model: BiLanguageModel,
    sentences: Callable[[], Iterable[list[str]]],
    vocab: Vocabulary,
    batch_size: int = 64,
    unroll_steps: int = 20,
    max_tokens: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    row_layout: RowLayout = "packed",
) -> Perplexity:
    """Held-out perplexity with the full softmax, state carried along each row's stream."""
    batcher = StreamBatcher(
        sentences,
        vocab,
        batch_size,
        unroll_steps,
        epochs=1,
        row_layout=row_layout,
        characters=model.bilm.characters,
    )
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.long)
    state: LSTMState | None = None
    with torch.inference_mode():
        for batch in tqdm(
            batcher, desc="evaluate", unit=" batch", disable=not progress, leave=False
        ):
            result = model(batch.to(device), state)
            state = result.state
            totals += torch.stack([result.forward_nll_sum, result.backward_nll_sum]).double().cpu()
            counts += torch.stack([result.forward_tokens, result.backward_tokens]).cpu()
            if max_tokens is not None and int(counts[0]) >= max_tokens:
                break
    model.train(was_training)
    if int(counts.min()) == 0:
        raise ValueError("evaluation data has no tokens")
    ppl = torch.exp(totals / counts.double())
    return Perplexity(float(ppl[0]), float(ppl[1]), int(counts[0]))


@dataclass
class TrainerState:
    step: int = 0
    tokens: int = 0  # forward training targets seen, all ranks
    elapsed_seconds: float = 0.0
    lr: float = 0.0
    best_valid: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        device: str = "cpu",
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.device = rank_device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # nccl and DDP use the current device
        self.context = setup_distributed(self.device.type)
        self.output_dir = Path(config.output_dir)
        self._check_run_folder(resume, overwrite)
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_config.json").write_text(
                json.dumps(config.to_dict(), indent=2)
            )
        self.context.barrier()
        self.progress = config.log.progress and self.context.is_main
        torch.manual_seed(config.seed + self.context.rank)
        self.vocab = prepare_vocabulary(config, self.context, self.progress)
        self.train_tokens = (
            count_training_tokens(config, self.output_dir) if self.context.is_main else 0
        )
        self.model = self._build_model().to(self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.state = TrainerState(lr=config.optim.lr)
        self.planned_steps = self._shared_planned_steps()
        self.current_lr = config.optim.lr
        self.batcher = StreamBatcher(
            lambda: config.data.sentences(
                config.data.train, rank=self.context.rank, world_size=self.context.world_size
            ),
            self.vocab,
            config.data.batch_size,
            config.data.unroll_steps,
            seed=config.seed,
            shuffle_buffer=config.data.shuffle_buffer,
            max_tokens_per_sentence=config.data.max_tokens_per_sentence,
            epochs=None,
            row_layout=config.data.row_layout,
            characters=self.model.bilm.characters,
        )
        self.lstm_state: LSTMState | None = None
        self.sampler = torch.Generator().manual_seed(config.seed * 1000 + self.context.rank)
        self._stop_signal: int | None = None
        if resume:
            self._resume()
        self.ddp: nn.Module = self.model
        if self.context.world_size > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    # -- setup ----------------------------------------------------------------------------

    # What a run writes into its folder (the vocabulary and the token count stay: they
    # depend on the data only).
    _RUN_OUTPUTS = ("checkpoints", "metrics.csv", "model", "summary.json", "learning_curves.png")

    def _check_run_folder(self, resume: bool, overwrite: bool) -> None:
        """A folder that holds a run is continued (--resume) or replaced (--overwrite), never
        silently mixed with a new run."""
        if resume and overwrite:
            raise ValueError("--resume continues the run in the folder, --overwrite replaces it")
        checkpoints = ckpt.list_checkpoints(self.output_dir)
        has_run = bool(checkpoints) or (self.output_dir / "metrics.csv").exists()
        if has_run and not (resume or overwrite):
            held = f"checkpoints up to {checkpoints[-1].name}" if checkpoints else "metrics.csv"
            raise FileExistsError(
                f"{self.output_dir} already holds a run ({held}): pass --resume to continue it, "
                "or --overwrite to start over (removes its checkpoints, metrics, model and "
                "summary)"
            )
        if overwrite and self.context.is_main:
            for name in self._RUN_OUTPUTS:
                path = self.output_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self.context.barrier()

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics.csv rows written after the checkpoint a run resumes from (a killed run
        logged them, and the resumed run logs those steps again)."""
        path = self.output_dir / "metrics.csv"
        if not path.exists():
            return
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= step]
        if len(kept) != len(rows):
            with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
                csv.writer(handle).writerows(kept)

    def _build_model(self) -> BiLanguageModel:
        config = self.config
        if config.init_from:
            from elmokit.loading import load

            bilm = load(config.init_from).train()
            model = BiLanguageModel(bilm, len(self.vocab), dropout=config.optim.dropout)
            self._maybe_load_softmax(model, config.init_from)
            return model
        bilm = init_bilm_weights(BiLM(config.model), seed=config.seed)
        return BiLanguageModel(bilm, len(self.vocab), dropout=config.optim.dropout)

    def _maybe_load_softmax(self, model: BiLanguageModel, source: str) -> None:
        """Fine-tuning from a native model keeps its softmax when the vocabulary matches;
        a published HDF5 model has none, so a fresh softmax is trained."""
        from elmokit.io.native import load_softmax
        from elmokit.loading import native_directory

        directory = native_directory(source)
        softmax = load_softmax(directory) if directory is not None else {}
        if softmax and softmax["weight"].shape == model.softmax.weight.shape:
            model.softmax.load_state_dict(softmax)

    def _resume(self) -> None:
        directory = ckpt.latest_checkpoint(self.output_dir)
        if directory is None:
            if self.context.is_main:
                print(f"no checkpoint in {self.output_dir}; starting from scratch")
            return
        shared = ckpt.load_shared_state(directory, self.model, self.optimizer)
        tensors, rank_data = ckpt.load_rank_state(directory, self.context.rank)
        state = shared["trainer"]
        self.state = TrainerState(**state)
        self._set_lr(self.state.lr)
        self.batcher.load_state_dict(rank_data["batcher"])
        if "lstm.h" in tensors:
            self.lstm_state = LSTMState(
                tensors["lstm.h"].to(self.device), tensors["lstm.c"].to(self.device)
            )
        torch.set_rng_state(tensors["rng.torch"])
        self.sampler.set_state(tensors["rng.sampler"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        if self.context.is_main:
            self._truncate_metrics(self.state.step)
            print(f"resumed from {directory} (step {self.state.step})")

    def _set_lr(self, lr: float) -> None:
        """Set the base rate (the one plateau decay lowers); the schedule scales it per step."""
        self.state.lr = lr
        self._apply_lr_schedule()

    def _apply_lr_schedule(self) -> None:
        optim = self.config.optim
        self.current_lr = scheduled_lr(
            self.state.lr,
            optim.min_lr,
            self.state.step,
            self.planned_steps,
            optim.lr_schedule,
            optim.warmup_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        context = self.context
        staging = ckpt.checkpoint_root(self.output_dir) / f".staging_step_{self.state.step:08d}"
        if context.is_main:
            staging = ckpt.staging_directory(self.output_dir, self.state.step)
        context.barrier()
        tensors = {"rng.torch": torch.get_rng_state(), "rng.sampler": self.sampler.get_state()}
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        if self.lstm_state is not None:
            tensors["lstm.h"], tensors["lstm.c"] = self.lstm_state.h, self.lstm_state.c
        ckpt.save_rank_state(staging, context.rank, tensors, {"batcher": self.batcher.state_dict()})
        context.barrier()
        final = staging.parent / f"step_{self.state.step:08d}"
        if context.is_main:
            metadata = {
                "step": self.state.step,
                "tokens": self.state.tokens,
                "vocab_size": len(self.vocab),
                "world_size": context.world_size,
            }
            ckpt.write_shared_state(
                staging,
                self.model,
                self.optimizer,
                {"trainer": self.state.__dict__, "world_size": context.world_size},
                metadata,
            )
            final = ckpt.publish_checkpoint(
                staging, self.state.step, self.config.log.keep_checkpoints
            )
        context.barrier()
        return final

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum

    # -- the loop -------------------------------------------------------------------------

    def _should_stop(self, start_time: float) -> str | None:
        optim = self.config.optim
        if optim.max_steps is not None and self.state.step >= optim.max_steps:
            return "max_steps"
        epochs_done = self.state.tokens / self.train_tokens if self.train_tokens else 0.0
        if (
            optim.max_epochs is not None
            and self.context.is_main
            and epochs_done >= optim.max_epochs
        ):  # noqa: E501
            return "max_epochs"
        minutes = (self.state.elapsed_seconds + time.time() - start_time) / 60
        if optim.max_minutes is not None and minutes >= optim.max_minutes:
            return "max_minutes"
        return None

    def _agree_to_stop(self, reason: str | None) -> str | None:
        """Every rank must stop at the same step (rank 0 decides epochs and time)."""
        if self.context.world_size == 1:
            return reason
        flag = torch.tensor([0 if reason is None else 1], dtype=torch.long)
        if self._stop_signal is not None:
            flag[0] = 1
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return (reason or "signal") if int(flag[0]) else None

    def _reset_some_rows(self, state: LSTMState | None) -> LSTMState | None:
        """Zero the carried state of each row with probability `state_reset_prob`.

        Why: with the state always carried, the LM only ever sees a zero state in its very
        first batch. Measured on the PTB recipe (step 300): started from a zero state, 2 of
        64 held-out rows fell into a saturated regime (64% of the top layer's cells at the
        clip value, per-token NLL 25-50 nats) and stayed there through the carried state;
        forward held-out perplexity read 1e9 while training perplexity was 430. The same
        rows with a carried state were normal. Zero state is also how `reset` features start
        every sentence, so the model must know it.
        """
        probability = self.config.optim.state_reset_prob
        if state is None or probability <= 0:
            return state
        # The global generator: saved in checkpoints, so resumed runs draw the same rows.
        keep = (torch.rand(state.batch_size) >= probability).to(state.h)
        return LSTMState(state.h * keep[:, None], state.c * keep[:, None])

    def train_step(self, batch: Any) -> tuple[float, float, int]:
        self.ddp.train()
        self.lstm_state = self._reset_some_rows(self.lstm_state)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.optim.precision == "bf16"
        ):
            result = self.ddp(
                batch.to(self.device),
                self.lstm_state,
                n_negative=self.config.optim.n_negative_samples,
                generator=self.sampler,
            )
        self.optimizer.zero_grad(set_to_none=True)
        self._apply_lr_schedule()
        result.loss.backward()
        if self.config.optim.clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip_norm)
        self.optimizer.step()
        self.lstm_state = result.state.detach()
        tokens = torch.stack([result.forward_tokens, result.backward_tokens]).cpu()
        sums = torch.stack([result.forward_nll_sum, result.backward_nll_sum]).double().cpu()
        if self.context.world_size > 1:
            packed = torch.cat([sums, tokens.double()])
            dist.all_reduce(packed)
            sums, tokens = packed[:2], packed[2:].long()
        return float(sums[0]), float(sums[1]), int(tokens[0])

    def train(self) -> dict[str, Any]:
        config, context = self.config, self.context
        previous_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        csv_path = self.output_dir / "metrics.csv"
        writer = (
            _TensorBoard(self.output_dir / "tensorboard")
            if (config.log.tensorboard and context.is_main)
            else None
        )
        start = time.time()
        last_checkpoint = time.time()
        window = [0.0, 0.0, 0]
        window_start = time.time()
        bar = tqdm(
            total=self.planned_steps,
            initial=self.state.step,
            desc="train",
            unit=" step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        reason: str | None = None
        try:
            while True:
                reason = self._agree_to_stop(self._should_stop(start))
                if reason is None and self._stop_signal is not None:
                    reason = "signal"
                if reason:
                    break
                batch = next(self.batcher)
                fwd_sum, bwd_sum, tokens = self.train_step(batch)
                self.state.step += 1
                self.state.tokens += tokens
                window[0] += fwd_sum
                window[1] += bwd_sum
                window[2] += tokens
                bar.update(1)
                if self.state.step % config.log.log_every == 0 and window[2] > 0:
                    seconds = time.time() - window_start
                    row = {
                        "step": self.state.step,
                        "tokens": self.state.tokens,
                        "epoch": self.state.tokens / max(self.train_tokens, 1),
                        "elapsed_min": (self.state.elapsed_seconds + time.time() - start) / 60,
                        "tokens_per_s": window[2] / max(seconds, 1e-9),
                        "train_ppl_forward": math.exp(window[0] / window[2]),
                        "train_ppl_backward": math.exp(window[1] / window[2]),
                        "lr": self.current_lr,
                    }
                    bar.set_postfix(
                        ppl=f"{row['train_ppl_forward']:.1f}/{row['train_ppl_backward']:.1f}",
                        tok_s=f"{row['tokens_per_s']:.0f}",
                    )
                    self._log(row, csv_path, writer)
                    window, window_start = [0.0, 0.0, 0], time.time()
                if config.data.valid and self.state.step % config.log.eval_every == 0:
                    self._evaluate_and_schedule(csv_path, writer, config.log.eval_max_tokens)
                due = self.state.step % config.log.checkpoint_every == 0 or (
                    time.time() - last_checkpoint > config.log.checkpoint_minutes * 60
                )
                if self._agree_flag(due):
                    self.state.elapsed_seconds += time.time() - start
                    start = time.time()
                    self.save_checkpoint()
                    last_checkpoint = time.time()
        finally:
            bar.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        self.state.elapsed_seconds += time.time() - start
        self.save_checkpoint()
        summary: dict[str, Any] = {
            "stopped_by": reason,
            "step": self.state.step,
            "tokens": self.state.tokens,
            "minutes": self.state.elapsed_seconds / 60,
        }
        if reason != "signal":
            if config.data.valid:
                summary.update(self._full_eval("valid", config.data.valid))
            if config.data.test:
                summary.update(self._full_eval("test", config.data.test))
            if context.is_main:
                self.export_final()
                (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
                plot_learning_curves(csv_path, self.output_dir / "learning_curves.png")
        if writer:
            writer.close()
        return summary

    def _agree_flag(self, flag: bool) -> bool:
        if self.context.world_size == 1:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor[0])

    def _shared_planned_steps(self) -> int | None:
        """Rank 0's plan (only it counts the corpus), so every rank follows one lr curve."""
        planned = self._planned_steps()
        if self.context.world_size == 1:
            return planned
        shared = torch.tensor([planned if planned is not None else -1], dtype=torch.int64)
        dist.broadcast(shared, src=0)
        return int(shared[0]) if int(shared[0]) >= 0 else None

    def _planned_steps(self) -> int | None:
        optim, data = self.config.optim, self.config.data
        candidates = []
        if optim.max_steps:
            candidates.append(optim.max_steps)
        if optim.max_epochs and self.train_tokens:
            per_step = data.batch_size * data.unroll_steps * self.context.world_size
            # Roughly: a sentence of n words fills n + 1 of the batch slots.
            candidates.append(math.ceil(optim.max_epochs * self.train_tokens / per_step))
        return min(candidates) if candidates else None

    def _full_eval(self, name: str, paths: list[str]) -> dict[str, float]:
        if not self.context.is_main:
            self.context.barrier()
            return {}
        result = evaluate_perplexity(
            self.model,
            lambda: self.config.data.sentences(paths),
            self.vocab,
            batch_size=self.config.data.eval_batch_size,
            unroll_steps=self.config.data.unroll_steps,
            row_layout=self.config.data.row_layout,
            device=self.device,
            progress=self.progress,
        )
        self.context.barrier()
        return result.as_dict(name)

    def _evaluate_and_schedule(
        self, csv_path: Path, writer: _TensorBoard | None, max_tokens: int | None
    ) -> None:
        lr = self.state.lr
        if self.context.is_main:
            result = evaluate_perplexity(
                self.model,
                lambda: self.config.data.sentences(self.config.data.valid),
                self.vocab,
                batch_size=self.config.data.eval_batch_size,
                unroll_steps=self.config.data.unroll_steps,
                row_layout=self.config.data.row_layout,
                max_tokens=max_tokens,
                device=self.device,
            )
            self._log(
                {"step": self.state.step, "tokens": self.state.tokens, **result.as_dict("valid")},
                csv_path,
                writer,
            )
            if result.mean < self.state.best_valid:
                self.state.best_valid = result.mean
            elif self.config.optim.lr_decay_on_plateau < 1.0:
                lr = max(lr * self.config.optim.lr_decay_on_plateau, self.config.optim.min_lr)
        if self.context.world_size > 1:
            shared = torch.tensor([lr], dtype=torch.float64)
            dist.broadcast(shared, src=0)
            lr = float(shared[0])
        self._set_lr(lr)

    def _log(self, row: dict[str, float], csv_path: Path, writer: _TensorBoard | None) -> None:
        if not self.context.is_main:
            return
        self.state.history.append(row)
        fields = [
            "step",
            "tokens",
            "epoch",
            "elapsed_min",
            "tokens_per_s",
            "train_ppl_forward",
            "train_ppl_backward",
            "lr",
            "valid_ppl_forward",
            "valid_ppl_backward",
            "valid_ppl_mean",
        ]
        new_file = not csv_path.exists()
        with csv_path.open("a", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=fields)
            if new_file:
                out.writeheader()
            out.writerow({k: row.get(k, "") for k in fields})
        if writer:
            writer.add(row)

    def export_final(self) -> Path:
        """The trained model as a native directory (with softmax and its vocabulary, so that
        `elmokit evaluate` and `--adapt-lm` can use it alone) in output_dir/model."""
        from elmokit.io.native import VOCAB_NAME, save_pretrained

        directory = save_pretrained(
            self.model.bilm,
            self.output_dir / "model",
            softmax=self.model.softmax.state_dict(),
            metadata={
                "step": self.state.step,
                "tokens": self.state.tokens,
                "vocab_size": len(self.vocab),
            },
        )
        self.vocab.save(directory / VOCAB_NAME)
        return directory


class _TensorBoard:
    """TensorBoard scalars when the tensorboard package is installed; silently off otherwise."""

    def __init__(self, directory: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
            return
        self.writer = SummaryWriter(str(directory))

    def add(self, row: dict[str, float]) -> None:
        if self.writer is None:
            return
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_learning_curves(csv_path: Path, output: Path) -> Path | None:
    """Training and held-out perplexity against tokens seen (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not csv_path.exists():
        return None
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for key, style in (
        ("train_ppl_forward", "-"),
        ("train_ppl_backward", "-"),
        ("valid_ppl_forward", "o-"),
        ("valid_ppl_backward", "o-"),
        ("valid_ppl_mean", "s-"),
    ):
        points = [(float(r["tokens"]), float(r[key])) for r in rows if r.get(key)]
        if points:
            axis.plot(*zip(*points, strict=True), style, label=key.replace("_", " "), markersize=3)
    axis.set_xlabel("training tokens")
    axis.set_ylabel("perplexity")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output

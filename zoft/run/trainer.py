"""The training loop: mini-batches, guarded optimizer steps, metrics lines, dev evaluation, the
best-dev state and checkpoints to resume from."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from zoft.optim.base import NonFiniteStep, Optimizer, StepResult
from zoft.run import distributed
from zoft.run.checkpoint import Checkpoint, Checkpointer, capture_rng, load_weights, restore_rng
from zoft.run.console import progress
from zoft.run.guards import GuardSettings, StepGuard
from zoft.run.loggers import MetricsLog
from zoft.run.predictions import prediction_records
from zoft.run.rundir import TRAJECTORY_FILE
from zoft.run.signals import Interrupted, SignalFlags
from zoft.run.trajectory import (
    TrajectoryLog,
    TrajectoryStep,
    apply_steps,
    as_text,
    read_trajectory,
    steps_up_to,
)
from zoft.scoring.base import ScoredPredictions, Scorer
from zoft.tasks.base import Example, Splits, Task

log = logging.getLogger(__name__)

DEV_LOSS = "loss"  # the dev-loss entry of a dev evaluation's scores (result.json best_dev)


def batches(
    examples: Sequence[Example],
    batch_size: int,
    seed: int,
    start: int = 0,
    drop_last: bool = False,
) -> Iterator[list[Example]]:
    """Endless mini-batches from batch number `start` on; epoch e is a permutation drawn from
    (seed, e), so the order is rebuilt from (epoch, position) alone and a resumed run continues
    with the very batch it would have drawn. Each epoch ends with its short remainder batch, as
    the HF and LM-BFF loaders do, unless `drop_last`; when batch_size divides the examples both
    give the same batches."""
    size = min(batch_size, len(examples))
    per_epoch = steps_per_epoch(len(examples), batch_size, drop_last)
    last_offset = len(examples) - size if drop_last else len(examples) - 1
    epoch, position = divmod(start, per_epoch)
    while True:
        order = np.random.RandomState([seed % 2**32, epoch]).permutation(len(examples))
        for offset in range(position * size, last_offset + 1, size):
            yield [examples[i] for i in order[offset : offset + size]]
        epoch, position = epoch + 1, 0


def steps_per_epoch(examples: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one pass over `examples` (the experiments' epoch-based step counts)."""
    size = min(batch_size, examples)
    return examples // size if drop_last else -(-examples // size)


@dataclass
class Evaluator:
    """The task metric of the model's predictions, computed in eval mode (under data parallelism
    each rank predicts its shard and the predictions are gathered in order)."""

    task: Task
    scorer: Scorer
    model: torch.nn.Module
    batch_size: int
    # every rank evaluates every example: FSDP needs the same forwards on all ranks
    replicate: bool = False

    def __call__(self, examples: Sequence[Example]) -> dict[str, float]:
        was_training = self.model.training
        mine = examples if self.replicate else distributed.shard(examples)
        predictions = self.scorer.predict(self.model, mine, self.batch_size)
        self.model.train(was_training)
        if not self.replicate:
            predictions = distributed.gather_shards(predictions)
        return self.task.score(predictions, examples)

    @torch.no_grad()
    def loss(self, examples: Sequence[Example]) -> float:
        """The training loss (the scorer's, not a metric objective's) over `examples` in eval
        mode: Σ summed losses / Σ loss terms over eval batches, the HF Trainer's eval_loss that
        its load_best_model_at_end selects by (ranks add their shards' sums)."""
        was_training = self.model.training
        self.model.eval()
        mine = examples if self.replicate else distributed.shard(examples)
        total, weight = 0.0, 0
        parts = [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        for part in progress(parts, "dev loss"):
            part_sum, part_weight = self.scorer.loss_sum(self.model, part)
            total += float(part_sum.float().item())
            weight += part_weight
        self.model.train(was_training)
        if not self.replicate:
            total, weight = distributed.all_sum([total, weight])
        return total / max(weight, 1)

    def test_pass(
        self, examples: Sequence[Example]
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The task metric and, from the same forwards, one predictions.jsonl record per
        example (every rank returns all of them; the main rank writes them)."""
        was_training = self.model.training
        mine = examples if self.replicate else distributed.shard(examples)
        scored = self.scorer.predict_scored(self.model, mine, self.batch_size)
        self.model.train(was_training)
        if not self.replicate:
            gathered = distributed.gather_shards(scored.predictions)
            scores = None if scored.scores is None else distributed.gather_shards(scored.scores)
            scored = ScoredPredictions(gathered, scores)
        records = prediction_records(self.task, scored, examples)
        return self.task.score(scored.predictions, examples), records


@dataclass
class TrainingOutcome:
    """Counters and results of one training loop, for result.json (checkpointed as they stand)."""

    steps: int = 0
    forwards: int = 0
    backwards: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    best_step: int = 0
    best_dev: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    skipped_steps: int = 0
    steps_below_resolution: int = 0
    resumed_at: list[int] = field(default_factory=list)  # the step each resume started from

    def record(self, result: StepResult) -> None:
        self.steps += 1
        self.forwards += result.forwards
        self.backwards += result.backwards
        self.first_loss = result.loss if self.first_loss is None else self.first_loss
        self.last_loss = result.loss


class BestDevState:
    """The best dev result so far and, when training went on past it, a CPU copy of its weights.
    The rule is `select_by`: the highest task metric, or the lowest dev loss (the HF Trainer's
    default with load_best_model_at_end); either way only a strict improvement replaces the best,
    so the earliest of tied evaluations wins."""

    def __init__(
        self, params: dict[str, torch.nn.Parameter], metric: str, select_by: str = "metric"
    ) -> None:
        self.params = params
        self.key, self.sign = (metric, 1.0) if select_by == "metric" else (DEV_LOSS, -1.0)
        self.value = float("-inf")  # sign × the selected score
        self.step = 0
        self.scores: dict[str, float] = {}
        self.weights: dict[str, torch.Tensor] | None = None

    def offer(self, step: int, scores: dict[str, float], is_last: bool) -> None:
        value = self.sign * scores[self.key]
        if not value > self.value:  # also refuses NaN
            return
        self.value, self.step, self.scores = value, step, scores
        # the current weights are the best ones: a copy is only needed if training goes on
        # (of this rank's shard under FSDP)
        self.weights = (
            None
            if is_last
            else {
                n: distributed.local(p).detach().to("cpu", copy=True)
                for n, p in self.params.items()
            }
        )

    @torch.no_grad()
    def restore(self) -> bool:
        """Put the best-dev weights back if training went on past them; whether it did."""
        if self.weights is None:
            return False
        log.info("restoring the best-dev state of step %d", self.step)
        for name, p in self.params.items():
            target = distributed.local(p)
            target.copy_(self.weights[name].to(target.device))
        # the parameters are the best ones now: the copy is not needed (nor checkpointed) again
        self.weights = None
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "scores": dict(self.scores)}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None):
        self.value, self.step, self.scores = state["value"], state["step"], dict(state["scores"])
        self.weights = weights


@dataclass(frozen=True)
class TrainingSettings:
    """The run settings the training loop reads, taken from the run config once."""

    steps: int
    batch_size: int
    seed: int  # the training-order seed
    eval_every: int = 0  # dev evaluation interval in steps; 0 = only after the last step
    log_every: int = 10
    checkpoint_every: int = 0  # 0: checkpoints only on request or before stopping on a signal
    # trajectory: a pure ZO run's steps and small state only; full (or auto, until the runner
    # resolves it, zoft.run.runner.checkpoint_kind): the weights and the optimizer's state
    checkpoint: str = "full"
    select_by: str = "metric"  # the best-dev rule: metric (highest) or loss (lowest dev loss)
    drop_last: bool = False  # drop each epoch's last short batch (zoft's old rule)
    guard: GuardSettings = field(default_factory=GuardSettings)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainingSettings:
        """From a run config (a partial one, as tests build, takes the defaults)."""
        return cls(
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            eval_every=cfg.get("eval_every", 0),
            log_every=cfg.get("log_every", 10),
            checkpoint_every=cfg.get("checkpoint_every", 0),
            checkpoint=str(cfg.get("checkpoint", "full")),
            select_by=str(cfg.get("select_by", "metric")),
            drop_last=cfg.get("drop_last", False),
            guard=GuardSettings(**cfg.get("guard", {})),
        )


@dataclass
class TrainingRecord:
    """Where a training loop leaves its traces and what may interrupt it: the metrics log, the
    checkpointer (none: no checkpoints), the signal flags, the run-level results a resumed
    run must not recompute (saved with each checkpoint), and a pure ZO run's trajectory."""

    metrics: MetricsLog
    checkpointer: Checkpointer | None = None
    flags: SignalFlags = field(default_factory=SignalFlags)
    extra: dict[str, Any] = field(default_factory=dict)
    trajectory: TrajectoryLog = field(default_factory=lambda: TrajectoryLog(None))


class Trainer:
    """The training loop: steps, guards, periodic log lines and dev evaluation, the best-dev
    state, and checkpoints (every settings.checkpoint_every steps, on request, and before stopping
    on a signal) from which `run(resume=...)` continues bit for bit."""

    def __init__(
        self,
        settings: TrainingSettings,
        optimizer: Optimizer,
        splits: Splits,
        evaluate: Evaluator,
        record: TrainingRecord,
    ) -> None:
        self.settings, self.optimizer, self.splits = settings, optimizer, splits
        self.evaluate, self.metrics = evaluate, record.metrics
        self.checkpointer, self.flags, self.extra = record.checkpointer, record.flags, record.extra
        self.trajectory = record.trajectory
        self.outcome = TrainingOutcome()
        self.best = BestDevState(optimizer.trainable(), evaluate.task.metric, settings.select_by)
        self.guard = StepGuard(settings.guard, optimizer)
        self.dev_key = f"dev_{evaluate.task.metric}"
        self.weights_step: int | None = None  # the step the weights are of, once restored

    def run(self, resume: Checkpoint | None = None) -> TrainingOutcome:
        settings = self.settings
        start = self._restore(resume) if resume is not None else 0
        stream = batches(
            self.splits.train,
            settings.batch_size,
            settings.seed,
            start=start,
            drop_last=settings.drop_last,
        )
        bar = tqdm(
            total=settings.steps, initial=start, desc="train", disable=None, dynamic_ncols=True
        )
        with self.flags.deferred():
            self._loop(start, stream, bar)
            bar.close()
            if self.best.restore():
                self.weights_step = self.best.step
            self._count_guarded_steps()
            self.outcome.best_step, self.outcome.best_dev = self.best.step, self.best.scores
            if distributed.any_rank([self.flags.stop is not None])[0]:  # during the last step
                self._stop(settings.steps, self.save(settings.steps))
        return self.outcome

    def _loop(self, start: int, stream: Iterator[list[Example]], bar: tqdm) -> None:
        settings, outcome = self.settings, self.outcome
        started, seen, earlier = time.time(), 0, outcome.seconds
        for step in range(start, settings.steps):
            batch = next(stream)
            record = self._step(step, batch)
            seen += len(batch)
            elapsed = time.time() - started
            outcome.seconds = earlier + elapsed
            record.update(
                elapsed_s=round(outcome.seconds, 3),
                examples_per_s=round(seen / max(elapsed, 1e-9), 3),
                forwards=outcome.forwards,
                backwards=outcome.backwards,
            )
            is_last = step + 1 == settings.steps
            if self.splits.dev and (
                is_last or (settings.eval_every and (step + 1) % settings.eval_every == 0)
            ):
                dev = {
                    **self.evaluate(self.splits.dev),
                    DEV_LOSS: self.evaluate.loss(self.splits.dev),
                }
                record[self.dev_key] = dev[self.evaluate.task.metric]
                record["dev_loss"] = dev[DEV_LOSS]
                self.best.offer(step + 1, dev, is_last)
            if (
                (step + 1) % settings.log_every == 0
                or is_last
                or self.dev_key in record
                or "skipped" in record
            ):
                self.metrics.write(record)
                self._log_line(step, record, elapsed / (step + 1 - start), bar.disable)
            bar.update(1)
            if "loss" in record:
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if not is_last:
                self._checkpoint_if_due(step + 1)

    def _step(self, step: int, batch: list[Example]) -> dict[str, Any]:
        """One optimizer step under the guards: its metrics record."""
        try:
            result = self.optimizer.step(batch, step)
        except NonFiniteStep as err:
            skipped = self.guard.non_finite(err)  # raises unless the guard skips the batch
            self.trajectory.write(TrajectoryStep(step + 1, None, None))
            return {"step": step + 1, "skipped": skipped}
        if result.estimates is not None:
            self.trajectory.write(TrajectoryStep(step + 1, result.estimates, result.lr))
        self.outcome.record(result)
        self.guard.check(step, result)
        return {
            "step": step + 1,
            "loss": result.loss,
            "lr": result.lr,
            "projected_grad": result.projected_grad,
        }

    def _log_line(self, step: int, record: dict[str, Any], per_step: float, quiet: bool) -> None:
        if "skipped" in record:
            return  # the guard logged it
        dev = f" {self.dev_key} {record[self.dev_key]:.4f}" if self.dev_key in record else ""
        pace = ""
        if quiet:  # no progress bar: the log line says how fast it goes and when it ends
            left = per_step * (self.settings.steps - step - 1)
            pace = f" ({per_step:.3g} s/step, {_duration(left)} left)"
        log.info(
            "step %d/%d loss %.4f%s%s", step + 1, self.settings.steps, record["loss"], dev, pace
        )

    def _checkpoint_if_due(self, done: int) -> None:
        """Checkpoint after `done` steps when due or asked for; stop after a stop signal."""
        every = self.settings.checkpoint_every
        due = bool(every) and done % every == 0
        asked, stop = distributed.any_rank(
            [self.flags.take_checkpoint_request(), self.flags.stop is not None]
        )  # every rank stops after the same step
        if not (due or asked or stop):
            return
        path = self.save(done)
        if stop:
            self._stop(done, path)

    def _stop(self, done: int, path: Path | None) -> None:
        """End the run on the stop signal received, naming the checkpoint just written."""
        signum = self.flags.stop or signal.SIGTERM
        where = (
            f"checkpoint {path}: re-run the same command to resume"
            if path
            else "no checkpoint was written: re-running starts over"
        )
        raise Interrupted(
            f"stopped by {signal.Signals(signum).name} after step {done}/{self.settings.steps}; "
            + where,
            signum,
        )

    def save(self, done: int) -> Path | None:
        """Write the checkpoint of the state after `done` steps (rank 0 writes it)."""
        if self.checkpointer is None:
            return None
        sharded = distributed.shards_parameters()  # then every rank writes its shards
        if not (sharded or distributed.is_main()):
            return self.checkpointer.root
        self._count_guarded_steps()
        state = {
            "outcome": asdict(self.outcome),
            "best": self.best.state_dict(),
            "guard": self.guard.state_dict(),
            "extra": self.extra,
            "rng": capture_rng(),
        }
        if self.settings.checkpoint == "trajectory":
            path = self._save_trajectory(done, state)
        else:
            state["optimizer"] = distributed.local_state(self.optimizer.state_dict())
            weights = {n: distributed.local(p) for n, p in self.optimizer.trainable().items()}
            path = self.checkpointer.save(done, weights, self.best.weights, state)
        log.info("checkpoint after step %d: %s", done, path)
        return path

    def _save_trajectory(self, done: int, state: dict[str, Any]) -> Path:
        """A trajectory checkpoint: the steps so far and the small state; the weights are those
        of `weights_step` (the best-dev step once restored), with a copy of the best-dev weights
        to rebuild on the way when training went past them."""
        path = self.trajectory.path
        written = read_trajectory(path) if path is not None and path.is_file() else []
        lines = [e for e in written if e.step <= done]
        if [e.step for e in lines] != list(range(1, done + 1)):  # resumed from an older run
            log.info("the trajectory does not hold every step up to %d: a full checkpoint", done)
            state["optimizer"] = self.optimizer.state_dict()
            weights = self.optimizer.trainable()
            return self.checkpointer.save(done, weights, self.best.weights, state)
        state["optimizer"] = self.optimizer.small_state_dict()
        state["weights_step"] = done if self.weights_step is None else self.weights_step
        state["best_copy"] = self.best.weights is not None
        return self.checkpointer.save(done, None, None, state, trajectory=as_text(lines))

    def _count_guarded_steps(self) -> None:
        self.outcome.skipped_steps = self.guard.skipped
        self.outcome.steps_below_resolution = self.guard.below_resolution

    def _restore(self, checkpoint: Checkpoint) -> int:
        """Continue from a checkpoint: weights, optimizer, counters, best-dev, guard and RNG."""
        state = checkpoint.state
        if checkpoint.kind == "trajectory":
            best_weights = self._replay(checkpoint)
            self.optimizer.load_small_state_dict(state["optimizer"])
        else:
            load_weights(self.optimizer.trainable(), checkpoint.weights_file)
            self.optimizer.load_state_dict(state["optimizer"])
            best_weights = checkpoint.best_weights()
        self.outcome = TrainingOutcome(**state["outcome"])
        self.outcome.resumed_at.append(checkpoint.step)
        self.best.load_state_dict(state["best"], best_weights)
        self.guard.load_state_dict(state["guard"])
        restore_rng(state["rng"])
        self.metrics.truncate_after(checkpoint.step)
        if checkpoint.kind == "trajectory":  # the checkpoint's copy is the steps up to it
            self.trajectory.replace(checkpoint.path / TRAJECTORY_FILE, checkpoint.step)
        else:
            self.trajectory.truncate_after(checkpoint.step)
        log.info(
            "resuming from %s (step %d of %d)%s",
            checkpoint.path,
            checkpoint.step,
            self.settings.steps,
            ": training is complete, 0 steps to train; evaluating the trained state"
            if checkpoint.step >= self.settings.steps
            else "",
        )
        return checkpoint.step

    def _replay(self, checkpoint: Checkpoint) -> dict[str, torch.Tensor] | None:
        """Rebuild the checkpoint's weights (and a ZO method's per-coordinate state) by applying
        its trajectory to the freshly built model, keeping a copy of the best-dev weights on the
        way when the checkpoint had one; that copy."""
        state = checkpoint.state
        target, best_step = state["weights_step"], state["best"]["step"]
        entries = steps_up_to(checkpoint.path / TRAJECTORY_FILE, target)
        params = self.optimizer.trainable()

        def copy() -> dict[str, torch.Tensor]:
            return {
                n: distributed.local(p).detach().to("cpu", copy=True) for n, p in params.items()
            }

        best = copy() if state["best_copy"] and best_step == 0 else None

        def keep_best(step: int) -> None:
            nonlocal best
            if state["best_copy"] and step == best_step:
                best = copy()

        started = time.time()
        apply_steps(self.optimizer, entries, keep_best)
        log.info(
            "replayed %d steps of %s in %.1f s", target, checkpoint.path, time.time() - started
        )
        return best


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def train(
    cfg: DictConfig, optimizer: Optimizer, splits: Splits, evaluate: Evaluator, metrics: MetricsLog
) -> TrainingOutcome:
    """One uninterrupted training loop without checkpoints (tests and benchmarks)."""
    settings = TrainingSettings.from_config(cfg)
    return Trainer(settings, optimizer, splits, evaluate, TrainingRecord(metrics)).run()

"""The training loop: mini-batches, optimizer steps, metrics lines, dev evaluation, best-dev state."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from zoft.optim.base import Optimizer, StepResult
from zoft.outputs import MetricsLog
from zoft.scoring import Scorer
from zoft.tasks.base import Example, Splits, Task

log = logging.getLogger(__name__)


def batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless mini-batches; epoch e is a permutation drawn from (seed, e), so the order can be
    rebuilt from (epoch, position) alone."""
    size = min(batch_size, len(examples))
    epoch = 0
    while True:
        order = np.random.RandomState([seed % 2**32, epoch]).permutation(len(examples))
        for start in range(0, len(order) - size + 1, size):
            yield [examples[i] for i in order[start : start + size]]
        epoch += 1


@dataclass
class Evaluator:
    """The task metric of the model's predictions, computed in eval mode."""

    task: Task
    scorer: Scorer
    model: torch.nn.Module
    batch_size: int

    def __call__(self, examples: Sequence[Example]) -> dict[str, float]:
        was_training = self.model.training
        predictions = self.scorer.predict(self.model, examples, self.batch_size)
        self.model.train(was_training)
        return self.task.score(predictions, examples)


@dataclass
class TrainingOutcome:
    """Counters and results of one training loop, for result.json."""

    steps: int = 0
    forwards: int = 0
    backwards: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    best_step: int = 0
    best_dev: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, result: StepResult) -> None:
        self.steps += 1
        self.forwards += result.forwards
        self.backwards += result.backwards
        self.first_loss = result.loss if self.first_loss is None else self.first_loss
        self.last_loss = result.loss


class BestDevState:
    """The best dev result so far and, when training went on past it, a CPU copy of its weights."""

    def __init__(self, params: dict[str, torch.nn.Parameter], metric: str) -> None:
        self.params = params
        self.metric = metric
        self.value = float("-inf")
        self.step = 0
        self.scores: dict[str, float] = {}
        self._state: dict[str, torch.Tensor] | None = None

    def offer(self, step: int, scores: dict[str, float], is_last: bool) -> None:
        if scores[self.metric] <= self.value:
            return
        self.value, self.step, self.scores = scores[self.metric], step, scores
        # the current weights are the best ones: a copy is only needed if training goes on
        self._state = (
            None
            if is_last
            else {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}
        )

    @torch.no_grad()
    def restore(self) -> None:
        if self._state is None:
            return
        log.info("restoring the best-dev state of step %d", self.step)
        for name, p in self.params.items():
            p.copy_(self._state[name].to(p.device))


def train(
    cfg: DictConfig, optimizer: Optimizer, splits: Splits, evaluate: Evaluator, metrics: MetricsLog
) -> TrainingOutcome:
    """The training loop: steps, periodic log lines and dev evaluation, best-dev state kept."""
    outcome = TrainingOutcome()
    dev_key = f"dev_{evaluate.task.metric}"
    best = BestDevState(optimizer.trainable(), evaluate.task.metric)
    stream = batches(splits.train, cfg.batch_size, cfg.seed)
    started, seen = time.time(), 0
    bar = tqdm(total=cfg.steps, desc="train", disable=None, dynamic_ncols=True)
    for step in range(cfg.steps):
        batch = next(stream)
        result = optimizer.step(batch, step)
        seen += len(batch)
        outcome.record(result)
        elapsed = time.time() - started
        record: dict[str, Any] = {
            "step": step + 1,
            "loss": result.loss,
            "lr": result.lr,
            "projected_grad": result.projected_grad,
            "elapsed_s": round(elapsed, 3),
            "examples_per_s": round(seen / max(elapsed, 1e-9), 3),
            "forwards": outcome.forwards,
            "backwards": outcome.backwards,
        }
        is_last = step + 1 == cfg.steps
        if splits.dev and (is_last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            dev = evaluate(splits.dev)
            record[dev_key] = dev[evaluate.task.metric]
            best.offer(step + 1, dev, is_last)
        if (step + 1) % cfg.log_every == 0 or is_last or dev_key in record:
            metrics.write(record)
            dev_text = f" {dev_key} {record[dev_key]:.4f}" if dev_key in record else ""
            log.info("step %d/%d loss %.4f%s", step + 1, cfg.steps, result.loss, dev_text)
        bar.update(1)
        bar.set_postfix(loss=f"{result.loss:.4f}")
    bar.close()
    best.restore()
    outcome.best_step, outcome.best_dev = best.step, best.scores
    outcome.seconds = time.time() - started
    return outcome

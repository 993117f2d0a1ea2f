"""run(cfg) -> result: seed, build model/task/optimizer, evaluate, train, evaluate, write outputs."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import zoft
from zoft.memory import MemoryTracker
from zoft.models import load_model
from zoft.optim import build_optimizer
from zoft.optim.base import Optimizer, StepResult
from zoft.outputs import (
    RESULT_FILE,
    MetricsLog,
    atomic_write,
    attach_file_log,
    environment,
    read_result,
    write_json,
)
from zoft.scoring import Scorer, build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Example, Splits, Task
from zoft.tasks.sampling import load_splits

log = logging.getLogger(__name__)

# Keys that do not change what a run computes, left out of the output-directory hash.
_NON_SEMANTIC = ("output_dir", "results_dir", "log_every", "eval_batch_size", "device")


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def config_digest(cfg: DictConfig) -> str:
    data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in _NON_SEMANTIC:
        data.pop(key, None)
    data.get("task", {}).pop("data_dir", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def resolve_output_dir(cfg: DictConfig) -> Path:
    """cfg.output_dir, else results_dir/task/model/optimizer/seed-data_seed-<config hash>."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    leaf = f"seed{cfg.seed}-data{cfg.data_seed}-{config_digest(cfg)}"
    return Path(cfg.results_dir) / cfg.task.name / cfg.model.name / cfg.optimizer.name / leaf


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _base_result(cfg: DictConfig) -> dict[str, Any]:
    hyper = OmegaConf.to_container(cfg.optimizer, resolve=True, enum_to_str=True)
    hyper.update({k: _value(cfg[k]) for k in ("steps", "batch_size", "eval_every", "dtype")})
    return {
        "status": "running",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "optimizer": cfg.optimizer.name,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "protocol": _value(cfg.task.protocol),
        "k": cfg.task.k if _value(cfg.task.protocol) == "kshot" else None,
        "hyperparameters": hyper,
        "zoft_version": zoft.__version__,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _execute(cfg: DictConfig, out_dir: Path, result: dict[str, Any]) -> None:
    tracker = MemoryTracker()
    started = time.time()
    seed_everything(cfg.seed)
    task = get_task(cfg.task.name)
    splits = load_splits(task, cfg.task, cfg.data_seed)
    result.update(
        num_train=len(splits.train),
        num_dev=len(splits.dev),
        num_test=len(splits.test),
        data_source=splits.source,
        data_notes=splits.notes,
    )
    log.info(
        "%s: %d train / %d dev / %d test examples from %s",
        task.name,
        len(splits.train),
        len(splits.dev),
        len(splits.test),
        splits.source,
    )
    with tracker.phase("load"):
        loaded = load_model(cfg.model, _value(cfg.dtype), cfg.device, len(task.label_names))
    model = loaded.model
    result.update(model_source=loaded.source, model_notes=loaded.notes)
    kind = _value(cfg.model.kind)
    scorer = build_scorer(kind, task, loaded.tokenizer, cfg.task.template, cfg.model.max_length)
    evaluate = Evaluator(task, scorer, model, cfg.eval_batch_size)
    if cfg.zero_shot:
        log.info("zero-shot evaluation of %s on the test set", cfg.model.name)
        with tracker.phase("zero_shot"):
            result["zero_shot"] = evaluate(splits.test)
        log.info("zero-shot test %s", result["zero_shot"])
    optimizer = build_optimizer(cfg.optimizer, model, scorer, cfg.steps, cfg.seed)
    metrics = MetricsLog(
        out_dir / "metrics.jsonl", out_dir / "metrics.csv" if cfg.logger.name == "csv" else None
    )
    with tracker.phase("train"):
        outcome = train(cfg, optimizer, splits, evaluate, metrics)
    with tracker.phase("eval"):
        if outcome.steps == 0 and "zero_shot" in result:
            result["test"] = result["zero_shot"]
        else:
            result["test"] = evaluate(splits.test)
    log.info("test %s", result["test"])
    result.update(
        dev=outcome.best_dev or None,
        best_step=outcome.best_step,
        steps=outcome.steps,
        forward_passes=outcome.forwards,
        backward_passes=outcome.backwards,
        train_loss_first=outcome.first_loss,
        train_loss_last=outcome.last_loss,
        train_time_s=round(outcome.seconds, 2),
        optimizer_stats=optimizer.stats(),
        memory=tracker.phases,
        wall_time_s=round(time.time() - started, 2),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment into its run directory; a finished directory is not run again."""
    out_dir = resolve_output_dir(cfg)
    previous = read_result(out_dir)
    if previous and previous.get("status") == "complete":
        log.info("skipping %s: already complete", out_dir)
        return {**previous, "skipped": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    _set_aside_partial_metrics(out_dir)
    atomic_write(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    handler = attach_file_log(out_dir)
    log.info("run directory %s", out_dir)
    result = _base_result(cfg)
    result["output_dir"] = str(out_dir)
    result.update(environment())
    try:
        _execute(cfg, out_dir, result)
        result["status"] = "complete"
    except BaseException as err:
        result["status"] = "failed"
        result["reason"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(out_dir / RESULT_FILE, result)
        logging.getLogger().removeHandler(handler)
        handler.close()
    return copy.deepcopy(result)


def _set_aside_partial_metrics(out_dir: Path) -> None:
    """A failed earlier attempt keeps its metrics under a new name rather than being appended to."""
    for name in ("metrics.jsonl", "metrics.csv"):
        path = out_dir / name
        if path.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            path.rename(out_dir / f"{path.stem}.{stamp}{path.suffix}")

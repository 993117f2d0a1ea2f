"""Guards: a NaN injected into the loss stops the run or skips the batch without touching the
weights; too many skips, a diverging loss and updates below the weights' resolution are caught."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from omegaconf import DictConfig

from tests.conftest import compose
from tests.methods import method_params, quick_overrides
from zoft.models.adapters import add_adapter
from zoft.models.loading import load_model
from zoft.optim import build_optimizer
from zoft.optim.base import NonFiniteStep
from zoft.run.guards import GuardError, GuardSettings
from zoft.run.loggers import MetricsLog
from zoft.run.runner import seed_everything
from zoft.run.trainer import Evaluator, Trainer, TrainingRecord, TrainingSettings
from zoft.scoring import build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Splits


def _method(name: str) -> list[str]:
    # a large lr so the weights move; a constant schedule, and AdaLoRA's rank budget held at
    # its initial size (its cubic decay spans the run), so runs of different lengths take the
    # same first steps
    return quick_overrides(name, lr=1e-3, zo_lr=1e-3, schedule="constant", tinit=100)


class Poisoned:
    """The scorer with its losses multiplied by `factor` (NaN injects a non-finite loss)."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.factor = 1.0

    def loss(self, model, examples):
        return self.scorer.loss(model, examples) * self.factor

    def loss_sum(self, model, examples):
        total, weight = self.scorer.loss_sum(model, examples)
        return total * self.factor, weight

    def __getattr__(self, name):
        return getattr(self.scorer, name)


def _trainer(data_dir, tmp_path, overrides: list[str], factors, dtype: str = "fp32"):
    """A Trainer on tiny-opt whose loss at step i is multiplied by factors(i)."""
    cfg: DictConfig = compose(["model=tiny-opt", "batch_size=4", "log_every=1", *overrides])
    seed_everything(cfg.seed)
    task = get_task("sst2")
    examples = task.load_local("train", data_dir)[:16]
    loaded = load_model(cfg.model, dtype, "cpu", len(task.label_names))
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    add_adapter(loaded.model, cfg.optimizer, cfg.model)
    objective = Poisoned(scorer)
    optimizer = build_optimizer(cfg.optimizer, loaded.model, objective, cfg.steps, cfg.seed)
    step = optimizer.step

    def poisoned_step(batch, index):
        objective.factor = factors(index)
        return step(batch, index)

    optimizer.step = poisoned_step
    evaluate = Evaluator(task, scorer, loaded.model, 8)
    splits = Splits(examples, [], examples[:4], "test")
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    settings = TrainingSettings.from_config(cfg)
    return Trainer(settings, optimizer, splits, evaluate, TrainingRecord(metrics)), loaded.model


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _poison_at(step: int):
    return lambda i: math.nan if i == step else 1.0


def _never(step: int) -> float:
    return 1.0


@pytest.mark.parametrize("method", method_params())
def test_nan_loss_stops_before_any_update(method, data_dir, tmp_path):
    clean, clean_model = _trainer(data_dir, tmp_path, [*_method(method), "steps=2"], _never)
    clean.run()
    trainer, model = _trainer(data_dir, tmp_path, [*_method(method), "steps=4"], _poison_at(2))
    with pytest.raises(NonFiniteStep, match=r"step 3: non-finite .*guard\.nonfinite=skip"):
        trainer.run()
    after, expected = _weights(model), _weights(clean_model)
    assert all(torch.equal(after[n], expected[n]) for n in expected), method


@pytest.mark.parametrize("method", method_params())
def test_nan_loss_is_skipped_under_the_skip_policy(method, data_dir, tmp_path):
    clean, clean_model = _trainer(data_dir, tmp_path, [*_method(method), "steps=3"], _never)
    clean.run()
    (tmp_path / "metrics.jsonl").unlink()
    overrides = [*_method(method), "steps=4", "guard.nonfinite=skip"]
    trainer, model = _trainer(data_dir, tmp_path, overrides, _poison_at(3))
    outcome = trainer.run()
    assert outcome.skipped_steps == 1 and outcome.steps == 3
    after, expected = _weights(model), _weights(clean_model)
    assert all(torch.equal(after[n], expected[n]) for n in expected), method
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert '"skipped": "step 4: non-finite loss' in lines[-1]


def test_too_many_skipped_batches_stop_the_run(data_dir, tmp_path):
    overrides = ["optimizer=mezo", "steps=5", "guard.nonfinite=skip", "guard.max_skipped=2"]
    trainer, _ = _trainer(data_dir, tmp_path, overrides, lambda i: math.inf)
    with pytest.raises(GuardError, match=r"3 batches had non-finite losses.*max_skipped=2"):
        trainer.run()


def test_a_diverging_loss_stops_the_run(data_dir, tmp_path):
    overrides = ["optimizer=mezo", "steps=40", "guard.divergence=3"]
    trainer, _ = _trainer(data_dir, tmp_path, overrides, lambda i: 1.0 + i)
    with pytest.raises(GuardError, match=r"the loss diverged.*guard\.divergence=3"):
        trainer.run()
    steady, _ = _trainer(data_dir, tmp_path, overrides, _never)
    assert steady.run().steps == 40


def test_updates_below_the_weight_resolution_are_warned_about(data_dir, tmp_path, caplog):
    overrides = ["optimizer=mezo", "optimizer.lr=1e-9", "steps=3"]
    trainer, _ = _trainer(data_dir, tmp_path, overrides, _never, dtype="bf16")
    with caplog.at_level(logging.WARNING, logger="zoft.run.guards"):
        outcome = trainer.run()
    assert outcome.steps_below_resolution == 3
    assert sum("below half the resolution" in r.message for r in caplog.records) == 1
    caplog.clear()
    fine, _ = _trainer(data_dir, tmp_path, ["optimizer=mezo", "steps=3"], _never)
    with caplog.at_level(logging.WARNING, logger="zoft.run.guards"):
        assert fine.run().steps_below_resolution == 0
    assert not caplog.records


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"nonfinite": "ignore"}, "guard.nonfinite='ignore' is invalid"),
        ({"max_skipped": -1}, "must be at least 0"),
    ],
)
def test_bad_guard_settings_are_refused(settings, message):
    with pytest.raises(GuardError, match=message):
        GuardSettings(**settings)

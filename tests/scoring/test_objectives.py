"""Metric objectives: loss = −metric of the scorer's predictions on the batch, refused where the
task or the optimizer does not fit, and trained end to end with MeZO."""

import logging
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import compose, tiny
from zoft.optim.perturb import PerturbationEngine
from zoft.registry import UnknownNameError
from zoft.run.checks import validate
from zoft.run.runner import run
from zoft.scoring import build_scorer
from zoft.scoring.base import Doubled, Objective, halves
from zoft.scoring.objectives import (
    MetricObjective,
    ObjectiveError,
    build_objective,
    check_objective,
)
from zoft.tasks import get_task
from zoft.tasks.base import Example


class FixedPredictions:
    """A scorer stand-in whose predictions are given; records how predict was called."""

    def __init__(self, task, predictions):
        self.task = task
        self.predictions = predictions
        self.calls = []

    def predict(self, model, examples, batch_size):
        self.calls.append(batch_size)
        return self.predictions


def _qa(*answers: str) -> Example:
    return Example({"title": "t", "context": "c", "question": "q", "answers": answers}, 0)


def test_loss_objective_is_the_scorer_itself():
    scorer = build_scorer("causal_lm", get_task("sst2"), tiny("opt").tokenizer, "mezo", 64)
    assert build_objective("loss", scorer) is scorer


def test_accuracy_loss_is_minus_the_batch_accuracy_of_given_predictions():
    examples = [Example({"sentence": "s"}, label) for label in (0, 1, 1, 0)]
    scorer = FixedPredictions(get_task("sst2"), [0, 1, 0, 0])
    objective = build_objective("accuracy", scorer)
    loss = objective.loss(None, examples)
    assert isinstance(loss, torch.Tensor) and loss.item() == pytest.approx(-0.75)
    assert scorer.calls == [4]  # the whole batch in one prediction call
    assert objective.task is scorer.task  # the metric is the scorer's task's


def test_f1_loss_is_minus_the_batch_f1_of_given_predictions():
    examples = [_qa("Denver Broncos"), _qa("Saint Bernadette", "Bernadette"), _qa("1858")]
    scorer = FixedPredictions(get_task("squad"), ["the Denver Broncos", "Bernadette Soubirous", ""])
    loss = build_objective("f1", scorer).loss(None, examples)
    # F1 per example: 1 (articles dropped), 2/3 (best over golds), 0
    assert loss.item() == pytest.approx(-(1 + 2 / 3 + 0) / 3)


def test_accuracy_objective_on_tiny_opt_equals_minus_accuracy(data_dir):
    loaded = tiny("opt")
    task = get_task("sst2")
    examples = task.load_local("train", data_dir)[:8]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 128)
    objective = build_objective("accuracy", scorer)
    assert isinstance(objective, MetricObjective)
    predictions = scorer.predict(loaded.model, examples, 8)
    accuracy = sum(p == ex.label for p, ex in zip(predictions, examples, strict=True)) / 8
    assert objective.loss(loaded.model, examples).item() == pytest.approx(-accuracy)


def test_f1_objective_on_tiny_opt_equals_minus_f1(data_dir):
    loaded = tiny("opt")
    task = get_task("squad")
    examples = task.load_local("train", data_dir)[:2]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 128)
    scorer.max_new_tokens = 4
    objective = build_objective("f1", scorer)
    answers = scorer.predict(loaded.model, examples, 2)
    expected = task.score(answers, examples)["f1"]
    assert objective.loss(loaded.model, examples).item() == pytest.approx(-expected)


def _metric_case(data_dir, task_name, metric, n):
    loaded = tiny("opt")
    task = get_task(task_name)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 128)
    scorer.max_new_tokens = 4
    objective = build_objective(metric, scorer)
    model = loaded.model.eval()
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    engine = PerturbationEngine(model, params, seed=7, probes="paired")
    return model, scorer, objective, engine, task.load_local("train", data_dir)[:n]


@pytest.mark.parametrize(
    ("task_name", "metric", "n"), [("sst2", "accuracy", 8), ("squad", "f1", 3)]
)
def test_paired_metric_losses_are_minus_the_metric_at_each_probe(data_dir, task_name, metric, n):
    """One forward over [B; B] under a paired probe gives (−metric₊, −metric₋): the metric of θ+εz
    and of θ−εz, each computed on its own (perturb, evaluate, perturb the other way, evaluate)."""
    model, scorer, objective, engine, examples = _metric_case(data_dir, task_name, metric, n)
    assert isinstance(objective, Objective) and isinstance(scorer, Objective)
    step, eps = 2, 5e-2
    with torch.no_grad():
        plus, minus = (
            engine.loss_at(step, sign * eps, lambda: objective.loss_sum(model, examples))
            for sign in (1.0, -1.0)
        )
        answers = [
            engine.loss_at(step, sign * eps, lambda: scorer.predict(model, examples, n))
            for sign in (1.0, -1.0)
        ]
        with engine.paired_probe(step, eps).installed():
            paired_plus, paired_minus = objective.loss_sum_pair(model, examples)
            pair_answers = halves(scorer.predict_prompts(model, Doubled(scorer.prompts(examples))))
    assert [list(a) for a in pair_answers] == answers  # each half predicts as its probe alone
    for (got, got_n), (want, want_n) in ((paired_plus, plus), (paired_minus, minus)):
        assert got_n == want_n == n and got.item() == want.item()
        assert -n <= got.item() <= 0.0  # −metric × batch size, not a cross-entropy


def test_paired_probes_pair_a_metric_objective_end_to_end(tmp_path, data_dir, caplog):
    """objective=accuracy with optimizer.probes=paired: the first step's check finds the paired
    −accuracy equal to the sequential one and keeps pairing (no fallback, no error)."""
    cfg = compose(
        [
            "model=tiny-opt",
            "task=sst2",
            "optimizer=mezo",
            "optimizer.probes=paired",
            "objective=accuracy",
            "steps=3",
            "batch_size=4",
            "zero_shot=false",
            "task.kshot_test_cap=8",
            f"task.data_dir={data_dir}",
            f"results_dir={tmp_path}",
        ]
    )
    with caplog.at_level(logging.INFO, logger="zoft.optim.probes"):
        result = run(cfg)
    assert result["status"] == "complete" and result["steps"] == 3
    assert result["optimizer_stats"]["paired_probes"] == 1.0
    probes = [r for r in caplog.records if r.name.startswith("zoft.optim")]
    assert not [r for r in probes if r.levelno >= logging.WARNING]  # no fallback
    assert any("paired probes agree" in r.getMessage() for r in probes)


@pytest.mark.parametrize(
    ("name", "task", "zeroth_order", "fix"),
    [
        ("accuracy", "sst2", False, "optimizer=mezo"),  # ft cannot follow a metric
        ("f1", "squad", False, "optimizer=mezo"),
        ("f1", "sst2", True, "objective=accuracy"),
        ("accuracy", "squad", True, "objective=f1"),
    ],
)
def test_misfitting_objectives_are_refused_with_the_fix(name, task, zeroth_order, fix):
    with pytest.raises(ObjectiveError, match=fix):
        check_objective(name, get_task(task), zeroth_order)


def test_fitting_objectives_pass():
    for name, task, zeroth_order in [
        ("loss", "sst2", False),
        ("loss", "squad", True),
        ("accuracy", "sst2", True),
        ("f1", "squad", True),
    ]:
        check_objective(name, get_task(task), zeroth_order)


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="accuracy, f1, loss"):
        check_objective("acuracy", get_task("sst2"), True)
    with pytest.raises(UnknownNameError, match="Did you mean 'accuracy'"):
        build_objective("acuracy", SimpleNamespace())


def test_mezo_on_accuracy_runs_end_to_end(tmp_path, data_dir):
    cfg = compose(
        [
            "model=tiny-opt",
            "task=sst2",
            "optimizer=mezo",
            "objective=accuracy",
            "steps=2",
            "batch_size=4",
            "zero_shot=false",
            "task.kshot_test_cap=8",
            f"task.data_dir={data_dir}",
            f"results_dir={tmp_path}",
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete" and result["objective"] == "accuracy"
    assert result["steps"] == 2 and result["backward_passes"] == 0
    for loss in (result["train_loss_first"], result["train_loss_last"]):
        assert -1.0 <= loss <= 0.0 and (4 * loss).is_integer()  # −accuracy of 4 examples


def test_first_order_on_a_metric_fails_before_loading_anything(tmp_path, monkeypatch):
    import zoft.run.runner

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may be loaded for an invalid config")

    monkeypatch.setattr(zoft.run.runner, "load_model", forbidden)
    monkeypatch.setattr(zoft.run.runner, "load_splits", forbidden)
    cfg = compose(
        [
            "model=tiny-opt",
            "optimizer=ft",
            "objective=accuracy",
            "steps=2",
            f"results_dir={tmp_path / 'runs'}",
        ]
    )
    with pytest.raises(ObjectiveError, match="zeroth-order"):
        validate(cfg)
    with pytest.raises(ObjectiveError):
        run(cfg)
    assert not (tmp_path / "runs").exists()  # no run directory either

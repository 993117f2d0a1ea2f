"""Metric objectives: loss = −metric of the scorer's predictions on the batch, refused where the
task or the optimizer does not fit, and trained end to end with MeZO."""

from types import SimpleNamespace

import pytest
import torch

from tests.conftest import compose, tiny
from zoft.registry import UnknownNameError
from zoft.run.checks import validate
from zoft.run.runner import run
from zoft.scoring import build_scorer
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
    assert objective.task is scorer.task  # everything else is the scorer's


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

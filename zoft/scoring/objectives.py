"""What a zeroth-order optimizer minimises: the loss, or minus a non-differentiable metric of
the batch (MeZO Table 3: accuracy for classification, F1 for SQuAD)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoft.errors import ZoftError
from zoft.registry import Registry
from zoft.scoring.base import Doubled, LossSum, Objective, Scorer, halves
from zoft.tasks.base import Example, Task

OBJECTIVES: Registry = Registry("objective")


class ObjectiveError(ZoftError):
    """An objective that does not fit the task or the optimizer."""


class MetricObjective:
    """The Objective loss = −metric(batch), from the scorer's predictions (not differentiable:
    for zeroth-order optimizers only)."""

    def __init__(self, scorer: Scorer, metric: str) -> None:
        self.scorer = scorer
        self.metric = metric

    @property
    def task(self) -> Task:
        """The task whose metric this is (the scorer's)."""
        return self.scorer.task

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        total, weight = self.loss_sum(model, examples)
        return total / weight

    def loss_sum(self, model: torch.nn.Module, examples: Sequence[Example]) -> LossSum:
        """(−metric × batch size, batch size): the metric is a mean over examples."""
        predictions = self.scorer.predict(model, examples, len(examples))
        return self._negated(predictions, examples)

    def loss_sum_pair(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[LossSum, LossSum]:
        """(−metric₊, −metric₋) × batch size, each from its half of one forward over [B; B]."""
        model.eval()
        pair = Doubled(self.scorer.prompts(examples))
        first, second = halves(self.scorer.predict_prompts(model, pair))
        return self._negated(first, examples), self._negated(second, examples)

    def _negated(self, predictions: Sequence[Any], examples: Sequence[Example]) -> LossSum:
        value = self.task.score(list(predictions), examples)[self.metric]
        return torch.tensor(-float(value) * len(examples)), len(examples)


@OBJECTIVES.register("loss", generative=None)
def _loss(scorer: Scorer) -> Scorer:
    return scorer


@OBJECTIVES.register("accuracy", generative=False)
def _accuracy(scorer: Scorer) -> MetricObjective:
    return MetricObjective(scorer, "accuracy")


@OBJECTIVES.register("f1", generative=True)
def _f1(scorer: Scorer) -> MetricObjective:
    return MetricObjective(scorer, "f1")


def check_objective(name: str, task: Task, zeroth_order: bool) -> None:
    """Refuse an objective that cannot work with this task and optimizer, before any loading."""
    OBJECTIVES.get(name)
    if name == "loss":
        return
    if not zeroth_order:
        raise ObjectiveError(
            f"objective={name} is not differentiable: it needs a zeroth-order optimizer "
            "(e.g. optimizer=mezo), or use objective=loss"
        )
    if OBJECTIVES.meta(name)["generative"] != task.generative:
        fitting = "f1" if task.generative else "accuracy"
        raise ObjectiveError(
            f"objective={name} does not fit task {task.name}; use objective={fitting} (or loss)"
        )


def build_objective(name: str, scorer: Scorer) -> Objective:
    """The object whose `loss` the optimizer minimises (the scorer itself for objective=loss)."""
    return OBJECTIVES.get(name)(scorer)

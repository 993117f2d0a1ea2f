"""What a zeroth-order optimizer minimises: the loss, or minus a non-differentiable metric of
the batch (MeZO Table 3: accuracy for classification, F1 for SQuAD)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoft.errors import ZoftError
from zoft.registry import Registry
from zoft.scoring.base import Scorer
from zoft.tasks.base import Example, Task

OBJECTIVES: Registry = Registry("objective")


class ObjectiveError(ZoftError):
    """An objective that does not fit the task or the optimizer."""


class MetricObjective:
    """Stands in for the scorer with loss = −metric(batch); everything else is the scorer's."""

    def __init__(self, scorer: Scorer, metric: str) -> None:
        self.scorer = scorer
        self.metric = metric

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        total, weight = self.loss_sum(model, examples)
        return total / weight

    def loss_sum(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[torch.Tensor, int]:
        """(−metric × batch size, batch size): the metric is a mean over examples."""
        predictions = self.scorer.predict(model, examples, len(examples))
        value = self.scorer.task.score(predictions, examples)[self.metric]
        return torch.tensor(-float(value) * len(examples)), len(examples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)


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


def build_objective(name: str, scorer: Scorer) -> Any:
    """The object whose `loss` the optimizer minimises (the scorer itself for objective=loss)."""
    return OBJECTIVES.get(name)(scorer)

"""What every optimizer is given and returns, so the runner treats all methods alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoft.errors import ZoftError
from zoft.scoring import Scorer
from zoft.tasks.base import Example


@dataclass
class StepResult:
    loss: float  # the logged training loss (L(θ+εz) for ZO methods)
    lr: float
    forwards: int
    backwards: int
    projected_grad: float | None = None


class Optimizer(ABC):
    """One training method: owns its state and performs one step on a mini-batch."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Scorer, total_steps: int, seed: int
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.scorer = scorer
        self.total_steps = total_steps
        self.seed = seed

    @abstractmethod
    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        """Update the trainable parameters once; `step` counts from 0."""

    def trainable(self) -> dict[str, nn.Parameter]:
        """Trainable parameters by canonical name (tied parameters appear once)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def stats(self) -> dict[str, float]:
        """Method-specific counters for result.json (e.g. parameter passes)."""
        return {}


def loss_value(loss: torch.Tensor) -> float:
    return float(loss.detach().float().item())


def micro_batches(batch: Sequence[Example], count: int) -> list[Sequence[Example]]:
    """`batch` cut into `count` consecutive, nearly equal parts (none empty)."""
    if count < 1:
        raise ZoftError(f"optimizer.micro_batches={count} is invalid: it must be at least 1")
    count = min(count, len(batch)) or 1
    bounds = [round(i * len(batch) / count) for i in range(count + 1)]
    return [batch[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@torch.no_grad()
def batch_loss(scorer: Scorer, model: nn.Module, batch: Sequence[Example], count: int) -> float:
    """The loss of the whole batch computed over `count` micro-batches: Σ summed losses / Σ terms,
    so it equals the one-shot loss up to float summation order."""
    if count == 1:
        return loss_value(scorer.loss(model, batch))
    total, weight = 0.0, 0
    for part in micro_batches(batch, count):
        part_sum, part_weight = scorer.loss_sum(model, part)
        total += float(part_sum.float().item())
        weight += part_weight
    return total / weight


@torch.no_grad()
def batch_loss_pair(
    scorer: Scorer, model: nn.Module, batch: Sequence[Example], count: int
) -> tuple[float, float]:
    """batch_loss of each copy when the batch runs twice over in the same forwards (a paired
    probe: the first copy sees θ+εz, the second θ−εz), over `count` micro-batches."""
    totals, weights = [0.0, 0.0], [0, 0]
    for part in micro_batches(batch, count):
        for copy, (part_sum, part_weight) in enumerate(scorer.loss_sum_pair(model, part)):
            totals[copy] += float(part_sum.float().item())
            weights[copy] += part_weight
    return totals[0] / weights[0], totals[1] / weights[1]

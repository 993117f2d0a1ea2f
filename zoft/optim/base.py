"""What every optimizer is given and returns, so the runner treats all methods alike."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoft.errors import ZoftError
from zoft.run import distributed
from zoft.scoring.base import Objective
from zoft.tasks.base import Example


@dataclass
class StepResult:
    loss: float  # the logged training loss (L(θ+εz) for ZO methods)
    lr: float
    forwards: int
    backwards: int
    projected_grad: float | None = None
    # the size of a typical weight change this step: η·|g| per unit of z (ZO), η (AdamW)
    update_scale: float | None = None
    # a pure ZO step's projected gradient per query: with the step and the keyed directions it is
    # the whole update, so trajectory.jsonl keeps it and zoft-replay re-applies it
    estimates: list[float] | None = None


class NonFiniteStep(ZoftError):
    """A step whose loss or projected gradient is NaN or infinite; no weight was updated."""


def check_finite(step: int, **values: float | None) -> None:
    """Refuse a step before its update when any of its losses or estimates is not finite."""
    bad = {k: v for k, v in values.items() if v is not None and not math.isfinite(v)}
    if bad:
        found = ", ".join(f"{k.replace('_', ' ')} = {v}" for k, v in bad.items())
        raise NonFiniteStep(
            f"step {step + 1}: non-finite {found}; the weights were not updated. Lower the "
            "learning rate (or eps), train in dtype=fp32, or set guard.nonfinite=skip to skip "
            "such batches"
        )


@torch.no_grad()
def weight_resolution(params: Sequence[torch.Tensor]) -> float:
    """About the smallest change a typical weight can take: the coarsest dtype's epsilon times the
    RMS of the weights. An update far below it rounds away (MeZO's η·g in bf16, for instance)."""
    tensors = [p for p in params if p.numel()]
    if not tensors:
        return 0.0
    squares = sum(float(p.detach().float().pow(2).sum()) for p in tensors)
    count = sum(p.numel() for p in tensors)
    eps = max(torch.finfo(p.dtype).eps for p in tensors)
    return eps * math.sqrt(squares / count)


class Optimizer(ABC):
    """One training method: owns its state and performs one step on a mini-batch."""

    # its weights after step k follow from the base model and the steps' estimates alone
    # (StepResult.estimates, apply_update): the runner writes trajectory.jsonl for it
    replayable = False

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Objective, total_steps: int, seed: int
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

    def stats(self) -> dict[str, Any]:
        """Method-specific counters for result.json (e.g. parameter passes, probe decisions)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the trainable weights a resumed run needs to continue exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned (the weights are restored separately)."""
        del state  # a method without such state has nothing to restore

    def weight_resolution(self) -> float:
        """The resolution of the weights this method updates (see weight_resolution)."""
        return weight_resolution(list(self.trainable().values()))


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
def batch_loss(scorer: Objective, model: nn.Module, batch: Sequence[Example], count: int) -> float:
    """The loss of the whole batch computed over `count` micro-batches: Σ summed losses / Σ terms,
    so it equals the one-shot loss up to float summation order. Under data parallelism this rank
    computes its shard and the sums are added over the ranks."""
    if count == 1 and distributed.world_size() == 1:
        return loss_value(scorer.loss(model, batch))
    total, weight = 0.0, 0
    for part in micro_batches(distributed.shard(batch), count):
        part_sum, part_weight = scorer.loss_sum(model, part)
        total += float(part_sum.float().item())
        weight += part_weight
    total, weight = distributed.all_sum([total, weight])
    return total / weight


@torch.no_grad()
def batch_loss_pair(
    scorer: Objective, model: nn.Module, batch: Sequence[Example], count: int
) -> tuple[float, float]:
    """batch_loss of each copy when the batch runs twice over in the same forwards (a paired
    probe: the first copy sees θ+εz, the second θ−εz), over `count` micro-batches."""
    totals, weights = [0.0, 0.0], [0, 0]
    for part in micro_batches(distributed.shard(batch), count):
        for copy, (part_sum, part_weight) in enumerate(scorer.loss_sum_pair(model, part)):
            totals[copy] += float(part_sum.float().item())
            weights[copy] += part_weight
    plus, minus, weight_plus, weight_minus = distributed.all_sum([*totals, *weights])
    return plus / weight_plus, minus / weight_minus

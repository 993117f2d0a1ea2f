"""What every optimizer is given and returns, so the runner treats all methods alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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

"""MeZO: zeroth-order SGD with a two-point SPSA estimate (DESIGN §6.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoft.config import OptimizerConfig
from zoft.optim import OPTIMIZERS
from zoft.optim.base import Optimizer, StepResult, loss_value
from zoft.optim.perturb import PerturbationEngine
from zoft.scoring import Scorer
from zoft.tasks.base import Example


@dataclass
class MezoConfig(OptimizerConfig):
    name: str = "mezo"
    lr: float = 1e-6
    eps: float = 1e-3
    weight_decay: float = 0.0


@OPTIMIZERS.register("mezo", config=MezoConfig, zeroth_order=True)
class MeZO(Optimizer):
    """g = (L(θ+εz) − L(θ−εz)) / 2ε;  θ ← θ − η(g·z + λθ).  Forwards in eval mode, no autograd."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Scorer, total_steps: int, seed: int
    ) -> None:
        super().__init__(cfg, model, scorer, total_steps, seed)
        self.engine = PerturbationEngine(model, self.trainable(), seed)
        self.steps_taken = 0

    @torch.no_grad()
    def projected_gradient(self, batch: Sequence[Example], step: int) -> tuple[float, float]:
        """(g, L₊) for this step's direction; θ is bit-identical afterwards."""
        self.model.eval()
        eps = self.cfg.eps

        def loss() -> float:
            return loss_value(self.scorer.loss(self.model, batch))

        loss_plus = self.engine.loss_at(step, +eps, loss)
        loss_minus = self.engine.loss_at(step, -eps, loss)
        return (loss_plus - loss_minus) / (2 * eps), loss_plus

    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        g, loss_plus = self.projected_gradient(batch, step)
        lr = self.cfg.lr
        self.engine.update(step, coeff=-lr * g, decay=lr * self.cfg.weight_decay)
        self.steps_taken += 1
        return StepResult(loss=loss_plus, lr=lr, forwards=2, backwards=0, projected_grad=g)

    def stats(self) -> dict[str, float]:
        per_step = self.engine.passes / max(self.steps_taken, 1)
        return {"parameter_passes": self.engine.passes, "parameter_passes_per_step": per_step}

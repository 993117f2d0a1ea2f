"""FT: full fine-tuning with AdamW and a linear decay (DESIGN §6.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoft.config import OptimizerConfig
from zoft.optim import OPTIMIZERS
from zoft.optim.base import Optimizer, StepResult, loss_value
from zoft.scoring import Scorer
from zoft.tasks.base import Example


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "ft"
    lr: float = 1e-5
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "linear"  # linear | constant
    max_grad_norm: float = 1.0  # 0 disables clipping


def linear_schedule(warmup: int, total: int, kind: str):
    """Multiplier on the base rate: linear warm-up, then linear decay to 0 (or constant)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def adamw_for(params: dict[str, nn.Parameter], cfg: Any) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and norm weights are 1-D)."""
    groups = [
        {"params": [p for p in params.values() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params.values() if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.adam_eps,
    )


@OPTIMIZERS.register("ft", config=AdamConfig)
class FullFineTuning(Optimizer):
    """One forward and one backward in train mode, then an AdamW step."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Scorer, total_steps: int, seed: int
    ) -> None:
        super().__init__(cfg, model, scorer, total_steps, seed)
        self.params = self.trainable()
        self.optimizer = adamw_for(self.params, cfg)
        factor = linear_schedule(cfg.warmup_steps, total_steps, cfg.schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        self.model.train()
        lr = self.scheduler.get_last_lr()[0]
        loss = self.scorer.loss(self.model, batch)
        loss.backward()
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss=loss_value(loss), lr=lr, forwards=1, backwards=1)

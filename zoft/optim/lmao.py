"""LMAO: per step, on the same mini-batch, an AdamW step on LoRA adapters by backprop and a MeZO
step on every other weight (DESIGN §6.4): "three forwards, one backward".

The base weights never require grad, so the backward builds no graph and no .grad for them; the
ZO phase runs after the LoRA phase (unless zo_first) and so is evaluated at the updated adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoft.config import as_dataclass
from zoft.errors import ZoftError
from zoft.optim.base import (
    Optimizer,
    StepResult,
    batch_loss,
    batch_loss_pair,
    check_finite,
    weight_resolution,
)
from zoft.optim.directions import DIRECTIONS
from zoft.optim.first_order import AMP_DTYPES, BackpropPhase
from zoft.optim.perturb import PerturbationEngine
from zoft.optim.registry import OPTIMIZERS
from zoft.optim.zeroth_order import engine_stats, spsa_estimates
from zoft.scoring.base import Objective
from zoft.tasks.base import Example


@OPTIMIZERS.register("lmao")  # settings and facts: zoft.optim.configs.LmaoConfig
class LMAO(Optimizer):
    """LoRA phase: forward + backward in train mode, AdamW on the adapters (clip 1.0).
    ZO phase: two forwards in eval mode, θ ← θ − η_base(g·z + λθ) on all non-adapter weights."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Objective, total_steps: int, seed: int
    ) -> None:
        super().__init__(cfg, model, scorer, total_steps, seed)
        as_dataclass(cfg).check()
        named = dict(model.named_parameters())
        self.adapter = {n: p for n, p in named.items() if p.requires_grad}
        self.base = {n: p for n, p in named.items() if not p.requires_grad}
        if not self.adapter or not self.base:
            raise ZoftError("optimizer=lmao needs both LoRA adapters and frozen base weights")
        # lora_steps phase steps per run step: the LoRA schedule spans them all
        self.phase = BackpropPhase(
            cfg, model, scorer, self.adapter, total_steps, sub_steps=cfg.lora_steps
        )
        self.zo_device_type = next(iter(self.base.values())).device.type
        directions = DIRECTIONS.get(cfg.directions).from_config(seed, cfg)
        self.engine = PerturbationEngine(
            model,
            self.base,
            seed,
            directions,
            probes=cfg.probes,
            max_memory_ratio=cfg.max_memory_ratio,
            rounding=cfg.rounding,
        )
        self.steps_taken = 0

    def trainable(self) -> dict[str, nn.Parameter]:
        return {**self.adapter, **self.base}

    def lora_phase(self, batch: Sequence[Example], step: int) -> tuple[float, float]:
        """(loss before the first LoRA step, its learning rate)."""
        results = [self.phase.step(batch, step) for _ in range(self.cfg.lora_steps)]
        return results[0]

    @torch.no_grad()
    def zo_phase(self, batch: Sequence[Example], step: int) -> tuple[list[float], float]:
        self.model.eval()

        amp = AMP_DTYPES[self.cfg.zo_amp]

        def autocast() -> torch.autocast:
            return torch.autocast(self.zo_device_type, dtype=amp, enabled=amp is not None)

        def loss() -> float:
            with autocast():
                return batch_loss(self.scorer, self.model, batch, self.cfg.micro_batches)

        def loss_pair() -> tuple[float, float]:
            with autocast():
                return batch_loss_pair(self.scorer, self.model, batch, self.cfg.micro_batches)

        estimates, loss_plus = spsa_estimates(
            self.engine, loss, loss_pair, step, self.cfg.eps, self.cfg.queries
        )
        check_finite(step, zo_loss=loss_plus, projected_gradient=sum(estimates) / len(estimates))
        lr = self.cfg.zo_lr
        coeffs = [-lr * g / len(estimates) for g in estimates]
        self.engine.update(step, coeffs, decay=lr * self.cfg.zo_weight_decay)
        return estimates, loss_plus

    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        if self.cfg.zo_first:
            estimates, _ = self.zo_phase(batch, step)
            loss, lr = self.lora_phase(batch, step)
        else:
            loss, lr = self.lora_phase(batch, step)
            estimates, _ = self.zo_phase(batch, step)
        self.steps_taken += 1
        projected = sum(estimates) / len(estimates)
        return StepResult(
            loss=loss,
            lr=lr,
            forwards=self.cfg.lora_steps + 2 * len(estimates),
            backwards=self.cfg.lora_steps,
            projected_grad=projected,
            update_scale=self.cfg.zo_lr * abs(projected),  # the adapters are fp32
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.state_dict(),
            "engine": self.engine.state_dict(),
            "steps_taken": self.steps_taken,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase.load_state_dict(state["phase"])
        self.engine.load_state_dict(state["engine"])
        self.steps_taken = state["steps_taken"]

    def weight_resolution(self) -> float:
        return weight_resolution(list(self.base.values()))

    def stats(self) -> dict[str, Any]:
        return {
            **engine_stats(self.engine, self.steps_taken),
            "adapter_parameters": sum(p.numel() for p in self.adapter.values()),
            "zo_parameters": sum(p.numel() for p in self.base.values()),
        }

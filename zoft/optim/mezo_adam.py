"""MeZO-Adam: MeZO's estimate g·z taken as the gradient of an AdamW step, the ablation of MeZO
Table 18 (medium_models: --zero_order_use_trainer_optim --optimizer adam puts g·z in param.grad
and steps transformers' AdamW under mezo.sh's constant schedule)."""

from __future__ import annotations

import math
from typing import Any

import torch

from zoft.optim.registry import OPTIMIZERS
from zoft.optim.zeroth_order import ZerothOrderOptimizer, on_devices, state_bytes


@OPTIMIZERS.register("mezo-adam")  # settings and facts: zoft.optim.configs.MezoAdamConfig
class MezoAdam(ZerothOrderOptimizer):
    """With ĝ = (1/q) Σ_q g_q z_q and t the update count:
    m ← β₁m + (1−β₁)ĝ,  v ← β₂v + (1−β₂)ĝ²,  θ ← θ − η·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε_adam),
    then θ ← θ − ηλθ on 2+-dimensional weights (transformers' AdamW: bias-corrected step size,
    decoupled decay after the step; its no-decay groups are the biases and LayerNorm weights).
    m and v are dense fp32 tensors per parameter: two more copies of the weights, in fp32."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.exp_avg: dict[str, torch.Tensor] = {}
        self.exp_avg_sq: dict[str, torch.Tensor] = {}
        self.updates = 0  # Adam's t: steps whose update was applied (skipped batches excluded)

    @torch.no_grad()
    def apply_update(self, step: int, estimates: list[float]) -> None:
        cfg = self.cfg
        self.updates += 1
        t = self.updates
        step_size = cfg.lr * math.sqrt(1.0 - cfg.beta2**t) / (1.0 - cfg.beta1**t)
        decay = cfg.lr * cfg.weight_decay
        for name, p in self.engine.params.items():
            if name not in self.exp_avg:
                self.exp_avg[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                self.exp_avg_sq[name] = torch.zeros_like(self.exp_avg[name])
            m, v = self.exp_avg[name], self.exp_avg_sq[name]

            def add(value, index, rows, name=name, p=p, m=m, v=v):
                grad = self.estimate_block(name, p, step, estimates, index)
                m[rows].mul_(cfg.beta1).add_(grad, alpha=1.0 - cfg.beta1)
                v[rows].mul_(cfg.beta2).addcmul_(grad, grad, value=1.0 - cfg.beta2)
                denom = v[rows].sqrt().add_(cfg.adam_eps)
                value.addcdiv_(m[rows], denom, value=-step_size)
                if decay and p.ndim >= 2:
                    value.mul_(1.0 - decay)

            self.engine.maths.update_parameter(
                name, p, step, 0.0, add
            )  # decay after the step, in add

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "state_bytes": state_bytes(self.exp_avg, self.exp_avg_sq)}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "exp_avg": dict(self.exp_avg),
            "exp_avg_sq": dict(self.exp_avg_sq),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.exp_avg = on_devices(state["exp_avg"], self.engine.params)
        self.exp_avg_sq = on_devices(state["exp_avg_sq"], self.engine.params)
        self.updates = state["updates"]

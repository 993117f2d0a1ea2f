"""MeZO-M: MeZO's estimate g·z fed into heavy-ball momentum, the baseline of LOZO's OPT-13B memory
table and RoBERTa figure. No official code implements it (MeZO's README names a --momentum flag
that its trainer does not have), so its recursion is LOZO-M's with a dense z in place of U Vᵀ:
the only difference between the two methods is then the direction (docs/fidelity.md)."""

from __future__ import annotations

from typing import Any

import torch

from zoft.optim.registry import OPTIMIZERS
from zoft.optim.zeroth_order import ZerothOrderOptimizer, on_devices, state_bytes


@OPTIMIZERS.register("mezo-m")  # settings and facts: zoft.optim.configs.MezoMomentumConfig
class MezoMomentum(ZerothOrderOptimizer):
    """m ← βm + (1−β)·ĝ with ĝ = (1/q) Σ_q g_q z_q;  θ ← θ − η(m + λθ).  The first step sets
    m = ĝ (optimizer.momentum_init=first_estimate, as LOZO-M's official code) or starts from
    m = 0.  m is a dense fp32 tensor per parameter: one more copy of the weights, in fp32."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.momentum: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply_update(self, step: int, estimates: list[float]) -> None:
        beta, lr = self.cfg.beta, self.cfg.lr
        for name, p in self.engine.params.items():
            first = name not in self.momentum
            if first:
                self.momentum[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            state = self.momentum[name]
            take_whole = first and self.cfg.momentum_init == "first_estimate"

            def add(value, index, rows, name=name, p=p, state=state, take_whole=take_whole):
                estimate = self.estimate_block(name, p, step, estimates, index)
                if take_whole:
                    state[rows] = estimate
                else:
                    state[rows].mul_(beta).add_(estimate, alpha=1.0 - beta)
                value.add_(state[rows], alpha=-lr)

            self.engine.maths.update_parameter(name, p, step, lr * self.cfg.weight_decay, add)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "state_bytes": state_bytes(self.momentum)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "momentum": dict(self.momentum)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.momentum = on_devices(state["momentum"], self.engine.params)

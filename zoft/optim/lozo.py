"""LOZO and LOZO-M: zeroth-order SGD with low-rank directions U Vᵀ in a lazily resampled
subspace, and its momentum kept in factored form (DESIGN §6.2, §6.3).

Learning-rate convention: the paper's estimator carries a 1/r factor; the official code drops it
and folds it into η. zoft follows the code (no 1/r), so the published learning rates apply as is.
"""

from __future__ import annotations

from typing import Any

import torch

from zoft.optim.arithmetic import add_low_rank_rows
from zoft.optim.directions import Directions, LowRankDirections
from zoft.optim.registry import OPTIMIZERS
from zoft.optim.zeroth_order import ZerothOrderOptimizer


@OPTIMIZERS.register("lozo")  # settings and facts: zoft.optim.configs.LozoConfig
class LOZO(ZerothOrderOptimizer):
    """c = (L(θ+εUVᵀ) − L(θ−εUVᵀ)) / 2ε;  X ← X − η(c·UVᵀ + λX) with exactly the probed U and V
    (also on the steps that start a new subspace)."""

    def directions(self) -> Directions:
        return LowRankDirections.from_config(self.seed, self.cfg)


@OPTIMIZERS.register("lozo-m")  # settings and facts: zoft.optim.configs.LozoMConfig
class LOZOM(LOZO):
    """N ← βN + (1−β)·c·U (N ∈ ℝ^{m×r});  X ← X − η(N Vᵀ + λX).  When V changes, N is first
    projected onto the new subspace: N ← N (V_oldᵀ V_new) / n, the r×r product formed first.
    1-D parameters keep a dense momentum m ← βm + (1−β)·c·z.  The first step sets N = c·U
    (m = c·z) as the official code does, or starts from zero (optimizer.momentum_init)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # checks the config (LozoMConfig.check)
        self.momentum: dict[str, torch.Tensor] = {}  # m×r factors, or dense for 1-D parameters
        self.momentum_block: dict[str, int] = {}  # the subspace block each factor lives in

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "momentum": dict(self.momentum),
            "momentum_block": dict(self.momentum_block),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = {name: p.device for name, p in self.engine.params.items()}
        self.momentum = {n: t.to(device[n]) for n, t in state["momentum"].items()}
        self.momentum_block = dict(state["momentum_block"])

    @torch.no_grad()
    def apply_update(self, step: int, estimates: list[float]) -> None:
        directions: LowRankDirections = self.engine.directions  # type: ignore[assignment]
        lr = self.cfg.lr
        decay = lr * self.cfg.weight_decay
        weights = [g / len(estimates) for g in estimates]
        for name, p in self.engine.params.items():
            if directions.is_low_rank(p):
                state, v = self._factored_momentum(directions, name, p, step, weights)

                def add(value, index, rows, state=state, v=v):
                    add_low_rank_rows(value, state[rows], v, -lr)
            else:
                state = self._dense_momentum(name, p, step, weights)

                def add(value, index, rows, state=state):
                    value.add_(state[rows], alpha=-lr)

            self.engine.maths.update_parameter(name, p, step, decay, add)  # one sweep over θ

    def _factored_momentum(
        self,
        directions: LowRankDirections,
        name: str,
        p: torch.Tensor,
        step: int,
        weights: list[float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """N after this step's estimate, and the V it pairs with."""
        block = directions.block(step)
        v = directions.v(name, p, block)
        state = self.momentum.get(name)
        estimate = sum(directions.u(name, p, step, query) * w for query, w in enumerate(weights))
        if state is None and self.cfg.momentum_init == "first_estimate":
            state = estimate
        else:
            if state is None:
                state = torch.zeros(p.shape[0], directions.rank, device=p.device)
            elif self.momentum_block[name] != block:
                v_old = directions.v(name, p, self.momentum_block[name])
                state = project_momentum(state, v_old, v)
            state.mul_(self.cfg.beta).add_(estimate, alpha=1.0 - self.cfg.beta)
        self.momentum[name], self.momentum_block[name] = state, block
        return state, v

    def _dense_momentum(
        self, name: str, p: torch.Tensor, step: int, weights: list[float]
    ) -> torch.Tensor:
        state = self.momentum.get(name)
        estimate = sum(
            self.engine.directions.dense(name, p, step, query) * w
            for query, w in enumerate(weights)
        )
        if state is None and self.cfg.momentum_init == "first_estimate":
            state = estimate
        else:
            if state is None:
                state = torch.zeros(p.shape, device=p.device)
            state.mul_(self.cfg.beta).add_(estimate, alpha=1.0 - self.cfg.beta)
        self.momentum[name] = state
        return state


def project_momentum(state: torch.Tensor, v_old: torch.Tensor, v_new: torch.Tensor) -> torch.Tensor:
    """N (V_oldᵀ V_new) / n: the momentum carried into the new subspace, never forming m × n."""
    return state @ ((v_old.T @ v_new) / v_new.shape[0])

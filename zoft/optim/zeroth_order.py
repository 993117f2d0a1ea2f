"""The SPSA step every zeroth-order method shares: q two-point estimates on one batch, one update.

Methods differ only in their directions (Gaussian, low-rank) and in how the estimates become an
update (plain SGD, or momentum), so those are the two hooks a subclass overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from zoft.config import as_dataclass
from zoft.optim.base import (
    Optimizer,
    StepResult,
    batch_loss,
    batch_loss_pair,
    check_finite,
    weight_resolution,
)
from zoft.optim.directions import Directions, GaussianDirections
from zoft.optim.perturb import PerturbationEngine
from zoft.scoring.base import Objective
from zoft.tasks.base import Example


def spsa_estimates(
    engine: PerturbationEngine,
    loss: Callable[[], float],
    loss_pair: Callable[[], tuple[float, float]] | None,
    step: int,
    eps: float,
    queries: int,
) -> tuple[list[float], float]:
    """([g_q] for each query, mean L(θ+εz_q)) with g_q = (L(θ+εz_q) − L(θ−εz_q)) / 2ε, the two
    losses from one paired forward where the engine pairs probes; θ is bit-identical afterwards."""
    estimates, plus = [], []
    for query in range(queries):
        loss_plus, loss_minus = engine.two_point(step, eps, loss, loss_pair, query=query)
        estimates.append((loss_plus - loss_minus) / (2 * eps))
        plus.append(loss_plus)
    return estimates, sum(plus) / len(plus)


class ZerothOrderOptimizer(Optimizer):
    """θ ← θ − η((1/q) Σ_q g_q z_q + λθ): forwards in eval mode, no autograd, constant η. The
    update is apply_update(step, estimates) alone, so a run replays from its trajectory."""

    replayable = True

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Objective, total_steps: int, seed: int
    ) -> None:
        super().__init__(cfg, model, scorer, total_steps, seed)
        as_dataclass(cfg).check()
        self.engine = PerturbationEngine(
            model,
            self.trainable(),
            seed,
            self.directions(),
            probes=cfg.probes,
            max_memory_ratio=cfg.max_memory_ratio,
            rounding=cfg.rounding,
        )
        self.steps_taken = 0

    def directions(self) -> Directions:
        return GaussianDirections.from_config(self.seed, self.cfg)

    @torch.no_grad()
    def projected_gradients(self, batch: Sequence[Example], step: int) -> tuple[list[float], float]:
        """(g per query, mean L₊) for this step's directions; θ is bit-identical afterwards."""
        self.model.eval()

        def loss() -> float:
            return batch_loss(self.scorer, self.model, batch, self.cfg.micro_batches)

        def loss_pair() -> tuple[float, float]:
            return batch_loss_pair(self.scorer, self.model, batch, self.cfg.micro_batches)

        return spsa_estimates(self.engine, loss, loss_pair, step, self.cfg.eps, self.cfg.queries)

    def projected_gradient(self, batch: Sequence[Example], step: int) -> tuple[float, float]:
        """(mean g, mean L₊) over the step's queries."""
        estimates, loss_plus = self.projected_gradients(batch, step)
        return sum(estimates) / len(estimates), loss_plus

    @torch.no_grad()
    def apply_update(self, step: int, estimates: list[float]) -> None:
        lr, queries = self.cfg.lr, len(estimates)
        coeffs = [-lr * g / queries for g in estimates]
        self.engine.update(step, coeffs, decay=lr * self.cfg.weight_decay)

    def estimate_block(
        self, name: str, param: torch.Tensor, step: int, estimates: Sequence[float], index: int
    ) -> torch.Tensor:
        """(1/q) Σ_q g_q z_q on block `index` of row_blocks(param), in fp32: the gradient
        estimate that methods with per-coordinate state (momentum, Adam) feed into it, formed a
        block at a time so that no whole-parameter transient joins their state."""
        directions, total = self.engine.directions, None
        for query, g in enumerate(estimates):
            z = directions.dense_block(name, param, step, query, index)  # a fresh tensor
            total = z.mul_(g) if total is None else total.add_(z, alpha=g)
        return total.div_(len(estimates))

    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        estimates, loss_plus = self.projected_gradients(batch, step)
        projected = sum(estimates) / len(estimates)
        check_finite(step, loss=loss_plus, projected_gradient=projected)
        self.apply_update(step, estimates)
        self.steps_taken += 1
        return StepResult(
            loss=loss_plus,
            lr=self.cfg.lr,
            forwards=2 * len(estimates),
            backwards=0,
            projected_grad=projected,
            update_scale=self.cfg.lr * abs(projected),
            estimates=list(estimates),
        )

    def stats(self) -> dict[str, Any]:
        return engine_stats(self.engine, self.steps_taken)

    def state_dict(self) -> dict[str, Any]:
        return self.small_state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_small_state_dict(state)

    def small_state_dict(self) -> dict[str, Any]:
        """The state a replay of the trajectory does not rebuild: the engine's counters and
        decisions (a subclass's per-coordinate state, momentum or Adam's moments, it does)."""
        return {"engine": self.engine.state_dict(), "steps_taken": self.steps_taken}

    def load_small_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state["engine"])
        self.steps_taken = state["steps_taken"]

    def weight_resolution(self) -> float:
        return weight_resolution(list(self.engine.params.values()))


def engine_stats(engine: PerturbationEngine, steps: int) -> dict[str, Any]:
    """Parameter sweeps (total and per step), whether the probes ran paired (1) or not (0), and
    why (the probes=auto decision)."""
    return {
        "parameter_passes": engine.passes,
        "parameter_passes_per_step": engine.passes / max(steps, 1),
        "paired_probes": float(bool(engine.paired)),
        "probes": engine.pairing.decision,
        "probes_reason": engine.pairing.reason,
    }


def state_bytes(*states: dict[str, torch.Tensor]) -> int:
    """The bytes a method's per-coordinate state holds (its memory beyond MeZO's)."""
    return sum(t.numel() * t.element_size() for state in states for t in state.values())


def on_devices(
    state: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter]
) -> dict[str, torch.Tensor]:
    """Restored state tensors moved to their parameters' devices, kept in fp32."""
    return {n: t.to(device=params[n].device, dtype=torch.float32) for n, t in state.items()}

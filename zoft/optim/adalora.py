"""FT-AdaLoRA: AdamW on AdaLoRA adapters (peft's SVD-form P Λ Q layers), with AdaLoRA's two
additions to the step (Zhang et al., 2023; peft AdaLoraModel): the orthogonality penalty
orth_reg_weight · mean over P, Q of ‖PPᵀ − I‖_F / ‖QᵀQ − I‖_F added to the loss, and after each
update the sensitivity-based budget (peft's RankAllocator) that zeroes the least important
singular values until the average rank reaches lora.r."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoft.config import as_dataclass
from zoft.optim.base import Optimizer, StepResult
from zoft.optim.first_order import BackpropPhase
from zoft.optim.registry import OPTIMIZERS
from zoft.scoring.base import LossSum, Objective
from zoft.tasks.base import Example

ADAPTER_NAME = "default"


@dataclass
class Budget:
    """What peft's RankAllocator reads of an AdaLoraConfig, with the run's length."""

    target_r: int
    tinit: int
    tfinal: int
    deltaT: int  # noqa: N815  (peft's name)
    beta1: float
    beta2: float
    total_step: int


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """Mean over the adapters' P (lora_A) and Q (lora_B) of ‖PPᵀ − I‖_F and ‖QᵀQ − I‖_F."""
    terms = []
    for name, p in model.named_parameters():
        if f".{ADAPTER_NAME}" not in name or not ("lora_A" in name or "lora_B" in name):
            continue
        gram = p @ p.T if "lora_A" in name else p.T @ p
        terms.append(torch.linalg.matrix_norm(gram - torch.eye(*gram.shape, device=p.device)))
    return torch.stack(terms).mean() if terms else torch.zeros(())


class Penalised:
    """The objective plus λ·R(model) per loss term, so micro-batches and ranks (Σ sums / Σ
    terms) add the penalty exactly once to the batch-mean loss, as peft adds it to outputs.loss."""

    def __init__(self, objective: Objective, weight: float) -> None:
        self.objective, self.weight = objective, weight

    def loss_sum(self, model: nn.Module, examples: Sequence[Example]) -> LossSum:
        total, terms = self.objective.loss_sum(model, examples)
        if self.weight:
            total = total + self.weight * terms * orthogonality_penalty(model).to(total.dtype)
        return total, terms

    def loss(self, model: nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        total, terms = self.loss_sum(model, examples)
        return total / terms


@OPTIMIZERS.register("ft-adalora")  # settings and facts: zoft.optim.configs.AdamAdaLoraConfig
class AdaLoraFineTuning(Optimizer):
    """One forward and one backward in train mode on the penalised loss, an AdamW step, then the
    budget allocation of step t (1-based): importance EMAs from the gradients, and every delta_t
    steps the singular values below the budget's threshold set to 0; from steps − tfinal on, the
    final rank pattern is kept."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Objective, total_steps: int, seed: int
    ) -> None:
        from peft.tuners.adalora.layer import RankAllocator

        super().__init__(cfg, model, scorer, total_steps, seed)
        as_dataclass(cfg).check()
        self.budget = Budget(
            target_r=cfg.lora.r,
            tinit=cfg.tinit,
            tfinal=cfg.tfinal,
            deltaT=cfg.delta_t,
            beta1=cfg.sensitivity_beta1,
            beta2=cfg.sensitivity_beta2,
            total_step=max(total_steps, cfg.tinit + cfg.tfinal + 1),
        )
        self.allocator = RankAllocator(model, self.budget, ADAPTER_NAME)
        self.rank_pattern: dict[str, list[bool]] | None = None
        objective = Penalised(scorer, cfg.orth_reg_weight)
        self.phase = BackpropPhase(
            cfg, model, objective, self.trainable(), total_steps, after_update=self._allocate
        )

    @torch.no_grad()
    def _allocate(self, step: int) -> None:
        """peft AdaLoraModel.update_and_allocate at global step `step` + 1."""
        global_step, end = step + 1, self.budget.total_step - self.budget.tfinal
        if global_step < end:
            _, pattern = self.allocator.update_and_allocate(self.model, global_step)
            if pattern:
                self.rank_pattern = pattern
        elif global_step == end:
            _, self.rank_pattern = self.allocator.update_and_allocate(
                self.model, global_step, force_mask=True
            )
            self.allocator.reset_ipt()
        elif self.rank_pattern is not None:  # keep the final ranks (peft mask_using_rank_pattern)
            for name, p in self.model.named_parameters():
                if name in self.rank_pattern:
                    keep = torch.tensor(self.rank_pattern[name], device=p.device)
                    p.masked_fill_(~keep.view(p.shape), 0.0)

    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        loss, lr = self.phase.step(batch, step)
        return StepResult(loss=loss, lr=lr, forwards=1, backwards=1, update_scale=lr)

    def stats(self) -> dict[str, Any]:
        if self.rank_pattern is None:
            return {"adalora_rank": None}
        kept = [sum(row) for row in self.rank_pattern.values()]
        return {"adalora_rank": sum(kept) / len(kept), "adalora_budget": sum(kept)}

    def state_dict(self) -> dict[str, Any]:
        allocator = self.allocator
        return {
            "phase": self.phase.state_dict(),
            "ipt": dict(allocator.ipt),
            "exp_avg_ipt": dict(allocator.exp_avg_ipt),
            "exp_avg_unc": dict(allocator.exp_avg_unc),
            "rank_pattern": self.rank_pattern,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase.load_state_dict(state["phase"])
        device = {n: p.device for n, p in self.model.named_parameters()}
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(self.allocator, key, {n: t.to(device[n]) for n, t in state[key].items()})
        self.rank_pattern = state["rank_pattern"]

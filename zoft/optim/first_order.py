"""FT: full fine-tuning with AdamW and a linear decay (DESIGN §6.5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from zoft.config import (
    Amp,
    as_dataclass,
)
from zoft.errors import ZoftError
from zoft.optim.base import (
    NonFiniteStep,
    Optimizer,
    StepResult,
    check_finite,
    loss_value,
    micro_batches,
)
from zoft.optim.registry import OPTIMIZERS
from zoft.run import distributed
from zoft.scoring.base import Objective
from zoft.tasks.base import Example

AMP_DTYPES = {None: None, Amp.bf16: torch.bfloat16, Amp.fp16: torch.float16}


def linear_schedule(warmup: int, total: int, kind: str):
    """Multiplier on the base rate: linear warm-up from 0 (step/warmup, HF 4.28.1's
    get_linear_schedule_with_warmup, so the first step's rate is 0), then linear decay to 0 (or
    constant)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return step / warmup
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


class BackpropPhase:
    """One AdamW step on `params` from a forward and backward in train mode: micro-batches sum
    their losses' gradients (normalised by the batch's total loss terms), then clipping, the
    optimizer step and the schedule. Parameters outside `params` must not require grad.

    Under fp16 loss scaling it follows HF Trainer 4.28.1: the scaled quantity is the batch-mean
    loss (not the sum), and a step the scaler skips (inf/NaN gradients) does not advance the
    schedule. `sub_steps` > 1 (LMAO's lora_steps) stretches the schedule and warm-up over that
    many phase steps per run step, so the rate keeps its shape over the whole run."""

    def __init__(
        self,
        cfg: Any,
        model: nn.Module,
        scorer: Objective,
        params: dict[str, nn.Parameter],
        total_steps: int,
        sub_steps: int = 1,
        after_update: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg, self.model, self.scorer, self.params = cfg, model, scorer, params
        # called with the step after each applied update, gradients still in place (AdaLoRA)
        self.after_update = after_update
        self.optimizer = adamw_for(params, cfg)
        factor = linear_schedule(
            cfg.warmup_steps * sub_steps, total_steps * sub_steps, cfg.schedule
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.device_type = next(iter(params.values())).device.type
        # FSDP2 shards (DTensors): gradients arrive reduce-scattered, AdamW moments are shards
        self.sharded = any(distributed.is_sharded(p) for p in params.values())
        # fp16 gradients underflow without loss scaling; the scaler is a no-op when disabled
        self.scaler = torch.amp.GradScaler(
            self.device_type, enabled=cfg.amp == "fp16" and self.device_type == "cuda"
        )
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)

    def step(self, batch: Sequence[Example], step: int) -> tuple[float, float]:
        """(the batch's training loss, the learning rate used). Under data parallelism this rank
        back-propagates its shard and the gradients are summed over the ranks."""
        self.model.train()
        lr = self.scheduler.get_last_lr()[0]
        amp = AMP_DTYPES[self.cfg.amp]
        scaling = self.scaler.is_enabled()
        total, weight = 0.0, 0
        for part in micro_batches(distributed.shard(batch), self.cfg.micro_batches):
            with torch.autocast(self.device_type, dtype=amp, enabled=amp is not None):
                part_sum, part_weight = self.scorer.loss_sum(self.model, part)
            if scaling:  # scale the running mean: the gradients hold d(Σ sums / Σ terms)
                self._rescale_gradients(weight / (weight + part_weight))
                self.scaler.scale(part_sum / (weight + part_weight)).backward()
            else:
                part_sum.backward()
            total += loss_value(part_sum)
            weight += part_weight
        if scaling:  # back to the gradient of this rank's summed loss, as the reduction expects
            self._rescale_gradients(weight)
        if not self.sharded:  # FSDP2 has already reduce-scattered them, averaged over the ranks
            distributed.all_reduce_gradients(list(self.params.values()))
        total, weight = distributed.all_sum([total, weight])
        try:
            check_finite(step, loss=total)
        except NonFiniteStep:
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()  # the schedule stays aligned with the step count
            raise
        for p in self.params.values():  # Σ of summed losses → gradient of the batch mean
            if p.grad is not None:
                p.grad.div_(weight)
                if self.sharded:  # FSDP averaged the ranks' sums: undo the 1/world
                    p.grad.mul_(distributed.world_size())
        self.scaler.unscale_(self.optimizer)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.max_grad_norm)
        scale_before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if scale_before <= self.scaler.get_scale():  # the scaler ran the optimizer step
            self.scheduler.step()
            if self.after_update is not None:
                self.after_update(step)
        self.optimizer.zero_grad(set_to_none=True)
        return total / weight, lr

    def _rescale_gradients(self, factor: float) -> None:
        if factor == 1.0:
            return
        for p in self.params.values():
            if p.grad is not None:
                p.grad.mul_(factor)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.sharded:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            distributed.sharded_state(state["optimizer"]["state"], params)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward (less memory, one more forward's compute)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ZoftError(
            f"{type(model).__name__} does not support gradient checkpointing; set "
            "optimizer.gradient_checkpointing=false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@OPTIMIZERS.register("ft-prefix")  # settings and facts: zoft.optim.configs.AdamPrefixConfig
@OPTIMIZERS.register("ft-dora")  # settings and facts: zoft.optim.configs.AdamDoraConfig
@OPTIMIZERS.register("ft-lora")  # settings and facts: zoft.optim.configs.AdamLoraConfig
@OPTIMIZERS.register("ft")  # settings and facts: zoft.optim.configs.AdamConfig
class FullFineTuning(Optimizer):
    """FT (every weight), FT-LoRA, DoRA (the adapters) or FT-prefix (the prefix): one forward and
    one backward in train mode, then an AdamW step."""

    def __init__(
        self, cfg: Any, model: nn.Module, scorer: Objective, total_steps: int, seed: int
    ) -> None:
        super().__init__(cfg, model, scorer, total_steps, seed)
        as_dataclass(cfg).check()
        self.phase = BackpropPhase(cfg, model, scorer, self.trainable(), total_steps)

    def step(self, batch: Sequence[Example], step: int) -> StepResult:
        loss, lr = self.phase.step(batch, step)
        return StepResult(loss=loss, lr=lr, forwards=1, backwards=1, update_scale=lr)

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase.load_state_dict(state["phase"])

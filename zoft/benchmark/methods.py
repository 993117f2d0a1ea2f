"""What is timed: one forward, one step of each zoft method, and the reference MeZO pattern.

Every method steps through the same code as zoft-run (the registered optimizers, the adapters),
on a fixed synthetic batch: random token ids, the loss at the last position (as a one-token
answer is scored), so the logits stay small as in the runner's scorers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from zoft.models.adapters import add_adapter
from zoft.models.loading import model_device
from zoft.optim import OPTIMIZERS, build_optimizer
from zoft.registry import Registry
from zoft.scoring.base import head_inputs
from zoft.tasks.base import Example

LOW_LR = 1e-9  # the steps are timed, not trained: keep the weights where they started


class SyntheticScorer:
    """The scorer interface over a fixed batch of random token ids (the examples are ignored)."""

    def __init__(self, model: torch.nn.Module, batch: int, seq_len: int, seed: int = 0) -> None:
        vocab = model.get_input_embeddings().weight.shape[0]
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, vocab, (batch, seq_len), generator=gen)
        self.targets = torch.randint(4, vocab, (batch,), generator=gen)

    def _losses(self, model: torch.nn.Module, copies: int) -> torch.Tensor:
        device = model_device(model)
        ids = self.ids.repeat(copies, 1).to(device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits
        targets = self.targets.repeat(copies).to(device)
        return F.cross_entropy(logits[:, -1].float(), targets, reduction="none")

    def loss(self, model: torch.nn.Module, examples: Sequence[Any]) -> torch.Tensor:
        return self._losses(model, 1).mean()

    def loss_sum(self, model: torch.nn.Module, examples: Sequence[Any]) -> tuple[torch.Tensor, int]:
        return self._losses(model, 1).sum(), len(self.targets)

    def loss_sum_pair(
        self, model: torch.nn.Module, examples: Sequence[Any]
    ) -> tuple[tuple[torch.Tensor, int], tuple[torch.Tensor, int]]:
        losses, n = self._losses(model, 2), len(self.targets)
        return (losses[:n].sum(), n), (losses[n:].sum(), n)

    def head(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.get_output_embeddings()

    @torch.no_grad()
    def head_features(
        self, model: torch.nn.Module, examples: Sequence[Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output projection's input at each row's last position and its target (LP)."""
        with head_inputs(self.head(model)) as seen:
            self._losses(model, 1)
        return seen[-1][:, -1].float().cpu(), self.targets.clone()


class Stepper(Protocol):
    """One timed unit of work and the parameter sweeps it made so far (None: not counted)."""

    def step(self, index: int) -> tuple[int, int]:
        """Run step `index`; (forwards, backwards) it made."""

    def sweeps(self) -> float | None: ...


@dataclass
class BenchContext:
    model: torch.nn.Module
    model_cfg: DictConfig
    scorer: SyntheticScorer
    total_steps: int
    rng: str | None = None  # optimizer.rng of the ZO steps (None: the config's default)


# name -> builds a Stepper from the context; metadata: label, pure_zo, optimizer (the registered
# method it steps, for the entries derived from OPTIMIZERS)
BENCH_METHODS: Registry[Callable[[BenchContext], Stepper]] = Registry("benchmark method")


@BENCH_METHODS.register("forward", label="forward (inference)")
class ForwardStepper:
    """One eval-mode forward at batch B without autograd: the unit of every ratio."""

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        ctx.model.eval()

    @torch.no_grad()
    def step(self, index: int) -> tuple[int, int]:
        self.ctx.scorer.loss(self.ctx.model, [])
        return 1, 0

    def sweeps(self) -> float | None:
        return None


@BENCH_METHODS.register("mezo-reference", label="MeZO, reference pattern", pure_zo=True)
class ReferenceMeZO:
    """The pattern of the papers' released MeZO code, as DESIGN §6.1 describes it: the global
    generator reseeded and z redrawn for each of four out-of-place passes over the weights
    (+ε, −2ε, +ε back, −ηgz), and two sequential forwards. Written for this benchmark only."""

    def __init__(self, ctx: BenchContext, eps: float = 1e-3, lr: float = LOW_LR) -> None:
        self.ctx, self.eps, self.lr = ctx, eps, lr
        self.params = [p for p in ctx.model.parameters() if p.requires_grad]
        self.passes = 0
        ctx.model.eval()

    def _shift(self, seed: int, scale: float) -> None:
        torch.manual_seed(seed)
        for p in self.params:
            z = torch.normal(0.0, 1.0, size=p.shape, device=p.device, dtype=p.dtype)
            p.data = p.data + scale * z
        self.passes += 1

    @torch.no_grad()
    def step(self, index: int) -> tuple[int, int]:
        seed = 1000 + index
        loss = self.ctx.scorer.loss
        self._shift(seed, self.eps)
        plus = float(loss(self.ctx.model, []))
        self._shift(seed, -2 * self.eps)
        minus = float(loss(self.ctx.model, []))
        self._shift(seed, self.eps)
        self._shift(seed, -self.lr * (plus - minus) / (2 * self.eps))
        return 2, 0

    def sweeps(self) -> float | None:
        return float(self.passes)


class OptimizerStepper:
    """A registered zoft optimizer, configured as zoft-run would (adapters included)."""

    def __init__(self, ctx: BenchContext, name: str, overrides: dict[str, Any]) -> None:
        from zoft.benchmark.models import compose_config

        cfg = compose_config([f"optimizer={name}"]).optimizer
        for key, value in {"lr": LOW_LR, **overrides}.items():
            cfg[key] = value
        if ctx.rng is not None:
            cfg.rng = ctx.rng
        if "zo_lr" in cfg:
            cfg.zo_lr = LOW_LR
        add_adapter(ctx.model, cfg, ctx.model_cfg)
        self.optimizer = build_optimizer(cfg, ctx.model, ctx.scorer, ctx.total_steps, seed=0)

    def step(self, index: int) -> tuple[int, int]:
        # the synthetic scorer ignores the examples; fresh ones each step make LP fit each step
        result = self.optimizer.step([Example({"step": index}, 0)], index)
        return result.forwards, result.backwards

    def sweeps(self) -> float | None:
        engine = getattr(self.optimizer, "engine", None)
        return None if engine is None else engine.passes


class ReplayStepper(OptimizerStepper):
    """One step of zoft-replay (and of a trajectory checkpoint's resume): the step's recorded
    update applied to the weights, no forward; its cost against the training step's."""

    @torch.no_grad()
    def step(self, index: int) -> tuple[int, int]:
        self.optimizer.apply_update(index, [1.0] * self.optimizer.cfg.queries)
        return 0, 0


def _register_optimizer(
    method: str,
    name: str,
    label: str,
    pure_zo: bool = False,
    stepper: type[OptimizerStepper] = OptimizerStepper,
    **overrides: Any,
) -> None:
    """`pure_zo`: forwards only, so the peak-memory target (≤ 1.05 × inference) applies;
    `optimizer` in the entry's metadata names the registered method it steps."""

    def build(ctx: BenchContext) -> Stepper:
        return stepper(ctx, name, overrides)

    replay = stepper is ReplayStepper
    BENCH_METHODS.register(method, label=label, pure_zo=pure_zo, optimizer=name, replay=replay)(
        build
    )


def _register_zoft_methods() -> list[str]:
    """Every registered optimizer, in paper order, from its facts: a zeroth-order method once
    per probe order ("<name>-sequential", "<name>-paired"), any other under its own name (its
    ZO phase paired when its config has probes). The bench names, in order."""
    names = []
    for name in OPTIMIZERS.in_paper_order():
        facts = OPTIMIZERS.facts(name)
        if facts.zeroth_order:
            # a prefix is read by a hook, outside any module's forward: it cannot be paired
            pairs = OPTIMIZERS.config(name)().adapter != "prefix"
            for probes in ("sequential", "paired") if pairs else ("sequential",):
                method = f"{name}-{probes}"
                label = f"{facts.display}, {probes} probes"
                _register_optimizer(method, name, label, True, probes=probes)
                names.append(method)
            if OPTIMIZERS.get(name).replayable:  # its trajectory rebuilds it: what a step costs
                label = f"{facts.display}, replay of a step"
                _register_optimizer(f"{name}-replay", name, label, True, ReplayStepper)
                names.append(f"{name}-replay")
        elif "probes" in {f.name for f in fields(OPTIMIZERS.config(name))}:
            _register_optimizer(name, name, f"{facts.display} (ZO phase paired)", probes="paired")
            names.append(name)
        else:
            _register_optimizer(name, name, facts.display)
            names.append(name)
    return names


# the forward and the reference pattern first: every ratio is against them
DEFAULT_METHODS = ("forward", "mezo-reference", *_register_zoft_methods())

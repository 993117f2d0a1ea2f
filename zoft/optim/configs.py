"""Every method's settings (its config dataclass) and facts, declared once and torch-free.

Kept apart from the methods' code so that the command line (`zoft-run --help`, the override
checks, the run validation) reads each method's keys, defaults, ranges and rules without importing
torch: the methods register their classes against these names (`@OPTIMIZERS.register("lozo")`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoft.config import (
    AdapterKind,
    Amp,
    DirectionKind,
    DType,
    OptimizerConfig,
    ProbeMode,
    Rng,
    Rounding,
    Schedule,
    ranged,
)
from zoft.errors import RunConfigError, ZoftError
from zoft.optim.registry import METHODS, MethodFacts

# ---- zeroth-order methods ------------------------------------------------------------------


@dataclass
class ZerothOrderConfig(OptimizerConfig):
    """What every SPSA method shares (zoft.optim.zeroth_order)."""

    eps: float = ranged(1e-3, gt=0)  # ε: the perturbation scale of the two-point estimate
    # n-SPSA: directions per step, their estimates averaged into one update
    queries: int = ranged(1, ge=1)
    probes: ProbeMode = ProbeMode.auto  # zoft.optim.probes
    # probes=auto pairs only while the paired peak is within this multiple of inference
    max_memory_ratio: float = ranged(1.05, ge=1)
    # the directions' normals: philox = a counter-based stream, z[i] a pure function of (key, i)
    # (zoft.optim.philox; numba / Triton kernels); torch = torch.randn per key, every run before
    # issue 19 (measured slower and heavier: docs/benchmarks.md)
    rng: Rng = Rng.philox
    # half-precision weights: how the fp32 update is rounded into them (fp32 weights: no effect);
    # auto = stochastic, measured in results/tables/bf16_rounding (issue 21)
    rounding: Rounding = Rounding.auto


@METHODS.register(
    "mezo", facts=MethodFacts("MeZO", 30, forwards=2, backwards=0, zeroth_order=True, lora=False)
)
@dataclass
class MezoConfig(ZerothOrderConfig):
    name: str = "mezo"
    lr: float = 1e-6
    eps: float = 1e-3


@METHODS.register(
    "mezo-lora",
    facts=MethodFacts("MeZO (LoRA)", 40, forwards=2, backwards=0, zeroth_order=True, lora=True),
)
@dataclass
class MezoLoraConfig(MezoConfig):
    name: str = "mezo-lora"
    adapter: AdapterKind = AdapterKind.lora
    lr: float = 1e-4
    eps: float = 1e-2


PREFIX_INITS = ("real_activations", "random")  # zoft.models.prefix.add_prefix


@dataclass
class PrefixSettings:
    """What the prefix methods add to their method's settings (zoft.models.prefix)."""

    prefix_tokens: int = ranged(5, ge=1)  # positions in front of every attention layer
    prefix_init: str = "real_activations"  # see PREFIX_INITS

    def check(self) -> None:
        super().check()  # type: ignore[misc]  (the method's config, next in the MRO)
        if self.adapter != AdapterKind.prefix:  # type: ignore[attr-defined]
            raise ZoftError(
                f"optimizer={self.name} trains a prefix, but optimizer.adapter="  # type: ignore[attr-defined]
                f"{self.adapter}; set optimizer.adapter=prefix"  # type: ignore[attr-defined]
            )
        if self.prefix_init not in PREFIX_INITS:
            raise ZoftError(
                f"optimizer.prefix_init={self.prefix_init!r} is invalid: use one of "
                f"{', '.join(PREFIX_INITS)}"
            )


@METHODS.register(
    "mezo-prefix",
    facts=MethodFacts("MeZO (prefix)", 45, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
@dataclass
class MezoPrefixConfig(PrefixSettings, MezoConfig):
    """MeZO on a prefix (MeZO's prefix.py, --num_prefix 5 --no_reparam
    --prefix_init_by_real_act): lr 1e-2, ε 1e-1 (MeZO Tables 15/16)."""

    name: str = "mezo-prefix"
    adapter: AdapterKind = AdapterKind.prefix
    lr: float = 1e-2
    eps: float = 1e-1


# How the momentum starts. first_estimate: N₁ = c₁U₁ (and m₁ = c₁z₁), as the official LOZO code
# (medium_models LOZOtrainer, lowrank_zo_update_momentum) does. zero: N₀ = 0, so N₁ = (1−β)c₁U₁,
# a first update 1/(1−β) times smaller (zoft before issue 17; kept to reproduce those runs).
MOMENTUM_INITS = ("first_estimate", "zero")


def _check_momentum_init(value: str) -> None:
    if value not in MOMENTUM_INITS:
        raise ZoftError(
            f"optimizer.momentum_init={value!r} is invalid: use one of {', '.join(MOMENTUM_INITS)}"
        )


@METHODS.register(
    "mezo-m",
    facts=MethodFacts("MeZO-M", 50, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
@dataclass
class MezoMomentumConfig(ZerothOrderConfig):
    """MeZO whose estimate g·z drives heavy-ball momentum (LOZO's MeZO-M baseline); the momentum
    is a dense fp32 copy of the weights' size: the memory LOZO's OPT-13B table charges it."""

    name: str = "mezo-m"
    lr: float = 1e-6
    eps: float = 1e-3
    beta: float = ranged(0.9, ge=0, lt=1)  # m ← βm + (1−β)·g·z, as LOZO-M's momentum
    momentum_init: str = "first_estimate"  # see MOMENTUM_INITS

    def check(self) -> None:
        super().check()
        _check_momentum_init(self.momentum_init)


@METHODS.register(
    "mezo-adam",
    facts=MethodFacts("MeZO-Adam", 60, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
@dataclass
class MezoAdamConfig(ZerothOrderConfig):
    """MeZO's estimate g·z as the gradient of an AdamW step (MeZO medium_models
    --zero_order_use_trainer_optim --optimizer adam): two dense fp32 moments of the weights' size,
    bias-corrected, decoupled weight decay after the step, constant learning rate."""

    name: str = "mezo-adam"
    lr: float = 1e-5
    eps: float = 1e-3
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.999, ge=0, lt=1)
    adam_eps: float = ranged(1e-8, gt=0)


@METHODS.register(
    "lozo", facts=MethodFacts("LOZO", 70, forwards=2, backwards=0, zeroth_order=True, lora=False)
)
@dataclass
class LozoConfig(ZerothOrderConfig):
    name: str = "lozo"
    lr: float = 1e-6
    eps: float = 1e-3
    # r: columns of U and V (at most the widest min(m, n) of the perturbed matrices: on load)
    rank: int = ranged(2, ge=1)
    interval: int = ranged(50, ge=1)  # ν: V is resampled every ν steps

    def direction_rank(self) -> int | None:
        return self.rank


@METHODS.register(
    "subzero",
    facts=MethodFacts("SubZero", 75, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
@dataclass
class SubZeroConfig(ZerothOrderConfig):
    """SubZero (zoft.optim.directions.SubspaceDirections): MeZO's step along (√(mn)/r)·U Σ Vᵀ;
    rank 8 and interval 2000 are the official code's defaults (zimingyy/SubZero run.py)."""

    name: str = "subzero"
    lr: float = 1e-6
    eps: float = 1e-3
    rank: int = ranged(8, ge=1)  # r: columns of U and V (capped at min(m, n) per matrix)
    interval: int = ranged(2000, ge=1)  # T: U and V are redrawn every T steps

    def direction_rank(self) -> int | None:
        return self.rank


@METHODS.register(
    "lozo-m",
    facts=MethodFacts("LOZO-M", 80, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
@dataclass
class LozoMConfig(LozoConfig):
    name: str = "lozo-m"
    # momentum (LOZO scripts 0.9; the official code's default is 0.7)
    beta: float = ranged(0.9, ge=0, lt=1)
    momentum_init: str = "first_estimate"  # see MOMENTUM_INITS

    def check(self) -> None:
        super().check()
        _check_momentum_init(self.momentum_init)


# ---- fitted heads ---------------------------------------------------------------------------


@METHODS.register(
    "lp", facts=MethodFacts("LP", 20, forwards=2, backwards=0, zeroth_order=False, lora=False)
)
@dataclass
class LinearProbeConfig(OptimizerConfig):
    """Linear probing as MeZO ran it (zoft.optim.linear_probe): a logistic regression on the
    frozen model's features where its head scores the gold target, written into the head's rows.
    lr is unused: the fit is scikit-learn's LogisticRegressionCV."""

    name: str = "lp"
    cs: int = ranged(10, ge=1)  # LogisticRegressionCV's Cs: that many C values, log-spaced
    folds: int = ranged(5, ge=2)  # its cross-validation folds (fewer when a class is smaller)
    # MeZO's --lp_early_stopping: tol 0.01 and at most 1000 iterations (else 1e-4 and 5000)
    early_stopping: bool = False
    # examples per forward of the loss and the features (a step's batch may be the whole train set)
    feature_batch: int = ranged(32, ge=1)

    def check(self) -> None:
        super().check()
        if self.adapter != AdapterKind.none:
            raise ZoftError(
                f"optimizer=lp fits the model's own head, but optimizer.adapter={self.adapter}; "
                "set optimizer.adapter=none"
            )


# ---- backprop methods ----------------------------------------------------------------------

AMP_CHOICES = (None, *Amp)  # autocast off, or one of the Amp dtypes


def _check_amp(key: str, value: Any) -> None:
    if value not in AMP_CHOICES:
        raise ZoftError(
            f"optimizer.{key}={value} is not one of null, {', '.join(str(a) for a in Amp)}"
        )


@METHODS.register(
    "ft", facts=MethodFacts("FT", 130, forwards=1, backwards=1, zeroth_order=False, lora=False)
)
@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "ft"
    lr: float = 1e-5
    weight_decay: float = 0.0
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.999, ge=0, lt=1)
    adam_eps: float = ranged(1e-8, gt=0)
    warmup_steps: int = ranged(0, ge=0)
    schedule: Schedule = Schedule.linear
    max_grad_norm: float = ranged(1.0, ge=0)  # 0 disables clipping
    amp: Amp | None = None  # autocast compute over fp32 weights (the papers' FT)
    gradient_checkpointing: bool = False  # recompute activations in the backward: less memory

    def check(self) -> None:
        super().check()
        _check_amp("amp", self.amp)

    def check_run(self, run: Any) -> None:
        super().check_run(run)
        if run.steps and run.dtype == DType.fp16 and self.adapter == AdapterKind.none:
            raise RunConfigError(
                f"dtype=fp16 with optimizer={self.name} would train fp16 weights with no master "
                "copy; the papers keep fp32 weights and compute in fp16: use dtype=fp32 "
                "optimizer.amp=fp16"
            )


@METHODS.register(
    "ft-lora",
    facts=MethodFacts("FT (LoRA)", 100, forwards=1, backwards=1, zeroth_order=False, lora=True),
)
@dataclass
class AdamLoraConfig(AdamConfig):
    name: str = "ft-lora"
    adapter: AdapterKind = AdapterKind.lora
    lr: float = 1e-4


@METHODS.register(
    "ft-dora",
    facts=MethodFacts(
        "DoRA", 104, forwards=1, backwards=1, zeroth_order=False, lora=True,
        requires_adapter="dora",
    ),
)  # fmt: skip
@dataclass
class AdamDoraConfig(AdamConfig):
    """FT on DoRA adapters (peft use_dora; LMAO Table 10: r 8, lr 1e-5, batch 16)."""

    name: str = "ft-dora"
    adapter: AdapterKind = AdapterKind.dora
    lr: float = 1e-5


@METHODS.register(
    "ft-prefix",
    facts=MethodFacts("FT (prefix)", 106, forwards=1, backwards=1, zeroth_order=False, lora=False),
)
@dataclass
class AdamPrefixConfig(PrefixSettings, AdamConfig):
    """FT on a prefix (MeZO Table 18 / medium_models finetune.sh --prefix_tuning --num_prefix 5
    --no_reparam --prefix_init_by_real_act): lr grid {1e-2, 3e-2, 5e-2}."""

    name: str = "ft-prefix"
    adapter: AdapterKind = AdapterKind.prefix
    lr: float = 1e-2


@METHODS.register(
    "ft-adalora",
    facts=MethodFacts(
        "AdaLoRA", 102, forwards=1, backwards=1, zeroth_order=False, lora=True,
        requires_adapter="adalora",
    ),
)  # fmt: skip
@dataclass
class AdamAdaLoraConfig(AdamConfig):
    """FT on AdaLoRA adapters (peft AdaLoraConfig; LMAO Table 10: r 8, lr 1e-5, batch 16):
    lora.r is the final average rank (target_r), init_r the starting one; the budget falls
    cubically from step tinit to steps − tfinal, pruning every delta_t steps."""

    name: str = "ft-adalora"
    adapter: AdapterKind = AdapterKind.adalora
    lr: float = 1e-5
    init_r: int = ranged(12, ge=1)  # peft's default
    tinit: int = ranged(0, ge=0)  # steps at the initial budget
    tfinal: int = ranged(0, ge=0)  # final steps at the target budget (ranks fixed)
    delta_t: int = ranged(1, ge=1)  # steps between budget allocations
    sensitivity_beta1: float = ranged(0.85, gt=0, lt=1)  # EMA of the importance
    sensitivity_beta2: float = ranged(0.85, gt=0, lt=1)  # EMA of its uncertainty
    orth_reg_weight: float = ranged(0.5, ge=0)  # weight of ‖PPᵀ − I‖ + ‖QᵀQ − I‖ in the loss

    def check(self) -> None:
        super().check()
        if self.init_r < self.lora.r:
            raise ZoftError(
                f"optimizer.init_r={self.init_r} is below optimizer.lora.r={self.lora.r}: "
                "AdaLoRA prunes from init_r down to lora.r; raise init_r or lower lora.r"
            )

    def check_run(self, run: Any) -> None:
        super().check_run(run)
        if run.steps and self.tinit >= run.steps - self.tfinal:
            raise RunConfigError(
                f"optimizer.tinit={self.tinit} and optimizer.tfinal={self.tfinal} leave no "
                f"budgeting phase in steps={run.steps}: lower them or raise steps"
            )


@METHODS.register(
    "lmao",
    facts=MethodFacts(
        "LMAO", 120, forwards=3, backwards=1, zeroth_order=False, lora=True, requires_adapter="lora"
    ),
)
@dataclass
class LmaoConfig(AdamConfig):
    """AdamW fields (lr, schedule, clipping, ...) drive the LoRA phase; zo_* the ZO phase."""

    name: str = "lmao"
    adapter: AdapterKind = AdapterKind.lora
    lr: float = 1e-5  # η_lora (OPT: linear decay; RoBERTa: schedule=constant)
    zo_lr: float = ranged(1e-6, gt=0)  # η_base, constant
    eps: float = ranged(1e-3, gt=0)
    zo_weight_decay: float = ranged(0.0, ge=0)
    queries: int = ranged(1, ge=1)  # n-SPSA queries in the ZO phase
    directions: DirectionKind = DirectionKind.gaussian  # lowrank: LOZO directions in the ZO phase
    rank: int = ranged(2, ge=1)  # lowrank directions only
    interval: int = ranged(50, ge=1)  # lowrank directions only
    zo_first: bool = False  # run the ZO phase before the LoRA phase
    probes: ProbeMode = ProbeMode.auto  # ZO phase (zoft.optim.probes)
    max_memory_ratio: float = ranged(1.05, ge=1)  # probes=auto's memory limit (see above)
    rng: Rng = Rng.philox  # the ZO phase's normals (see ZerothOrderConfig.rng)
    rounding: Rounding = Rounding.auto  # the ZO update into half-precision base weights
    lora_steps: int = ranged(1, ge=1)  # LoRA (AdamW) steps per ZO step, all on the same batch
    # autocast of the ZO phase's forwards (weights and z stay as they are): the official LMAO
    # scripts' --fp16 runs them under fp16 autocast; None: in the weights' dtype
    zo_amp: Amp | None = None

    def direction_rank(self) -> int | None:
        return self.rank if self.directions == DirectionKind.lowrank else None

    def check(self) -> None:
        super().check()
        if self.adapter != AdapterKind.lora:
            raise ZoftError(
                f"optimizer=lmao trains LoRA adapters by backprop, but optimizer.adapter="
                f"{self.adapter}; set optimizer.adapter=lora"
            )
        _check_amp("zo_amp", self.zo_amp)

"""zoft's zeroth-order optimizers for your own training loop.

    from zoft import zo

    opt = zo.MeZO(model, lr=1e-6, eps=1e-3)
    for batch in batches:
        loss = opt.step(lambda: loss_of(model, batch))  # the closure runs under no_grad

Each class is the very optimizer `zoft-run` steps (zoft.optim), fed by your closure instead of a
task's scorer, so the keyed directions, the exact restore of θ after every probe, paired probes
and resume are the runner's. It takes the model rather than its named_parameters: a probe swaps
θ + εz into each owning module's forward and back out, so the modules are needed. It trains the
parameters that require grad (the adapter methods first add their LoRA or prefix parameters).

Paired probes evaluate θ+εz and θ−εz in one forward over the batch twice: pass
`closure_pair`, which runs the model on the inputs stacked twice along dim 0 ([x; x]) and returns
the loss of each copy (first copy, second copy); with `probes="auto"` (the default) zoft checks the
pairing on the first step and keeps it only where it is exact and saves time, as in the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from zoft.config import AdapterKind, ModelConfig, enum_value
from zoft.errors import ZoftError
from zoft.optim import METHODS, build_optimizer
from zoft.optim.base import StepResult

Loss = Callable[[], torch.Tensor | float]
LossPair = Callable[[], tuple[torch.Tensor | float, torch.Tensor | float]]

__all__ = [
    "LOZO",
    "LOZOM",
    "MeZO",
    "MeZOAdam",
    "MeZOLoRA",
    "MeZOMomentum",
    "MeZOPrefix",
    "SubZero",
    "ZerothOrder",
    "optimizer",
]


class _ClosureObjective:
    """The runner's Objective, answered by the user's closures (zoft.scoring.base.Objective)."""

    def __init__(self) -> None:
        self.closure: Loss | None = None
        self.closure_pair: LossPair | None = None

    def loss(self, model: nn.Module, examples: Any) -> torch.Tensor:
        assert self.closure is not None
        return _as_tensor(self.closure())

    def loss_sum(self, model: nn.Module, examples: Any) -> tuple[torch.Tensor, int]:
        return self.loss(model, examples), 1

    def loss_sum_pair(self, model: nn.Module, examples: Any) -> tuple[tuple, tuple]:
        if self.closure_pair is None:
            raise ZoftError("a paired probe ran without closure_pair")
        first, second = self.closure_pair()
        return (_as_tensor(first), 1), (_as_tensor(second), 1)


def _as_tensor(value: torch.Tensor | float) -> torch.Tensor:
    return value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


class ZerothOrder:
    """A zeroth-order method of zoft on `model`; keyword options are the method's config fields
    (`zoft-run optimizer=<method> --help` lists them), validated as the runner validates them."""

    method: ClassVar[str] = ""

    def __init__(self, model: nn.Module, *, seed: int = 0, **options: Any) -> None:
        if not self.method:
            raise ZoftError("use a method's class (zo.MeZO, zo.LOZO, ...) or zo.optimizer(name)")
        facts = METHODS.facts(self.method)
        if not facts.zeroth_order:
            raise ZoftError(
                f"{self.method} trains by backprop; zoft.zo holds the zeroth-order methods"
            )
        if "micro_batches" in options:
            raise ZoftError("micro_batches is the runner's: split the batch in your closure")
        self.cfg = _method_config(self.method, options)
        self.model = model
        if enum_value(self.cfg.adapter) != AdapterKind.none:
            _add_adapter(model, self.cfg)
        self._objective = _ClosureObjective()
        self._optimizer = build_optimizer(self.cfg, model, self._objective, 0, seed)
        self.steps = 0  # optimizer steps taken: the step key of the next step's directions
        self.last: StepResult | None = None  # the last step's loss, lr and projected gradient

    def step(self, closure: Loss, closure_pair: LossPair | None = None) -> float:
        """One step: q two-point estimates from the closure, then the method's update; returns
        L(θ+εz) of the step (the runner's training loss). θ is exact after every probe."""
        self._objective.closure, self._objective.closure_pair = closure, closure_pair
        was_training = self.model.training
        try:
            self.last = self._optimizer.step((), self.steps)
        finally:
            self.model.train(was_training)
            self._objective.closure = self._objective.closure_pair = None
        self.steps += 1
        return self.last.loss

    def parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The parameters it trains, by name."""
        return iter(self._optimizer.trainable().items())

    def state_dict(self) -> dict[str, Any]:
        """What continues the run exactly (with the weights, which you save): the step count
        that keys the directions and the method's state (momentum, Adam moments, subspaces)."""
        return {"method": self.method, "steps": self.steps, "state": self._optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.method:
            raise ZoftError(f"this state is {state.get('method')}'s, not {self.method}'s")
        self._optimizer.load_state_dict(state["state"])
        self.steps = state["steps"]

    def stats(self) -> dict[str, Any]:
        """The runner's optimizer_stats: parameter passes, how the probes ran and why."""
        return self._optimizer.stats()


def _method_config(method: str, options: dict[str, Any]) -> Any:
    """The method's config node with the options merged (type-checked here; the optimizer
    checks ranges and combinations as it does under `zoft-run`)."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(METHODS.config(method)), {"name": method})
        return OmegaConf.merge(cfg, options)
    except OmegaConfBaseException as err:
        raise ZoftError(f"{method}: {err.msg}") from None


def _add_adapter(model: nn.Module, cfg: Any) -> None:
    """MeZO-LoRA's and MeZO-prefix's parameters, added as the runner adds them (targets: the
    method's lora.targets, else the architecture's)."""
    from zoft.models.adapters import add_adapter
    from zoft.models.detect import kind_of

    config = getattr(model, "config", None)
    kind = kind_of(config) if config is not None else "causal_lm"
    model_cfg = OmegaConf.structured(ModelConfig(name=type(model).__name__, kind=kind))
    add_adapter(model, cfg, model_cfg)


def _method(name: str, doc: str) -> type[ZerothOrder]:
    return type(name, (ZerothOrder,), {"method": METHOD_NAMES[name], "__doc__": doc})


# the class of each zeroth-order method (tests/test_zo.py checks every one is here)
METHOD_NAMES = {
    "MeZO": "mezo",
    "MeZOLoRA": "mezo-lora",
    "MeZOPrefix": "mezo-prefix",
    "MeZOMomentum": "mezo-m",
    "MeZOAdam": "mezo-adam",
    "LOZO": "lozo",
    "LOZOM": "lozo-m",
    "SubZero": "subzero",
}
MeZO = _method("MeZO", "MeZO: θ ← θ − η(g z + λθ), g = (L(θ+εz) − L(θ−εz)) / 2ε.")
MeZOLoRA = _method("MeZOLoRA", "MeZO on LoRA adapters it adds (lora.r, lora.targets).")
MeZOPrefix = _method("MeZOPrefix", "MeZO on a prefix it adds (prefix_tokens, prefix_init).")
MeZOMomentum = _method("MeZOMomentum", "MeZO's estimate g z into SGD with momentum (fp32).")
MeZOAdam = _method("MeZOAdam", "MeZO's estimate g z into Adam (fp32 moments).")
LOZO = _method("LOZO", "LOZO: low-rank directions z = UVᵀ, V lazily resampled.")
LOZOM = _method("LOZOM", "LOZO-M: LOZO with low-rank momentum.")
SubZero = _method("SubZero", "SubZero: directions in lazily updated random subspaces.")


def optimizer(name: str, model: nn.Module, **options: Any) -> ZerothOrder:
    """The zeroth-order method registered as `name` (mezo, lozo, ...), by its zoft-run name."""
    for cls_name, method in METHOD_NAMES.items():
        if method == name:
            return globals()[cls_name](model, **options)
    known = ", ".join(sorted(METHOD_NAMES.values()))
    raise ZoftError(f"no zeroth-order method '{name}' in zoft.zo; known: {known}")

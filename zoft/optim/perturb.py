"""The perturbation engine every zeroth-order method shares (DESIGN §6.6).

Keyed randomness: the direction z of a parameter is regenerated from a generator seeded with a
hash of (run seed, step, query, parameter name), so perturb and update always use identical
numbers, whatever the order in which parameters are visited or the device that holds them.

Exact restore by construction: a probe never writes θ. While a probe is active, every module that
owns a perturbed parameter swaps in a transient θ + scale·z on entry to its forward and swaps the
untouched original back on exit. After the probes θ is bit-identical in every dtype, and the only
pass that writes θ is the update (the reference in-place scheme, +ε / −2ε / +ε, cannot restore
fp16/bf16 weights exactly and needs four passes).

A parameter read outside its owner's forward (e.g. nn.MultiheadAttention's out_proj) is found by
the first probe, which is then repeated with that parameter perturbed in place for the probe's
duration and restored from a copy of just that parameter: still exact, at the memory of the copy.

The engine puts together the walk over the model (zoft.optim.walk), the per-parameter maths
(zoft.optim.arithmetic), the sequential probe (zoft.optim.sequential), paired probes (zoft.optim.paired: θ+εz and
θ−εz in one forward over the batch twice) and the pairing policy (zoft.optim.probes: the first
paired step runs both ways and compares before pairing is trusted).

Passes: `passes` counts sweeps over the perturbed parameters that form or write a θ-sized tensor
(a z, a transient θ±εz, an update); the reference scheme needs 4 per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch
from torch import nn

from zoft.optim.arithmetic import Perturbation
from zoft.optim.directions import Directions, GaussianDirections, direction_seed
from zoft.optim.paired import PairedProbe
from zoft.optim.probes import PROBE_MODES, PairedProbeUnsupported, PairingPolicy, pairs_by_default
from zoft.optim.sequential import SequentialProbe
from zoft.optim.walk import Owned, ParameterWalk

__all__ = ["PROBE_MODES", "PerturbationEngine", "direction_seed", "pairs_by_default"]

T = TypeVar("T")


class PerturbationEngine:
    """Keyed directions (Gaussian unless given) over a fixed set of named parameters."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, nn.Parameter],
        seed: int,
        directions: Directions | None = None,
        probes: str = "sequential",
        max_memory_ratio: float = 1.05,
        rounding: str = "nearest",
    ) -> None:
        self.walk = ParameterWalk(model, params)
        self.maths = Perturbation(directions or GaussianDirections(seed), rounding)
        resolution = max(
            (torch.finfo(p.dtype).eps for p in self.walk.params.values()),
            default=torch.finfo(torch.float32).eps,
        )
        self.pairing = PairingPolicy(probes, self.walk.device, resolution, max_memory_ratio)
        self.sequential = SequentialProbe(self.walk, self.maths)
        self.seed = seed

    @property
    def model(self) -> nn.Module:
        return self.walk.model

    @property
    def params(self) -> dict[str, nn.Parameter]:
        return self.walk.params

    @property
    def numel(self) -> int:
        return self.walk.numel

    @property
    def directions(self) -> Directions:
        return self.maths.directions

    @property
    def swept(self) -> int:
        """Elements of θ-sized tensors formed or written (passes = swept / numel)."""
        return self.maths.swept

    @property
    def copy_restored(self) -> set[str]:
        """Parameters read outside their module's forward (perturbed in place, then restored)."""
        return self.sequential.copy_restored

    @property
    def _active(self) -> set[str]:
        return self.sequential.active

    @property
    def paired(self) -> bool | None:
        """None until the first paired step is verified, then whether pairing was kept."""
        return self.pairing.paired

    @paired.setter
    def paired(self, value: bool | None) -> None:
        self.pairing.paired = value

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: whether pairing was checked and kept, the pass counter, and
        the parameters found to be read outside their module's forward."""
        return {
            "paired": self.pairing.paired,
            "pairing_inconclusive": self.pairing.inconclusive,
            "swept": self.maths.swept,
            "copy_restored": sorted(self.copy_restored),
            "checked": self.sequential.checked,
            "probes_reason": self.pairing.reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairing.paired = state["paired"]
        self.pairing.inconclusive = state.get("pairing_inconclusive", 0)  # older checkpoints
        self.maths.swept = state["swept"]
        self.sequential.copy_restored = set(state["copy_restored"])
        self.sequential.checked = state["checked"]
        self.pairing.reason = state.get("probes_reason", self.pairing.reason)  # older checkpoints

    @property
    def touched(self) -> set[str]:
        """Parameters some probe has perturbed so far (diagnostics)."""
        return set(self.walk.touched)

    @property
    def passes(self) -> float:
        """Sweeps over the perturbed parameters so far (see the module docstring)."""
        return self.maths.swept / max(self.walk.numel, 1)

    def note_touched(self, name: str) -> None:
        self.walk.touched.add(name)

    def direction(self, name: str, step: int, query: int = 0) -> torch.Tensor:
        """z for one parameter, in fp32, on the parameter's device (one sweep over it)."""
        return self.maths.direction(name, self.params[name], step, query)

    def perturbed(self, name: str, step: int, scale: float, query: int = 0) -> torch.Tensor:
        """A new tensor θ + scale·z in the parameter's dtype (θ is not modified)."""
        return self.maths.perturbed(name, self.params[name].data, step, scale, query)

    def owners(self) -> list[tuple[nn.Module, Owned]]:
        """Each module that directly owns hook-perturbed parameters, with (attribute, name)."""
        return self.walk.owners(frozenset(self.copy_restored))

    def paired_probe(self, step: int, scale: float, query: int = 0) -> PairedProbe:
        """A probe whose forwards over [B; B] see θ+scale·z on the first B rows, θ−scale·z on
        the last B."""
        return PairedProbe(self.walk, self.maths, step, scale, query, frozenset(self.copy_restored))

    def two_point(
        self,
        step: int,
        eps: float,
        loss: Callable[[], float],
        loss_pair: Callable[[], tuple[float, float]] | None,
        query: int = 0,
    ) -> tuple[float, float]:
        """(L(θ+εz), L(θ−εz)): one paired forward when `loss_pair` (the loss of the batch run
        twice over, one value per copy) is given and pairing holds, else two forwards."""

        def sequential() -> tuple[float, float]:
            return self._sequential(step, eps, loss, query)

        def paired(verify: bool) -> tuple[float, float]:
            assert loss_pair is not None
            return self._paired(step, eps, loss_pair, query, verify)

        return self.pairing.two_point(
            step, sequential, None if loss_pair is None else paired, inference=loss
        )

    def _sequential(
        self, step: int, eps: float, loss: Callable[[], float], query: int
    ) -> tuple[float, float]:
        return self.loss_at(step, +eps, loss, query), self.loss_at(step, -eps, loss, query)

    def _paired(
        self,
        step: int,
        eps: float,
        loss_pair: Callable[[], tuple[float, float]],
        query: int,
        verify: bool,
    ) -> tuple[float, float]:
        """loss_pair() under a paired probe; `verify`: first check that it perturbed every
        parameter (PairedProbeUnsupported if not)."""
        if not verify:
            with self.paired_probe(step, eps, query).installed():
                return loss_pair()
        earlier, self.walk.touched = self.walk.touched, set()
        try:
            with self.paired_probe(step, eps, query).installed():
                losses = loss_pair()
            missed = self.walk.missed()
            if missed:
                raise PairedProbeUnsupported(
                    f"{len(missed)} parameter(s) are read outside their module's forward "
                    f"({', '.join(sorted(missed)[:3])})"
                )
        finally:
            self.walk.touched |= earlier
        return losses

    def loss_at(self, step: int, scale: float, fn: Callable[[], T], query: int = 0) -> T:
        """fn() evaluated at θ + scale·z (zoft.optim.sequential)."""
        return self.sequential.loss_at(step, scale, fn, query)

    def probe(self, step: int, scale: float, query: int = 0) -> AbstractContextManager[None]:
        """Forward passes inside the block see θ + scale·z; afterwards θ is bit-identical."""
        return self.sequential.probe(step, scale, query)

    def update(self, step: int, coeff: float | Sequence[float], decay: float = 0.0) -> None:
        """θ ← θ·(1 − decay) + Σ_q coeff[q]·z_q (one coefficient per query, or a single one for
        query 0), with decay applied only to parameters of 2+ dimensions (biases and norm weights
        are 1-D). One sweep per query, block by block of rows; a low-rank z is applied as U Vᵀ by
        addmm without being formed; the arithmetic is in fp32 (in place for fp32 weights),
        rounded once."""
        coeffs = [coeff] if isinstance(coeff, int | float) else list(coeff)
        self.maths.update(self.params, step, coeffs, decay)

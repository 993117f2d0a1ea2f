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

Paired probes (zoft.optim.paired) evaluate θ+εz and θ−εz in one forward over the batch twice;
the first step runs both ways and compares before pairing is trusted (PROBE_MODES).

Passes: `passes` counts sweeps over the perturbed parameters that form or write a θ-sized tensor
(a z, a transient θ±εz, an update); the reference scheme needs 4 per step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from zoft.errors import ZoftError
from zoft.optim.directions import Directions, GaussianDirections, direction_seed, row_blocks
from zoft.optim.paired import PairedProbe, PairedProbeUnsupported

__all__ = ["PROBE_MODES", "PerturbationEngine", "direction_seed", "pairs_by_default"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# auto: paired probes on CUDA, where one forward at 2B usually costs less than two at B;
# sequential on a CPU, where it costs about as much (results/bench: faster on short inputs,
# slower on long ones). A fixed rule, so the same command computes the same bits. paired:
# wherever it runs. Either way the first paired step is compared with sequential probes, and a
# model that cannot be paired falls back (auto) or is an error (paired). sequential: two
# forwards at batch B.
PROBE_MODES = ("auto", "paired", "sequential")
# How far a paired loss may sit from the sequential one at the first step, by weight precision:
# fp32 compares L+ − L− (the estimate itself), half precision each loss (its rounding of θ±εz
# differs from the paired path's, which never rounds W + εUVᵀ).
_FP32_TOLERANCE = 1e-2
_HALF_TOLERANCE = 2e-2

# (parameter, its untouched data, canonical name) for each swap a module's pre-hook made
_Frame = list[tuple[nn.Parameter, torch.Tensor, str]]


def pairs_by_default(device: torch.device) -> bool:
    """Whether probes=auto pairs on this device (see PROBE_MODES)."""
    return device.type == "cuda"


class PerturbationEngine:
    """Keyed directions (Gaussian unless given) over a fixed set of named parameters."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, nn.Parameter],
        seed: int,
        directions: Directions | None = None,
        probes: str = "sequential",
    ) -> None:
        if probes not in PROBE_MODES:
            raise ZoftError(
                f"optimizer.probes={probes!r} is invalid: use one of {', '.join(PROBE_MODES)}"
            )
        self.model = model
        self.params = params
        self.seed = seed
        self.directions = directions or GaussianDirections(seed)
        self.probes = probes
        device = next(iter(params.values())).device if params else torch.device("cpu")
        pairs = probes == "paired" or (probes == "auto" and pairs_by_default(device))
        self.paired: bool | None = None if pairs else False  # None: not yet checked
        self.numel = sum(p.numel() for p in params.values())
        self.swept = 0  # elements of θ-sized tensors formed or written (passes = swept / numel)
        self.copy_restored: set[str] = set()  # parameters read outside their owner's forward
        self._active: set[str] = set()
        self._touched: set[str] = set()
        self._checked = False
        self._owner_cache: tuple[frozenset[str], list] | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: whether pairing was checked and kept, the pass counter, and
        the parameters found to be read outside their module's forward."""
        return {
            "paired": self.paired,
            "swept": self.swept,
            "copy_restored": sorted(self.copy_restored),
            "checked": self._checked,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.paired = state["paired"]
        self.swept = state["swept"]
        self.copy_restored = set(state["copy_restored"])
        self._checked = state["checked"]

    @property
    def touched(self) -> set[str]:
        """Parameters some probe has perturbed so far (diagnostics)."""
        return set(self._touched)

    @property
    def passes(self) -> float:
        """Sweeps over the perturbed parameters so far (see the module docstring)."""
        return self.swept / max(self.numel, 1)

    def note_touched(self, name: str) -> None:
        self._touched.add(name)

    def direction(self, name: str, step: int, query: int = 0) -> torch.Tensor:
        """z for one parameter, in fp32, on the parameter's device (one sweep over it)."""
        p = self.params[name]
        self.swept += p.numel()
        return self.directions.dense(name, p, step, query)

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
        if loss_pair is None or self.paired is False:
            return self._sequential(step, eps, loss, query)
        if self.paired is None:
            return self._check_paired(step, eps, loss, loss_pair, query)
        with PairedProbe(self, step, eps, query).installed():
            return loss_pair()

    def _sequential(
        self, step: int, eps: float, loss: Callable[[], float], query: int
    ) -> tuple[float, float]:
        return self.loss_at(step, +eps, loss, query), self.loss_at(step, -eps, loss, query)

    def _check_paired(
        self,
        step: int,
        eps: float,
        loss: Callable[[], float],
        loss_pair: Callable[[], tuple[float, float]],
        query: int,
    ) -> tuple[float, float]:
        """The first paired probe, checked against sequential probes before pairing is kept."""
        earlier, self._touched = self._touched, set()
        try:
            with PairedProbe(self, step, eps, query).installed():
                paired = loss_pair()
            missed = set(self.params) - self._touched
            if missed:
                raise PairedProbeUnsupported(
                    f"{len(missed)} parameter(s) are read outside their module's forward "
                    f"({', '.join(sorted(missed)[:3])})"
                )
        except (PairedProbeUnsupported, RuntimeError) as exc:  # a module not batch-first
            self._refuse_pairing(str(exc))
            return self._sequential(step, eps, loss, query)
        finally:
            self._touched |= earlier
        sequential = self._sequential(step, eps, loss, query)
        if not self._agree(paired, sequential):
            self._refuse_pairing(
                f"paired losses {paired[0]:.6g} / {paired[1]:.6g} differ from sequential "
                f"{sequential[0]:.6g} / {sequential[1]:.6g}"
            )
            return sequential
        log.info(
            "paired probes agree with sequential probes at step %d (L+ %.6g vs %.6g, "
            "L- %.6g vs %.6g): both probes now run in one forward",
            step, paired[0], sequential[0], paired[1], sequential[1],
        )  # fmt: skip
        self.paired = True
        return paired

    def _refuse_pairing(self, reason: str) -> None:
        if self.probes == "paired":
            raise ZoftError(
                f"optimizer.probes=paired cannot be used with this model: {reason}; "
                "set optimizer.probes=sequential (or auto)"
            )
        log.warning("paired probes are off for this run (%s); using sequential probes", reason)
        self.paired = False

    def _agree(self, paired: tuple[float, float], sequential: tuple[float, float]) -> bool:
        full_precision = all(
            p.dtype in (torch.float32, torch.float64) for p in self.params.values()
        )
        scale = max(1.0, abs(sequential[0]), abs(sequential[1]))
        if full_precision:
            estimate, expected = paired[0] - paired[1], sequential[0] - sequential[1]
            return abs(estimate - expected) <= _FP32_TOLERANCE * abs(expected) + 1e-5 * scale
        return all(
            abs(a - b) <= _HALF_TOLERANCE * scale for a, b in zip(paired, sequential, strict=True)
        )

    def perturbed(self, name: str, step: int, scale: float, query: int = 0) -> torch.Tensor:
        """A new tensor θ + scale·z in the parameter's dtype (θ is not modified), formed block by
        block of rows: the only other memory is one block of z."""
        original = self.params[name].data
        self.swept += original.numel()
        blocks = row_blocks(original)
        if len(blocks) == 1:
            z = self.directions.dense_block(name, original, step, query, 0)
            return z.mul_(scale).add_(original).to(original.dtype)
        out = torch.empty_like(original)
        for index, rows in enumerate(blocks):
            z = self.directions.dense_block(name, original, step, query, index)
            out[rows] = z.mul_(scale).add_(original[rows]).to(original.dtype)
        return out

    def loss_at(self, step: int, scale: float, fn: Callable[[], T], query: int = 0) -> T:
        """fn() evaluated at θ + scale·z. The first call checks that every parameter was really
        perturbed and, if not, switches the missed ones to copy-restore and evaluates again."""
        with self.probe(step, scale, query):
            value = fn()
        if not self._checked:
            self._checked = True
            missed = set(self.params) - self._touched - self.copy_restored
            if missed:
                log.warning(
                    "%d parameter(s) are read outside their module's forward (%s); they are "
                    "perturbed in place and restored from a copy",
                    len(missed),
                    ", ".join(sorted(missed)[:5]),
                )
                self.copy_restored |= missed
                with self.probe(step, scale, query):
                    value = fn()
        return value

    @contextmanager
    def probe(self, step: int, scale: float, query: int = 0) -> Iterator[None]:
        """Forward passes inside the block see θ + scale·z; afterwards θ is bit-identical."""
        frames: list[list[_Frame]] = []
        handles = []
        saved = self._perturb_copy_restored(step, scale, query)
        for module, owned in self._owners():
            stack: list[_Frame] = []
            frames.append(stack)
            enter = self._make_enter(owned, step, scale, query, stack)
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(self._make_exit(stack), always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for stack in frames:  # a forward that died between its hooks leaves frames behind
                while stack:
                    _restore(stack.pop())
            for name, data in saved.items():
                self.params[name].data.copy_(data)
            self._active.clear()

    def _owners(self) -> list[tuple[nn.Module, list[tuple[str, str]]]]:
        """Each module that directly owns hook-perturbed parameters, with (attribute, name)."""
        key = frozenset(self.copy_restored)
        if self._owner_cache is not None and self._owner_cache[0] == key:
            return self._owner_cache[1]
        name_of = {id(p): n for n, p in self.params.items() if n not in self.copy_restored}
        owners = []
        for module in self.model.modules():
            owned = [
                (attr, name_of[id(p)])
                for attr, p in module._parameters.items()
                if p is not None and id(p) in name_of
            ]
            if owned:
                owners.append((module, owned))
        self._owner_cache = (key, owners)
        return owners

    @torch.no_grad()
    def _perturb_copy_restored(
        self, step: int, scale: float, query: int
    ) -> dict[str, torch.Tensor]:
        saved = {}
        for name in sorted(self.copy_restored):
            saved[name] = self.params[name].data.clone()
            self.params[name].data.copy_(self.perturbed(name, step, scale, query))
            self._touched.add(name)
        return saved

    def _make_enter(self, owned, step, scale, query, stack: list[_Frame]):
        def enter(module: nn.Module, args: object) -> None:
            frame: _Frame = []
            stack.append(frame)  # first, so the exit hook always finds this call's frame
            for attr, name in owned:
                if name in self._active:  # a tied parameter already perturbed by an outer module
                    continue
                param = module._parameters[attr]
                original = param.data
                self._active.add(name)
                frame.append((param, original, name))
                param.data = self.perturbed(name, step, scale, query)
                self._touched.add(name)

        return enter

    def _make_exit(self, stack: list[_Frame]):
        def exit_(module: nn.Module, args: object, output: object) -> None:
            frame = stack.pop()
            _restore(frame)
            self._active.difference_update(name for _, _, name in frame)

        return exit_

    @torch.no_grad()
    def update(self, step: int, coeff: float | Sequence[float], decay: float = 0.0) -> None:
        """θ ← θ·(1 − decay) + Σ_q coeff[q]·z_q (one coefficient per query, or a single one for
        query 0), with decay applied only to parameters of 2+ dimensions (biases and norm weights
        are 1-D). One sweep per query, block by block of rows; a low-rank z is applied as U Vᵀ by
        addmm without being formed; the arithmetic is in fp32 (in place for fp32 weights),
        rounded once."""
        coeffs = [coeff] if isinstance(coeff, int | float) else list(coeff)
        for name, p in self.params.items():
            factors = [self.directions.low_rank(name, p, step, q) for q in range(len(coeffs))]
            for index, rows in enumerate(row_blocks(p)):
                value = p.data[rows].float()  # a view of p.data itself when fp32
                if decay and p.ndim >= 2:
                    value.mul_(1.0 - decay)
                for query, (c, uv) in enumerate(zip(coeffs, factors, strict=True)):
                    if uv is None:
                        z = self.directions.dense_block(name, p, step, query, index)
                        value.add_(z, alpha=c)
                    else:
                        value.view(value.shape[0], -1).addmm_(uv[0][rows], uv[1].T, alpha=c)
                if value.data_ptr() != p.data[rows].data_ptr():
                    p.data[rows] = value
            self.swept += p.numel() * len(coeffs)


def _restore(frame: _Frame) -> None:
    for param, original, _ in frame:
        param.data = original

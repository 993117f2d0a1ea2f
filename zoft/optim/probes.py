"""The pairing policy: whether the two probes of a step run in one forward over [B; B]
(zoft.optim.paired) or in two, the first-step verification of pairing, and the fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from zoft.config import ProbeMode
from zoft.errors import ZoftError
from zoft.run.memory import MIB, peak_during

__all__ = ["PROBE_MODES", "PairedProbeUnsupported", "PairingPolicy", "pairs_by_default"]

log = logging.getLogger(__name__)

# auto: paired probes on CUDA, where one forward at 2B usually costs less than two at B, and
# only while their measured peak stays within optimizer.max_memory_ratio of an inference
# forward at the same batch (paired probes double the activations); sequential on a CPU, where
# they cost about as much (results/bench: faster on short inputs, slower on long ones). paired:
# wherever it runs. Either way the first paired step is compared with sequential probes, and a
# model that cannot be paired falls back (auto) or is an error (paired). sequential: two
# forwards at batch B. The decision and its reason go into result.json (optimizer_stats).
PROBE_MODES = tuple(mode.value for mode in ProbeMode)
# How far the paired estimate L+ − L− may sit from the sequential one at the first step. fp32:
# 1% of it (plus 1e-5 of the loss). Half precision: 2% of it plus the dtype's resolution of a
# loss, half an ulp of the weight dtype at |L| (the sequential path rounds θ ± εz into the
# weights, the paired one never forms W + εUVᵀ; measured on the tiny models at ε = 1e-3: up to
# 0.2 of that resolution in bf16 and fp16). The estimate is compared, not each loss, so a
# swapped pair (estimate −(L+ − L−)) is seen whenever |L+ − L−| exceeds the resolution; when
# it does not, the check cannot tell and is repeated at the next step.
_FP32_TOLERANCE = 1e-2
_HALF_TOLERANCE = 2e-2
# After this many steps with an estimate below the resolution, pairing is given up (auto) or
# refused (paired): a sign error would stay invisible.
_INCONCLUSIVE_CHECKS = 5

Losses = tuple[float, float]  # (L(θ+εz), L(θ−εz))
# fn -> (fn(), the peak bytes while it ran, or None): zoft.run.memory.peak_during on the device
Measure = Callable[[Callable[[], Any]], tuple[Any, int | None]]


class PairedProbeUnsupported(ZoftError):
    """This model cannot run both probes in one forward; sequential probes still work."""


def pairs_by_default(device: torch.device) -> bool:
    """Whether probes=auto pairs on this device (see PROBE_MODES)."""
    return device.type == "cuda"


class PairingPolicy:
    """probes=auto|paired|sequential and what the first paired step found: `paired` is None
    until verified, then True (kept) or False (sequential from then on)."""

    def __init__(
        self,
        mode: str,
        device: torch.device,
        resolution: float,
        max_memory_ratio: float = 1.05,
        measure: Measure | None = None,
    ) -> None:
        """`resolution`: the machine epsilon of the coarsest weight dtype (torch.finfo.eps);
        `max_memory_ratio`: auto pairs only while the paired peak stays within this multiple
        of the inference peak, as `measure` reads them (default: peak_during on `device`)."""
        if mode not in PROBE_MODES:
            raise ZoftError(
                f"optimizer.probes={mode!r} is invalid: use one of {', '.join(PROBE_MODES)}"
            )
        self.mode = mode
        self.resolution = resolution
        self.full_precision = resolution <= torch.finfo(torch.float32).eps
        self.max_memory_ratio = max_memory_ratio
        self.measure: Measure = measure or partial(peak_during, device=device)
        self.inconclusive = 0  # first-step checks that could not resolve the estimate
        pairs = mode == "paired" or (mode == "auto" and pairs_by_default(device))
        self.paired: bool | None = None if pairs else False
        self.reason = (  # why the probes run as they do (result.json)
            "optimizer.probes=sequential"
            if mode == "sequential"
            else "pairing is verified at the first step"
            if pairs
            else f"optimizer.probes=auto on {device.type}: two forwards at batch B cost about "
            "one at 2B here (results/bench), and sequential probes add no activations"
        )

    @property
    def decision(self) -> str:
        """How the probes run now: paired, sequential, or unverified (before the first step)."""
        return {True: "paired", False: "sequential", None: "unverified"}[self.paired]

    def two_point(
        self,
        step: int,
        sequential: Callable[[], Losses],
        paired: Callable[[bool], Losses] | None,
        inference: Callable[[], object] | None = None,
    ) -> Losses:
        """The step's two losses: `paired(verify)` (one forward; `verify` also checks that every
        parameter was perturbed) where pairing holds or is still to be verified, else
        `sequential()`. `inference`: an unperturbed forward at the same batch, the memory
        reference of probes=auto."""
        if paired is None and self.paired is not False:
            self.paired, self.reason = False, "this objective has no paired loss"
        if paired is None or self.paired is False:
            return sequential()
        if self.paired is None:
            return self._verified(step, sequential, paired, inference)
        return paired(False)

    def _verified(
        self,
        step: int,
        sequential: Callable[[], Losses],
        paired: Callable[[bool], Losses],
        inference: Callable[[], object] | None,
    ) -> Losses:
        """The first paired probe, checked against sequential probes (and, for auto, its peak
        against the inference peak) before pairing is kept."""
        gate = self.mode == "auto" and inference is not None
        reference = self.measure(inference)[1] if gate else None
        try:
            losses, peak = self.measure(lambda: paired(True)) if gate else (paired(True), None)
        except (PairedProbeUnsupported, RuntimeError) as exc:  # a module not batch-first
            self._refuse(str(exc))
            return sequential()
        expected = sequential()
        if reference and peak and peak > self.max_memory_ratio * reference:
            self._refuse(
                f"their peak {peak / MIB:.0f} MiB is {peak / reference:.3f} x the inference "
                f"peak {reference / MIB:.0f} MiB, above optimizer.max_memory_ratio="
                f"{self.max_memory_ratio:g}"
            )
            return expected
        tolerance = self._tolerance(expected)
        estimate, sequential_estimate = losses[0] - losses[1], expected[0] - expected[1]
        if not self.full_precision and max(abs(estimate), abs(sequential_estimate)) <= tolerance:
            self._inconclusive(step, estimate, sequential_estimate, tolerance)
            return expected
        if abs(estimate - sequential_estimate) > tolerance:
            self._refuse(
                f"paired losses {losses[0]:.6g} / {losses[1]:.6g} (L+ − L− {estimate:.3g}) differ "
                f"from sequential {expected[0]:.6g} / {expected[1]:.6g} (L+ − L− "
                f"{sequential_estimate:.3g}) by more than {tolerance:.2g}"
            )
            return expected
        log.info(
            "paired probes agree with sequential probes at step %d (L+ %.6g vs %.6g, "
            "L- %.6g vs %.6g): both probes now run in one forward",
            step, losses[0], expected[0], losses[1], expected[1],
        )  # fmt: skip
        self.paired = True
        self.reason = (
            f"optimizer.probes={self.mode}: paired and sequential probes agree at step {step}"
        )
        if reference and peak:
            self.reason += (
                f", and the paired peak {peak / MIB:.0f} MiB is {peak / reference:.3f} x the "
                f"inference peak {reference / MIB:.0f} MiB (max_memory_ratio "
                f"{self.max_memory_ratio:g})"
            )
        return losses

    def _refuse(self, reason: str) -> None:
        if self.mode == "paired":
            raise ZoftError(
                f"optimizer.probes=paired cannot be used with this model: {reason}; "
                "set optimizer.probes=sequential (or auto)"
            )
        # auto's designed fallback (exact, only slower): information, not a warning
        log.info("paired probes are off for this run (%s); using sequential probes", reason)
        self.paired = False
        self.reason = f"optimizer.probes=auto fell back to sequential probes: {reason}"

    def _tolerance(self, sequential: Losses) -> float:
        """How far the paired L+ − L− may sit from the sequential one (see _FP32_TOLERANCE)."""
        scale = max(1.0, abs(sequential[0]), abs(sequential[1]))
        expected = abs(sequential[0] - sequential[1])
        if self.full_precision:
            return _FP32_TOLERANCE * expected + 1e-5 * scale
        return _HALF_TOLERANCE * expected + 0.5 * self.resolution * scale

    def _inconclusive(self, step: int, estimate: float, expected: float, tolerance: float) -> None:
        """Both estimates lie within the loss resolution: their signs cannot be compared."""
        self.inconclusive += 1
        reason = (
            f"L+ − L− ({estimate:.3g} paired, {expected:.3g} sequential) stays within the "
            f"loss resolution {tolerance:.2g} of these half-precision weights, so a sign error "
            "could not be seen; a larger optimizer.eps makes it measurable"
        )
        if self.inconclusive >= _INCONCLUSIVE_CHECKS:
            self._refuse(f"{reason} ({self.inconclusive} steps)")
        else:
            log.info("step %d: %s; checking paired probes again at the next step", step, reason)

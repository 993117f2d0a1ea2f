"""Guards on each training step (DESIGN §9): non-finite steps, divergence, updates that round away.

- A non-finite loss or projected gradient is refused by the optimizer before it updates anything
  (NonFiniteStep); `guard.nonfinite` says whether that stops the run or skips the batch, and
  `guard.max_skipped` bounds how many batches may be skipped. (LMAO checks each phase before its
  own update: a non-finite ZO phase is caught after that step's LoRA update was applied.)
- Divergence: with `guard.divergence=f > 0`, the run stops once the mean loss of the last
  DIVERGENCE_WINDOW steps exceeds f times the mean of the first DIVERGENCE_WINDOW.
- Resolution: an update η·|g| below half the spacing of the weights' dtype around their typical
  magnitude mostly rounds away (MeZO with bf16 weights); the first such step logs a warning and
  result.json counts them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from zoft.errors import ZoftError
from zoft.optim.base import NonFiniteStep, Optimizer, StepResult

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")
DIVERGENCE_WINDOW = 10


class GuardError(ZoftError):
    """A guard stopped the run (too many skipped batches, a diverging loss) or is misconfigured."""


@dataclass
class GuardSettings:
    nonfinite: str = "stop"
    max_skipped: int = 10
    divergence: float = 0.0

    def __post_init__(self) -> None:
        if self.nonfinite not in NONFINITE_POLICIES:
            raise GuardError(
                f"guard.nonfinite={self.nonfinite!r} is invalid: use one of "
                f"{', '.join(NONFINITE_POLICIES)}"
            )
        if self.max_skipped < 0 or self.divergence < 0:
            raise GuardError(
                f"guard.max_skipped={self.max_skipped} and guard.divergence={self.divergence} "
                "must be at least 0 (0 turns the limit off)"
            )


class StepGuard:
    """Applies the guard settings to each step of one training loop; its state is checkpointed."""

    def __init__(self, settings: GuardSettings, optimizer: Optimizer) -> None:
        self.settings = settings
        self.optimizer = optimizer
        self.skipped = 0
        self.below_resolution = 0
        self.baseline: float | None = None
        self.recent: deque[float] = deque(maxlen=DIVERGENCE_WINDOW)
        self._resolution: float | None = None

    def non_finite(self, err: NonFiniteStep) -> str:
        """The reason to record for a skipped batch; raises when the policy is to stop."""
        if self.settings.nonfinite == "stop":
            raise err
        self.skipped += 1
        limit = self.settings.max_skipped
        if limit and self.skipped > limit:
            raise GuardError(
                f"{self.skipped} batches had non-finite losses, more than guard.max_skipped="
                f"{limit}; the run is not learning: lower the learning rate (or eps) or train "
                "in dtype=fp32"
            ) from err
        log.warning("%s (skipped: %d so far)", err, self.skipped)
        return str(err)

    def check(self, step: int, result: StepResult) -> None:
        """After a step: the resolution warning and the divergence test."""
        if result.update_scale is not None:
            self._check_resolution(step, result.update_scale)
        if self.settings.divergence:
            self._check_divergence(step, result.loss)

    def _check_resolution(self, step: int, scale: float) -> None:
        if self._resolution is None:
            self._resolution = self.optimizer.weight_resolution()
        if scale >= self._resolution / 2:
            return
        self.below_resolution += 1
        if self.below_resolution > 1:
            return
        if str(getattr(self.optimizer.cfg, "rounding", "nearest")) != "nearest":
            advice = (
                "stochastic rounding keeps such updates in expectation (a weight moves by a "
                "whole unit with the matching probability)"
            )
        else:
            advice = (
                "rounded to nearest, most weights do not change; train in dtype=fp32, raise the "
                "learning rate, or set optimizer.rounding=stochastic (ZO methods)"
            )
        log.warning(
            "step %d: the update scale η·|g| = %.3g is below half the resolution of the weights "
            "(%.3g: their dtype's epsilon times their RMS); %s (result.json counts such steps "
            "as steps_below_resolution)",
            step + 1,
            scale,
            self._resolution,
            advice,
        )

    def _check_divergence(self, step: int, loss: float) -> None:
        self.recent.append(loss)
        if len(self.recent) < DIVERGENCE_WINDOW:
            return
        mean = sum(self.recent) / len(self.recent)
        if self.baseline is None:
            self.baseline = mean
            return
        if mean > self.settings.divergence * self.baseline:
            raise GuardError(
                f"step {step + 1}: the loss diverged: the mean of the last {DIVERGENCE_WINDOW} "
                f"steps, {mean:.4g}, exceeds guard.divergence={self.settings.divergence} times "
                f"the first {DIVERGENCE_WINDOW} steps' {self.baseline:.4g}; lower the learning "
                "rate (or set guard.divergence=0 to turn the check off)"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "below_resolution": self.below_resolution,
            "baseline": self.baseline,
            "recent": list(self.recent),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = state["skipped"]
        self.below_resolution = state["below_resolution"]
        self.baseline = state["baseline"]
        self.recent = deque(state["recent"], maxlen=DIVERGENCE_WINDOW)

"""The pairing policy: whether the two probes of a step run in one forward over [B; B]
(zoft.optim.paired) or in two, the first-step verification of pairing, and the fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from zoft.errors import ZoftError

__all__ = ["PROBE_MODES", "PairedProbeUnsupported", "PairingPolicy", "pairs_by_default"]

log = logging.getLogger(__name__)

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

Losses = tuple[float, float]  # (L(θ+εz), L(θ−εz))


class PairedProbeUnsupported(ZoftError):
    """This model cannot run both probes in one forward; sequential probes still work."""


def pairs_by_default(device: torch.device) -> bool:
    """Whether probes=auto pairs on this device (see PROBE_MODES)."""
    return device.type == "cuda"


class PairingPolicy:
    """probes=auto|paired|sequential and what the first paired step found: `paired` is None
    until verified, then True (kept) or False (sequential from then on)."""

    def __init__(self, mode: str, device: torch.device, full_precision: bool) -> None:
        if mode not in PROBE_MODES:
            raise ZoftError(
                f"optimizer.probes={mode!r} is invalid: use one of {', '.join(PROBE_MODES)}"
            )
        self.mode = mode
        self.full_precision = full_precision
        pairs = mode == "paired" or (mode == "auto" and pairs_by_default(device))
        self.paired: bool | None = None if pairs else False

    def two_point(
        self,
        step: int,
        sequential: Callable[[], Losses],
        paired: Callable[[bool], Losses] | None,
    ) -> Losses:
        """The step's two losses: `paired(verify)` (one forward; `verify` also checks that every
        parameter was perturbed) where pairing holds or is still to be verified, else
        `sequential()`."""
        if paired is None or self.paired is False:
            return sequential()
        if self.paired is None:
            return self._verified(step, sequential, paired)
        return paired(False)

    def _verified(
        self, step: int, sequential: Callable[[], Losses], paired: Callable[[bool], Losses]
    ) -> Losses:
        """The first paired probe, checked against sequential probes before pairing is kept."""
        try:
            losses = paired(True)
        except (PairedProbeUnsupported, RuntimeError) as exc:  # a module not batch-first
            self._refuse(str(exc))
            return sequential()
        expected = sequential()
        if not self._agree(losses, expected):
            self._refuse(
                f"paired losses {losses[0]:.6g} / {losses[1]:.6g} differ from sequential "
                f"{expected[0]:.6g} / {expected[1]:.6g}"
            )
            return expected
        log.info(
            "paired probes agree with sequential probes at step %d (L+ %.6g vs %.6g, "
            "L- %.6g vs %.6g): both probes now run in one forward",
            step, losses[0], expected[0], losses[1], expected[1],
        )  # fmt: skip
        self.paired = True
        return losses

    def _refuse(self, reason: str) -> None:
        if self.mode == "paired":
            raise ZoftError(
                f"optimizer.probes=paired cannot be used with this model: {reason}; "
                "set optimizer.probes=sequential (or auto)"
            )
        log.warning("paired probes are off for this run (%s); using sequential probes", reason)
        self.paired = False

    def _agree(self, paired: Losses, sequential: Losses) -> bool:
        scale = max(1.0, abs(sequential[0]), abs(sequential[1]))
        if self.full_precision:
            estimate, expected = paired[0] - paired[1], sequential[0] - sequential[1]
            return abs(estimate - expected) <= _FP32_TOLERANCE * abs(expected) + 1e-5 * scale
        return all(
            abs(a - b) <= _HALF_TOLERANCE * scale for a, b in zip(paired, sequential, strict=True)
        )

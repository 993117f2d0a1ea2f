"""trajectory.jsonl: what a pure ZO run's steps did, one line per step.

A ZO update is fixed by the step number (which keys its directions and rounding), the projected
gradient of each query and the learning rate, so these lines and the base model are the whole run
(the MeZO paper's §2.1 observation): `zoft-replay` rebuilds the weights of any step from them.
Each line is `{"step": k, "g": [g_1, ..., g_q], "lr": η, "skipped": false}` (k counts from 1, as
metrics.jsonl does); a step the guards skipped has `"g": null, "skipped": true`. Floats are
written with Python's repr, which reads back to the same double, so a replay is bit-identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoft.errors import ZoftError
from zoft.run.rundir import atomic_write


class TrajectoryError(ZoftError):
    """A trajectory that cannot rebuild the asked-for step."""


@dataclass(frozen=True)
class TrajectoryStep:
    step: int  # 1-based: the update of optimizer step `step - 1`
    estimates: list[float] | None  # None: skipped, no update
    lr: float | None

    @property
    def skipped(self) -> bool:
        return self.estimates is None

    def to_json(self) -> str:
        line = {"step": self.step, "g": self.estimates, "lr": self.lr, "skipped": self.skipped}
        return json.dumps(line)


class TrajectoryLog:
    """Appends one line per step, flushed as it goes; None writes nothing (ranks other than 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, entry: TrajectoryStep) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(entry.to_json() + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after `step` (a resumed run writes them again)."""
        if self.path is None or not self.path.is_file():
            return
        kept = [e for e in read_trajectory(self.path) if e.step <= step]
        atomic_write(self.path, as_text(kept))

    def replace(self, source: Path, step: int) -> None:
        """Start over from another trajectory's steps 1..`step` (a trajectory checkpoint's copy,
        which a resumed run continues even where the run directory's file was lost)."""
        if self.path is None:
            return
        kept = [e for e in read_trajectory(source) if e.step <= step]
        atomic_write(self.path, as_text(kept))


def as_text(entries: list[TrajectoryStep]) -> str:
    """The trajectory.jsonl text of these steps."""
    return "".join(e.to_json() + "\n" for e in entries)


def apply_steps(
    optimizer: Any, entries: list[TrajectoryStep], after: Callable[[int], None] | None = None
) -> None:
    """Re-apply each recorded step's update (ZerothOrderOptimizer.apply_update with the step's
    own estimates; a skipped step changed nothing), calling `after(step)` once each step is done."""
    import torch

    with torch.no_grad():
        for entry in entries:
            if not entry.skipped:
                optimizer.apply_update(entry.step - 1, entry.estimates)
            if after is not None:
                after(entry.step)


def read_trajectory(path: Path) -> list[TrajectoryStep]:
    """Every line of a trajectory file, in order."""
    steps = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            steps.append(TrajectoryStep(int(data["step"]), data["g"], data["lr"]))
        except (ValueError, KeyError, TypeError) as err:
            raise TrajectoryError(
                f"{path}, line {number}, is not a trajectory line ({type(err).__name__}: {err}); "
                "a replay needs the file as the run wrote it"
            ) from None
    return steps


def steps_up_to(path: Path, step: int) -> list[TrajectoryStep]:
    """Steps 1..`step` of the trajectory, each exactly once, or an error naming what is missing."""
    entries = [e for e in read_trajectory(path) if e.step <= step]
    numbers = [e.step for e in entries]
    if numbers != list(range(1, step + 1)):
        have = f"steps {numbers[0]}..{numbers[-1]}" if numbers else "no steps"
        raise TrajectoryError(
            f"{path} holds {have} ({len(numbers)} lines), not each of steps 1..{step} once; "
            "ask for a step the run reached (--step), or re-run it to write its trajectory"
        )
    return entries

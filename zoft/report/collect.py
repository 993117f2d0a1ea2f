"""The one reader of run directories: result.json (through zoft.run.record), metrics.jsonl, and
the one-row-per-run table (settings, training loss, cost and peak memory) used for method
comparisons; aggregated tables are zoft.report.select / zoft.report.render."""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from zoft.report.render import markdown_table
from zoft.run.record import RunResult, read_record
from zoft.run.rundir import METRICS_FILE, RESULT_FILE
from zoft.tasks import TASKS, get_task

log = logging.getLogger(__name__)

Result = RunResult | dict[str, Any]  # a record, or a result.json dict (tests, older callers)


@dataclass(frozen=True)
class Skipped:
    """A result.json the tables leave out, and why: truncated, unreadable, wrong schema (a file
    that cannot be read as a result), or incomplete (a run that did not finish with a test)."""

    path: Path
    why: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.why}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Collection:
    """The complete runs under a folder, and every result.json there that was left out."""

    results: list[RunResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def unreadable(self) -> list[str]:
        """The files that could not be read as results (damaged, not merely unfinished)."""
        return [str(s) for s in self.skipped if s.why != INCOMPLETE]


INCOMPLETE = "incomplete"


def collect(root: Path) -> Collection:
    """Every complete result under `root` (one per run directory), and every file left out."""
    found = Collection()
    by_dir: dict[str, RunResult] = {}
    for path in sorted(Path(root).rglob(RESULT_FILE)):
        outcome = read_record(path)
        record = outcome.record
        if record is None:
            found.skipped.append(Skipped(path, outcome.kind, outcome.detail))
            continue
        problem = _schema_problem(record)
        if problem:
            found.skipped.append(Skipped(path, "wrong schema", problem))
        elif not record.complete:
            reason = f": {record.reason}" if record.reason else ""
            found.skipped.append(Skipped(path, INCOMPLETE, f"status {record.status}{reason}"))
        elif not record.test:
            found.skipped.append(Skipped(path, INCOMPLETE, "complete but no test result"))
        else:
            by_dir[str(path.parent.resolve())] = record
    found.results = list(by_dir.values())
    return found


def _schema_problem(record: RunResult) -> str:
    """The first field of a record whose value is not of its declared type (RunResult's
    annotations, one level into dicts and lists), so a table never trips over it later."""
    hints = typing.get_type_hints(RunResult)
    for f in dataclasses.fields(RunResult):
        value = getattr(record, f.name)
        if value is not None and not _of_type(value, hints[f.name]):
            return f"{f.name} is {value!r}, not {_type_words(hints[f.name])}"
    return ""


def _of_type(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_of_type(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool) and hint in (int, float):
        return False
    if hint is float:
        return isinstance(value, int | float)
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if not isinstance(value, origin):
        return False
    if origin is dict and args:
        return all(_of_type(v, args[1]) for v in value.values())
    if origin is list and args:
        return all(_of_type(v, args[0]) for v in value)
    return True


def _type_words(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace(" | None", "").replace("<class '", "")[:60]


def collect_results(root: Path) -> list[RunResult]:
    """Every complete result under `root` (damaged files are logged and left out)."""
    found = collect(root)
    for reason in found.unreadable:
        log.warning("skipping %s", reason)
    return found.results


def primary_metric(result: Result) -> str:
    """The task's own metric (task metadata), else the first metric the run reports."""
    record = RunResult.coerce(result)
    return get_task(record.task).metric if record.task in TASKS else next(iter(record.test or {}))


def logged_losses(run_dir: str | Path) -> pd.Series:
    """Training loss by step from a run's metrics.jsonl (empty when it is gone)."""
    path = Path(run_dir) / METRICS_FILE
    if not str(run_dir) or not path.is_file():
        return pd.Series(dtype=float)
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    points = {r["step"]: r["loss"] for r in records if r.get("loss") is not None and "step" in r}
    return pd.Series(points, dtype=float).sort_index()


def column_of(result: Result) -> str:
    """ "<model> <method>" with the papers' method name (MeZO, FT (LoRA), LOZO (lora), ICL)."""
    record = RunResult.coerce(result)
    return f"{record.model} {record.label}"


def provenance(
    results: Iterable[Result],
    cells: str = "test metric × 100 (mean ± std over runs when there are several)",
) -> str:
    """One line saying what the numbers are: run count, protocol, seeds, code version."""
    records = [RunResult.coerce(r) for r in results]

    def values(key: str) -> str:
        seen = {str(getattr(r, key) if hasattr(r, key) else r.extra.get(key)) for r in records}
        return ", ".join(sorted(seen))

    return (
        f"{len(records)} runs; protocol {values('protocol')}; data_seed {values('data_seed')}; "
        f"seed {values('seed')}; zoft {values('zoft_version')} at commit {values('git_commit')}. "
        f"Cells: {cells}."
    )


def _loss_window(losses: list[float], first: bool, share: float = 0.1) -> str:
    """Mean of the first / last `share` of the logged losses (single steps are batch noise)."""
    if not losses:
        return ""
    n = max(1, round(share * len(losses)))
    window = losses[:n] if first else losses[-n:]
    return f"{statistics.fmean(window):.3f}"


def _peak(record: RunResult, *phases: str) -> str:
    """The largest peak over the phases that ran: CUDA peak allocated per device, else host RSS."""
    memory = record.memory_record
    devices = memory.device_peaks_mib(*phases)
    if devices:
        return ", ".join(f"{v:.0f}" for v in devices.values())
    peak = memory.peak_mib(*phases)
    return "" if peak != peak else f"{peak:.0f}"


_SHOWN = ("lr", "zo_lr", "eps", "name", "steps", "batch_size", "eval_every", "dtype")


def _settings(record: RunResult) -> str:
    """The rates (lr, zo_lr, eps) and every other optimizer setting that differs from the
    method's defaults recorded with the run (e.g. rank 4, gradient_checkpointing True)."""
    hyper = record.hyperparameters or {}
    if not record.steps:
        return ""
    parts = [f"{key} {hyper[key]:g}" for key in ("lr", "zo_lr", "eps") if key in hyper]
    defaults = _flat(record.method_record.defaults)
    for key, value in _flat(hyper).items():
        if key in defaults and key not in _SHOWN and value != defaults[key]:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_METHODS_HEADER = [
    "task", "model / method", "settings", "trained params", "steps", "train loss start → end",
    "test (at step)", "forwards / backwards", "train time (s)", "s / step",
    "peak memory train (MiB)", "peak memory eval (MiB)",
]  # fmt: skip


def methods_table(results: Iterable[Result], title: str | None = None) -> str:
    """One row per run: the method, what it trains, its training loss at the start and end (means
    over the first / last 10% of logged steps), test metric, passes, time and peak memory."""
    records = sorted(
        (RunResult.coerce(r) for r in results),
        key=lambda r: (r.task, r.model, r.method_record.rank, column_of(r), r.seed),
    )
    lines = [f"## {title}", ""] if title else []
    lines += [provenance(records, "one run per row, test metric × 100"), ""]
    rows = []
    for r in records:
        losses = logged_losses(r.where).tolist()
        trend = f"{_loss_window(losses, True)} → {_loss_window(losses, False)}" if losses else ""
        steps = r.steps or 0
        seconds = r.train_time_s or 0.0
        trained = r.trainable_parameters
        rows.append(
            [
                r.task,
                column_of(r),
                _settings(r),
                f"{trained:,}" if trained else "",
                str(steps),
                trend,
                f"{100 * r.test[primary_metric(r)]:.1f}" + (f" ({r.best_step})" if steps else ""),
                f"{r.forward_passes or 0} / {r.backward_passes or 0}",
                f"{seconds:.0f}" if steps else "",
                f"{seconds / steps:.2f}" if steps else "",
                _peak(r, "train"),
                _peak(r, "zero_shot", "eval"),
            ]
        )
    lines += markdown_table(_METHODS_HEADER, rows)
    lines += [
        "",
        "Test: the metric of the weights at the best dev evaluation (the step in brackets; later "
        "steps that did not improve dev are discarded), as the papers select checkpoints. "
        "Peak memory: the phase's host peak RSS on CPU (the model included), CUDA peak allocated on "
        "GPU. The train phase includes the dev evaluations and, when dev improves before the last "
        "step, a host copy of the trained weights (the best-dev state). Train loss: mean over the "
        "first / last 10% of logged steps (single steps are batch noise).",
    ]
    return "\n".join(lines) + "\n"

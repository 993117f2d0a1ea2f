"""Run directories -> results, and the one-row-per-run table (settings, training loss, cost and
peak memory) used for method comparisons; aggregated tables are zoft.report.select / zoft.reports."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoft.optim import OPTIMIZERS
from zoft.report.render import METHOD_ROWS
from zoft.report.select import method_label
from zoft.run.rundir import RESULT_FILE
from zoft.tasks import TASKS, get_task


def collect_results(root: Path) -> list[dict[str, Any]]:
    """Every complete result under `root`, newest file wins for a repeated output_dir."""
    results = {}
    for path in sorted(Path(root).rglob(RESULT_FILE)):
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if result.get("status") == "complete" and result.get("test"):
            result["run_dir"] = str(path.parent)  # where it is now (output_dir: where it ran)
            results[str(path.parent.resolve())] = result
    return list(results.values())


def column_of(result: dict[str, Any]) -> str:
    """ "<model> <method>" with the papers' method name (MeZO, FT (LoRA), LOZO (lora), ICL)."""
    return f"{result['model']} {method_label(result)}"


def provenance(
    results: list[dict[str, Any]],
    cells: str = "test metric × 100 (mean ± std over runs when there are several)",
) -> str:
    """One line saying what the numbers are: run count, protocol, seeds, code version."""

    def values(key: str) -> str:
        return ", ".join(sorted({str(r.get(key)) for r in results}))

    return (
        f"{len(results)} runs; protocol {values('protocol')}; data_seed {values('data_seed')}; "
        f"seed {values('seed')}; zoft {values('zoft_version')} at commit {values('git_commit')}. "
        f"Cells: {cells}."
    )


def logged_losses(result: dict[str, Any]) -> list[float]:
    """The training losses in the run's metrics.jsonl (empty if it is gone)."""
    path = Path(result.get("run_dir") or result.get("output_dir", "")) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r["loss"] for r in lines if r.get("loss") is not None]


def _loss_window(losses: list[float], first: bool, share: float = 0.1) -> str:
    """Mean of the first / last `share` of the logged losses (single steps are batch noise)."""
    if not losses:
        return ""
    n = max(1, round(share * len(losses)))
    window = losses[:n] if first else losses[-n:]
    return f"{statistics.fmean(window):.3f}"


def _method_key(result: dict[str, Any]) -> tuple[int, str]:
    """The papers' order: evaluation-only, zeroth-order, then backprop baselines."""
    label = method_label(result)
    rank = METHOD_ROWS.index(label) if label in METHOD_ROWS else len(METHOD_ROWS)
    return (rank, column_of(result))


def _peak(result: dict[str, Any], *phases: str) -> str:
    """The largest peak over the phases that ran: CUDA allocated per device, else host RSS."""
    records = [(result.get("memory") or {}).get(p) for p in phases]
    records = [r for r in records if r]
    if not records:
        return ""
    if any(r.get("cuda") for r in records):
        devices = {d for r in records for d in r.get("cuda", {})}
        peaks = [
            max(r.get("cuda", {}).get(d, {}).get("allocated_mib", 0) for r in records)
            for d in sorted(devices)
        ]
        return ", ".join(f"{v:.0f}" for v in peaks)
    return f"{max(r['host_peak_rss_mib'] for r in records):.0f}"


_RUN_KEYS = ("name", "steps", "batch_size", "eval_every", "dtype")  # shown elsewhere or implied


def _settings(result: dict[str, Any]) -> str:
    """The rates (lr, zo_lr, eps) and every other optimizer setting that differs from the
    method's defaults (e.g. rank 4, gradient_checkpointing True)."""
    hyper = result.get("hyperparameters") or {}
    if not result.get("steps"):
        return ""
    parts = [f"{key} {hyper[key]:g}" for key in ("lr", "zo_lr", "eps") if key in hyper]
    name = result.get("optimizer")
    if name in OPTIMIZERS:
        defaults = _flat(dataclasses.asdict(OPTIMIZERS.config(name)()))
        shown = ("lr", "zo_lr", "eps", *_RUN_KEYS)
        for key, value in _flat(hyper).items():
            if key in defaults and key not in shown and value != defaults[key]:
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


def methods_table(results: Iterable[dict[str, Any]], title: str | None = None) -> str:
    """One row per run: the method, what it trains, its training loss at the start and end (means
    over the first / last 10% of logged steps), test metric, passes, time and peak memory."""
    results = sorted(results, key=lambda r: (r["task"], r["model"], _method_key(r), r["seed"]))
    lines = [f"## {title}", ""] if title else []
    lines += [provenance(results, "one run per row, test metric × 100"), ""]
    lines.append(
        "| task | model / method | settings | trained params | steps | train loss start → end | "
        "test (at step) | forwards / backwards | train time (s) | s / step | peak memory train (MiB) | "
        "peak memory eval (MiB) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        metric = get_task(r["task"]).metric if r["task"] in TASKS else next(iter(r["test"]))
        losses = logged_losses(r)
        trend = f"{_loss_window(losses, True)} → {_loss_window(losses, False)}" if losses else ""
        steps = r.get("steps") or 0
        seconds = r.get("train_time_s") or 0.0
        trained = r.get("trainable_parameters")
        cells = [
            r["task"],
            column_of(r),
            _settings(r),
            f"{trained:,}" if trained else "",
            str(steps),
            trend,
            f"{100 * r['test'][metric]:.1f}" + (f" ({r.get('best_step')})" if steps else ""),
            f"{r.get('forward_passes', 0)} / {r.get('backward_passes', 0)}",
            f"{seconds:.0f}" if steps else "",
            f"{seconds / steps:.2f}" if steps else "",
            _peak(r, "train"),
            _peak(r, "zero_shot", "eval"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
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

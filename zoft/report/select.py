"""Run results -> pandas, selected and aggregated the way the papers report them.

Per (task, method, seed) the grid point with the best dev metric is kept and its test metric
reported; the kept runs are aggregated over seeds (mean, sample std, 95% t-interval, count) and
put beside the published number. Nothing is imputed: a cell without runs stays missing.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from zoft.report.collect import Result, primary_metric
from zoft.report.render import PAPER_TASK_NAMES
from zoft.run.record import PAPER_ONLY_FROM, RunResult, mode_rank

GROUP = ["task", "model", "method", "seed", "data_seed"]

# two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30; the normal 1.96 beyond
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (for 95% intervals)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96


def method_label(result: Result) -> str:
    """The papers' name of a run's method (MeZO, FT (LoRA), zero-shot, LOZO (lora)), from the
    method facts recorded with the run."""
    return RunResult.coerce(result).label


def _grid_point(record: RunResult) -> str:
    """What distinguishes the runs of one grid: optimizer settings and the run's shape."""
    point = {
        "hyperparameters": record.hyperparameters or {},
        "steps": record.steps,
        "batch_size": record.extra.get("batch_size"),
    }
    return json.dumps(point, sort_keys=True, default=str)


def data_notes(results: Iterable[Result]) -> dict[str, list[str]]:
    """Each task's distinct data notes (a split smaller than asked, a ready-made k-shot split)."""
    notes: dict[str, list[str]] = {}
    for r in map(RunResult.coerce, results):
        task = notes.setdefault(PAPER_TASK_NAMES.get(r.task, r.task), [])
        task.extend(n for n in r.data_notes or [] if n not in task)
    return notes


def runs_frame(results: Iterable[Result]) -> pd.DataFrame:
    """One row per complete run: identity, grid point, dev / test metric (× 100) and costs."""
    rows = []
    for r in map(RunResult.coerce, results):
        metric = primary_metric(r)
        dev = (r.dev or {}).get(metric)
        steps = r.steps or 0
        memory = r.memory_record
        rows.append(
            {
                "task": PAPER_TASK_NAMES.get(r.task, r.task),
                "model": r.model,
                "method": r.label,
                "method_rank": r.method_record.rank,
                "seed": r.seed,
                "data_seed": r.data_seed,
                "grid_point": _grid_point(r),
                "metric": metric,
                "dev": math.nan if dev is None else 100 * dev,
                "test": 100 * r.test[metric],
                "best_step": r.best_step,
                "steps": steps,
                "batch_size": r.extra.get("batch_size")
                or (r.hyperparameters or {}).get("batch_size"),
                "forward_passes": r.forward_passes or 0,
                "backward_passes": r.backward_passes or 0,
                "train_time_s": r.train_time_s or 0.0,
                "wall_time_s": r.wall_time_s or 0.0,
                "peak_train_mib": memory.peak_mib("train") if steps else math.nan,
                "peak_eval_mib": memory.peak_mib("eval", "zero_shot"),
                "run_dir": r.where,
            }
        )
    return pd.DataFrame(rows)


def select_best_dev(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, model, method, seed, data_seed): the grid point with the highest dev metric.
    Ties, and groups without dev metrics, go to the first grid point in sorted order, so the
    choice never looks at test."""
    if runs.empty:
        return runs
    ordered = runs.sort_values([*GROUP, "grid_point"], kind="stable")
    ordered = ordered.assign(_dev=ordered["dev"].fillna(-math.inf))
    best = ordered.loc[ordered.groupby(GROUP, dropna=False)["_dev"].idxmax()]
    return best.drop(columns="_dev").reset_index(drop=True)


def summarize(selected: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std, 95% t-interval and count of the selected test metrics per cell, with the
    mean costs of those runs."""
    rows = []
    for (task, model, method), group in selected.groupby(["task", "model", "method"], sort=False):
        values = group["test"].to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if n > 1 else math.nan
        half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        rows.append(
            {
                "task": task,
                "model": model,
                "method": method,
                "metric": group["metric"].iloc[0],
                "method_rank": float(group["method_rank"].min()),
                "n": n,
                "mean": mean,
                "std": std,
                "ci95_low": mean - half,
                "ci95_high": mean + half,
                "forward_passes": float(group["forward_passes"].mean()),
                "train_time_s": float(group["train_time_s"].mean()),
                "peak_train_mib": float(group["peak_train_mib"].mean()),
                "peak_eval_mib": float(group["peak_eval_mib"].mean()),
            }
        )
    return pd.DataFrame(rows)


def paper_dir() -> Path:
    """The folder of the published numbers: the installed package zoft.paper (results/paper/,
    shipped as package data, so zoft-table works from any folder), else this checkout's copy (a
    source tree on PYTHONPATH, or an editable install made before zoft.paper existed)."""
    try:
        return Path(str(importlib.resources.files("zoft.paper")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "results" / "paper"


def paper_csv(name: str = "paper_results.csv") -> Path:
    """One of the published-number tables: paper_results.csv, paper_memory.csv, paper_speed.csv."""
    return paper_dir() / name


def read_paper_csv(path: Path, paper: str, table: str) -> pd.DataFrame:
    """The rows of one published table from a results/paper/*.csv, in the csv's order; a row
    naming several methods ("zero-shot / MeZO": one measurement for both) becomes one per method."""
    ref = pd.read_csv(path)
    ref = ref[(ref["paper"] == paper) & (ref["table"] == table)].copy()
    ref["method"] = ref["method"].str.split(" / ")
    return ref.explode("method")


def load_reference(
    path: Path, paper: str, table: str, model: str = "", setting: str = ""
) -> pd.DataFrame:
    """The published rows of one table (results/paper/paper_results.csv, long format). `setting`
    holds "|"-separated substrings of the setting column (any may match); without `model` the
    rows of every model are kept and matched to our runs by model name."""
    ref = read_paper_csv(path, paper, table)
    keep = pd.Series(True, index=ref.index)
    if model:
        keep &= ref["model"] == model
    if setting:
        column = ref["setting"].fillna("")
        keep &= pd.concat(
            [column.str.contains(s, regex=False) for s in setting.split("|")], axis=1
        ).any(axis=1)
    ref = ref[keep]
    keys = ["method", "task"] if model else ["model", "method", "task"]
    duplicated = ref.duplicated(keys, keep=False)
    if duplicated.any():
        settings = sorted(ref.loc[duplicated, "setting"].dropna().unique())
        raise ValueError(
            f"{paper} {table} has several rows per {', '.join(keys)} (settings: {settings}); "
            "give the experiment's `experiment.setting` to pick one"
        )
    columns = {"value": "paper", "std": "paper_std"}
    return ref[[*keys, "value", "std"]].rename(columns=columns)


def beside_paper(summary: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """Ours next to the paper's number: one row per (task, method) found on either side; a cell
    without our runs keeps n = 0 and an empty mean (missing, not filled in)."""
    if reference is None or reference.empty:
        out = summary.assign(paper=math.nan, paper_std=math.nan)
    else:
        keys = [k for k in ("model", "method", "task") if k in reference.columns]
        out = summary.merge(reference, on=keys, how="outer")
        out["n"] = out["n"].fillna(0).astype(int)
        out["method_rank"] = out["method_rank"].fillna(_paper_only_ranks(out, reference))
        if "model" not in reference.columns and len(summary):
            out["model"] = out["model"].fillna(summary["model"].iloc[0])
    out["diff"] = out["mean"] - out["paper"]
    return out


def _paper_only_ranks(table: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """Rows only the paper has: an evaluation mode among the modes, any other method after every
    method of ours, in the paper csv's order."""
    first_seen = {m: i for i, m in enumerate(dict.fromkeys(reference["method"]))}

    def rank(method: str) -> float:
        mode = mode_rank(method)
        return mode if not math.isnan(mode) else PAPER_ONLY_FROM + first_seen.get(method, 0)

    return table["method"].map(rank)

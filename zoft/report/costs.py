"""Peak memory and time per step of runs, beside the papers' memory and speed tables
(results/paper/paper_memory.csv, paper_speed.csv)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from zoft.report.render import markdown_table
from zoft.report.select import read_paper_csv
from zoft.run.rundir import atomic_write

KEYS = ["model", "task", "method"]


def _beside(
    runs: pd.DataFrame,
    ours: tuple[str, pd.Series, str],
    reference_csv: Path,
    paper: str,
    table: str,
    published: tuple[str, str],
) -> pd.DataFrame:
    """Our value per (model, task, method), aggregated with `how`, outer-joined with the paper's
    column; the ratio ours / paper; cells without our runs keep n = 0."""
    name, values, how = ours
    column, renamed = published
    mine = (
        runs.assign(**{name: values})
        .groupby(KEYS, as_index=False)
        .agg(n=(name, "size"), **{name: (name, how)})
    )
    ref = read_paper_csv(reference_csv, paper, table)
    ref = ref[[*KEYS, column, "gpus"]].rename(columns={column: renamed})
    out = mine.merge(ref, on=KEYS, how="outer")
    out["n"] = out["n"].fillna(0).astype(int)
    out["ratio"] = out[name] / out[renamed]
    return out.sort_values(KEYS).reset_index(drop=True)


def memory_table(runs: pd.DataFrame, reference_csv: Path, paper: str, table: str) -> pd.DataFrame:
    """Per (model, task, method): our largest train-phase peak (GiB; CUDA allocated on GPU, host RSS
    on CPU; the eval peak for evaluation-only runs) beside the paper's GB."""
    peak = runs["peak_train_mib"].fillna(runs["peak_eval_mib"]) / 1024
    ours = ("ours_gib", peak, "max")
    return _beside(runs, ours, reference_csv, paper, table, ("memory_gb", "paper_gb"))


def speed_table(runs: pd.DataFrame, reference_csv: Path, paper: str, table: str) -> pd.DataFrame:
    """Per (model, task, method at its batch size): our mean training seconds per step beside the
    paper's."""
    trained = runs[runs["steps"] > 0]
    labelled = trained.assign(
        method=trained["method"] + " (bsz=" + trained["batch_size"].astype(str) + ")"
    )
    ours = ("ours_s", trained["train_time_s"] / trained["steps"], "mean")
    return _beside(labelled, ours, reference_csv, paper, table, ("seconds_per_step", "paper_s"))


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def cost_markdown(table: pd.DataFrame, title: str, provenance: str, unit: str) -> str:
    """The comparison as markdown; a row without our runs says missing."""
    ours, paper = ("ours_gib", "paper_gb") if unit == "memory" else ("ours_s", "paper_s")
    heading = ("peak GiB", "paper GB") if unit == "memory" else ("s / step", "paper s / step")
    lines = [f"## {title}", "", provenance, ""]
    header = ["model", "task", "method", "n", f"ours {heading[0]}", heading[1], "paper GPUs"]
    rows = []
    for _, r in table.iterrows():
        mine = _fmt(r[ours], 2) if r["n"] else "missing"
        cells = [r["model"], _fmt(r["task"], 0), r["method"], str(r["n"]), mine,
                 _fmt(r[paper], 2), _fmt(r.get("gpus"), 0), _fmt(r["ratio"], 2)]  # fmt: skip
        rows.append(cells)
    lines += markdown_table([*header, "ours / paper"], rows)
    note = (
        "Ours: the largest train-phase peak of the cell's runs (CUDA peak allocated on GPU, host "
        "peak RSS on CPU); the papers measured nvidia-smi (reserved memory and the CUDA context)."
        if unit == "memory"
        else "Ours: training wall time / steps, mean over the cell's runs (dev evaluations included)."
    )
    return "\n".join([*lines, "", note]) + "\n"


def write_cost_reports(
    table: pd.DataFrame, out: Path, title: str, provenance: str, unit: str
) -> list[Path]:
    paths = [Path(out).with_suffix(".md"), Path(out).with_suffix(".csv")]
    atomic_write(paths[0], cost_markdown(table, title, provenance, unit))
    atomic_write(paths[1], table.to_csv(index=False))
    return paths

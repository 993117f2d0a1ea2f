"""PNG plots of an experiment: loss curves per method, accuracy against peak memory, forward
passes and wall time (matplotlib, headless)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import pandas as pd

from zoft.report.collect import logged_losses
from zoft.report.render import TASK_COLUMNS, in_papers_order, methods_in_order


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(method: str) -> str:
    """One colour per method across every plot of every table (from its name, not its row)."""
    return f"C{zlib.crc32(method.encode()) % 10}"


def loss_curves(selected: pd.DataFrame, path: Path, title: str) -> Path | None:
    """One panel per task: each method's training loss (mean over seeds, smoothed over a tenth of
    the steps) against the step."""
    trained = selected[selected["steps"] > 0]
    if trained.empty:
        return None
    plt = _pyplot()
    tasks = in_papers_order(trained["task"], TASK_COLUMNS)
    columns = min(4, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        runs = trained[trained["task"] == task]
        for method in methods_in_order(runs):
            curves = [logged_losses(d) for d in runs.loc[runs["method"] == method, "run_dir"]]
            curves = [c for c in curves if len(c)]
            if not curves:
                continue
            mean = pd.concat(curves, axis=1).mean(axis=1)
            window = max(1, len(mean) // 10)
            smooth = mean.rolling(window, min_periods=1).mean()
            ax.plot(mean.index, smooth, label=method, color=_color(method))
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scatter(summary: pd.DataFrame, x: str, xlabel: str, path: Path, title: str) -> Path | None:
    """Per method: the mean test metric against the mean of x, both over the tasks every plotted
    method has (a method missing a task would otherwise be averaged over different tasks)."""
    have = summary[(summary["n"] > 0) & summary[x].notna()]
    if have.empty:
        return None
    coverage = have.pivot_table(index="method", columns="task", values="mean", aggfunc="first")
    common = list(coverage.columns[coverage.notna().all(axis=0)])
    if not common:
        return None
    plt = _pyplot()
    means = have[have["task"].isin(common)].groupby("method")[["mean", x]].mean()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in methods_in_order(have[have["method"].isin(means.index)]):
        ax.scatter(means.loc[method, x], means.loc[method, "mean"], s=40, color=_color(method))
        ax.annotate(method, (means.loc[method, x], means.loc[method, "mean"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    if (means[x] > 0).all() and means[x].max() > 20 * max(means[x].min(), 1e-9):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test metric × 100, mean over {len(common)} tasks")
    ax.set_title(f"{title}\n({', '.join(common)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(
    selected: pd.DataFrame, summary: pd.DataFrame, stem: Path, title: str
) -> list[Path]:
    """<stem>_loss.png, _memory.png, _forwards.png and _time.png (those with data)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    peak = summary.assign(peak_mib=summary["peak_train_mib"].fillna(summary["peak_eval_mib"]))
    made = [
        loss_curves(selected, Path(f"{stem}_loss.png"), title),
        _scatter(peak, "peak_mib", "peak memory (MiB; train phase, else eval)",
                 Path(f"{stem}_memory.png"), title),
        _scatter(summary[summary["forward_passes"] > 0], "forward_passes", "forward passes",
                 Path(f"{stem}_forwards.png"), title),
        _scatter(summary[summary["train_time_s"] > 0], "train_time_s", "train wall time (s)",
                 Path(f"{stem}_time.png"), title),
    ]  # fmt: skip
    return [p for p in made if p is not None]

"""The convergence study (issue 22, `+experiment=convergence_smollm2`): does each method learn, and
how fast, in steps, forward passes and wall time, at what memory.

    python -m zoft.report.convergence runs/convergence results/tables/convergence
    python -m zoft.report.convergence --pilot runs/convergence_pilot results/tables/convergence/pilot

Writes the run summaries (out/runs), summary.csv (one row per run), the table (test at the best
dev step, mean ± std over seeds, beside the zero-shot reference and the peak train memory), the
dev-accuracy curves against steps, forward passes and wall time (mean over seeds, a band from the
lowest to the highest seed), and peak train memory against test accuracy. Everything is read from
the summaries, so the report can be rebuilt from the committed folder alone.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from zoft.report.collect import primary_metric
from zoft.report.plots import _pyplot
from zoft.report.summaries import copy_summaries
from zoft.run.record import RunResult
from zoft.run.rundir import METRICS_FILE, RESULT_FILE

SUMMARY_COLUMNS = [
    "task",
    "method",
    "seed",
    "steps",
    "forwards",
    "test",
    "zero_shot",
    "peak_train_mib",
    "wall_s",
]
# the x axes of the curves: the metrics.jsonl field and its label
AXES = {"step": "step", "forwards": "forward passes", "elapsed_s": "wall time (s)"}


@dataclass
class StudyRun:
    """One finished run of the study: its record, its folder and its dev curve."""

    record: RunResult
    run_dir: Path

    @property
    def metric(self) -> str:
        return primary_metric(self.record)

    @property
    def method(self) -> str:
        return self.record.label

    @property
    def trained(self) -> bool:
        return bool(self.record.steps)

    def dev_curve(self) -> pd.DataFrame:
        """step, forwards, elapsed_s and dev score at every dev evaluation of training."""
        path = self.run_dir / METRICS_FILE
        key = f"dev_{self.metric}"
        lines = path.read_text().splitlines() if path.is_file() else []
        records = [json.loads(line) for line in lines if line.strip()]
        rows = [{**{a: r[a] for a in AXES}, "dev": r[key]} for r in records if key in r]
        return pd.DataFrame(rows, columns=[*AXES, "dev"])


def find_runs(root: Path) -> list[StudyRun]:
    """Every complete run under root, in path order."""
    runs = []
    for path in sorted(Path(root).rglob(RESULT_FILE)):
        record = RunResult.from_json(json.loads(path.read_text()))
        if record.status == "complete" and record.test:
            runs.append(StudyRun(record, path.parent))
    return runs


def summary_frame(runs: list[StudyRun]) -> pd.DataFrame:
    """summary.csv: one row per run. zero_shot is the run's own zero-shot test score, else the
    zero-shot run's of the same task and data seed, else of the same task: the study tests on the
    full validation split, so every data seed has the same test set and one zero-shot run serves
    all."""
    zero_shot = [r for r in runs if r.record.mode == "zero-shot"]
    reference = {(r.record.task, r.record.data_seed): r.record.test[r.metric] for r in zero_shot}
    of_task = {r.record.task: r.record.test[r.metric] for r in reversed(zero_shot)}
    rows = []
    for run in runs:
        record = run.record
        own = (record.zero_shot or {}).get(run.metric)
        rows.append(
            {
                "task": record.task,
                "method": run.method,
                "seed": record.seed,
                "steps": record.steps or 0,
                "forwards": record.forward_passes or 0,
                "test": record.test[run.metric],
                "zero_shot": own
                if own is not None
                else reference.get((record.task, record.data_seed), of_task.get(record.task)),
                "peak_train_mib": record.memory_record.peak_mib("train"),
                "wall_s": record.wall_time_s,
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _mean_std(values: pd.Series, scale: float = 100.0) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{scale * values.iloc[0]:.1f}"
    return f"{scale * values.mean():.1f} ± {scale * values.std(ddof=1):.1f}"


def table(summary: pd.DataFrame) -> str:
    """The markdown table: per task and method, test at the best dev step (mean ± sample std over
    seeds, in points), n, the zero-shot reference, steps, forward passes, peak train memory and
    wall time (means)."""
    head = (
        "| task | method | test (best dev) | n | zero-shot | steps | forward passes | "
        "peak train MiB | wall (min) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for (task, method), group in summary.groupby(["task", "method"], sort=False):
        memory = group["peak_train_mib"].mean()
        rows.append(
            f"| {task} | {method} | {_mean_std(group['test'])} | {len(group)} | "
            f"{_mean_std(group['zero_shot'])} | {group['steps'].mean():.0f} | "
            f"{group['forwards'].mean():.0f} | "
            f"{'' if math.isnan(memory) else f'{memory:.0f}'} | "
            f"{group['wall_s'].mean() / 60:.1f} |"
        )
    return "\n".join(rows) + "\n"


def pilot_table(runs: list[StudyRun]) -> str:
    """The learning-rate pilot: per method and rate, dev score at every evaluation and the test
    score; each method's rate with the best dev score at the last evaluation is marked chosen
    (ties: the lower rate)."""
    trained = [r for r in runs if r.trained]
    curves = {id(r): r.dev_curve() for r in trained}
    steps = sorted({int(s) for c in curves.values() for s in c["step"]})
    metric = trained[0].metric if trained else "accuracy"
    head = (
        f"| method | lr | {' | '.join(f'dev {metric} @ {s}' for s in steps)} | test | chosen |\n"
        f"|---|---:|{'---:|' * len(steps)}---:|---|"
    )
    rows = [head]
    for method in dict.fromkeys(r.method for r in trained):
        mine = sorted((r for r in trained if r.method == method), key=_lr)
        last = {id(r): _dev_at(curves[id(r)], steps[-1]) for r in mine}
        best = max(mine, key=lambda r: (last[id(r)], -_lr(r)))
        for run in mine:
            devs = " | ".join(f"{100 * _dev_at(curves[id(run)], s):.1f}" for s in steps)
            rows.append(
                f"| {method} | {_lr(run):g} | {devs} | {100 * run.record.test[run.metric]:.1f} | "
                f"{'**chosen**' if run is best else ''} |"
            )
    return "\n".join(rows) + "\n"


def _lr(run: StudyRun) -> float:
    return float((run.record.hyperparameters or {})["lr"])


def _dev_at(curve: pd.DataFrame, step: int) -> float:
    at = curve.loc[curve["step"] == step, "dev"]
    return float(at.iloc[0]) if len(at) else math.nan


def _colors(methods) -> dict[str, str]:
    """One distinct colour per method of the study, the same in every panel and plot."""
    return {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}


def _band(curves: list[pd.DataFrame], axis: str) -> pd.DataFrame:
    """Mean over seeds of the dev score and of the x axis at each step, with min and max."""
    stacked = pd.concat(curves)
    grouped = stacked.groupby("step")
    return pd.DataFrame(
        {
            "x": grouped[axis].mean(),
            "mean": grouped["dev"].mean(),
            "low": grouped["dev"].min(),
            "high": grouped["dev"].max(),
        }
    )


def plot_curves(runs: list[StudyRun], path: Path) -> Path:
    """Dev score against steps, forward passes and wall time: a row of panels per task, one line
    per method (mean over seeds, band = lowest to highest seed); evaluation-only methods
    (zero-shot, ICL) as dashed levels of their test score."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(r.record.task for r in runs))
    colors = _colors(r.method for r in runs)
    fig, axes = plt.subplots(len(tasks), len(AXES), figsize=(15, 3.8 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        of_task = [r for r in runs if r.record.task == task]
        methods = list(dict.fromkeys(r.method for r in of_task))
        for method in methods:
            mine = [r for r in of_task if r.method == method]
            color = colors[method]
            curves = [c for c in (r.dev_curve() for r in mine if r.trained) if not c.empty]
            for ax, axis in zip(row, AXES, strict=True):
                if curves:
                    band = _band(curves, axis)
                    ax.plot(band["x"], band["mean"], label=method, color=color, marker=".")
                    ax.fill_between(band["x"], band["low"], band["high"], color=color, alpha=0.2)
                elif not any(r.trained for r in mine):
                    level = sum(r.record.test[r.metric] for r in mine) / len(mine)
                    ax.axhline(level, label=f"{method} (test)", color=color, linestyle="--")
        metric = of_task[0].metric
        for ax, label in zip(row, AXES.values(), strict=True):
            ax.set(xlabel=label, ylabel=f"dev {metric}")
            ax.set_title(f"{task}: dev {metric} against {label}", fontsize="medium")
        row[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(summary: pd.DataFrame, path: Path) -> Path:
    """Peak train memory against test score, one point per method and task (means over seeds)."""
    plt = _pyplot()
    trained = summary[summary["steps"] > 0]
    tasks = list(dict.fromkeys(trained["task"]))
    colors = _colors(summary["method"])
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5 * max(1, len(tasks)), 4))
    axes = [axes] if len(tasks) <= 1 else list(axes)
    for ax, task in zip(axes, tasks, strict=False):
        means = (
            trained[trained["task"] == task].groupby("method", sort=False).mean(numeric_only=True)
        )
        for method, row in means.iterrows():
            ax.scatter(row["peak_train_mib"], 100 * row["test"], color=colors[str(method)])
            ax.annotate(str(method), (row["peak_train_mib"], 100 * row["test"]), fontsize="small")
        ax.set(xlabel="peak train memory (MiB)", ylabel="test (points)", title=task)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _summarised_runs(runs_dir: Path, out: Path, what: str) -> list[StudyRun]:
    """Copies the finished runs' summaries beside the ones already under out/runs (earlier
    pieces, committed), then reads them all back."""
    summaries = out / "runs"
    if Path(runs_dir).resolve() != summaries.resolve():
        copy_summaries(Path(runs_dir), summaries)
    runs = find_runs(summaries)
    if not runs:
        raise SystemExit(f"no finished run of the {what} under {runs_dir}")
    return runs


def write_report(runs_dir: Path, out: Path) -> list[Path]:
    """Summaries under out/runs, then summary.csv, the table and the plots, from the summaries."""
    runs = _summarised_runs(runs_dir, out, "study")
    summary = summary_frame(runs)
    csv = out / "summary.csv"
    summary.to_csv(csv, index=False)
    markdown = out / "convergence.md"
    markdown.write_text(
        "## Convergence on SmolLM2-135M (CPU)\n\n"
        "Test at the best dev step (the experiment's select_by), in points, mean ± sample std "
        "over seeds; zero-shot = the same test set before training; peak train memory = host "
        "peak RSS of the train phase on CPU.\n\n" + table(summary)
    )
    return [
        csv,
        markdown,
        plot_curves(runs, out / "convergence_curves.png"),
        plot_memory(summary, out / "convergence_memory.png"),
    ]


def write_pilot(runs_dir: Path, out: Path) -> list[Path]:
    """Summaries under out/runs, then pilot.md (the rate chosen per method), from the summaries."""
    runs = _summarised_runs(runs_dir, out, "pilot")
    markdown = out / "pilot.md"
    markdown.write_text(
        "## Learning-rate pilot of the convergence study\n\n"
        "Dev score (points) at each evaluation and test score of each rate; the chosen rate has "
        "the best dev score at the last evaluation.\n\n" + pilot_table(runs)
    )
    return [markdown]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    pilot = args[:1] == ["--pilot"]
    args = args[1:] if pilot else args
    if len(args) != 2:
        sys.exit("usage: python -m zoft.report.convergence [--pilot] RUNS_DIR OUT_DIR")
    runs_dir, out = map(Path, args)
    if not runs_dir.is_dir():
        sys.exit(f"zoft.report.convergence: {runs_dir} is not a folder of runs")
    out.mkdir(parents=True, exist_ok=True)
    written = write_pilot(runs_dir, out) if pilot else write_report(runs_dir, out)
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()

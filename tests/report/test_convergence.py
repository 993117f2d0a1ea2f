"""The convergence report (zoft.report.convergence), on the committed run summaries of the mini
SmolLM2 table: real result.json / metrics.jsonl files, read back independently here."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from zoft.report.convergence import (
    SUMMARY_COLUMNS,
    find_runs,
    summary_frame,
    table,
    write_pilot,
    write_report,
)

MINI_SST2 = REPO / "results" / "tables" / "mini" / "runs" / "smollm2" / "sst2"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    shutil.copytree(MINI_SST2, runs / "sst2")
    out = tmp_path_factory.mktemp("out")
    write_report(runs, out)
    return out


def _results() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(MINI_SST2.rglob("result.json"))]


def test_summary_csv_has_one_row_per_run_with_the_issue_columns(report):
    summary = pd.read_csv(report / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    results = _results()
    assert len(summary) == len(results) == 18  # 6 methods x 3 seeds
    mezo = sorted(r["test"]["accuracy"] for r in results if r["optimizer"] == "mezo" and r["steps"])
    assert sorted(summary.loc[summary["method"] == "MeZO", "test"]) == pytest.approx(mezo)
    assert set(summary["forwards"][summary["method"] == "MeZO"]) == {100}  # 50 steps x 2


def test_zero_shot_column_is_the_zero_shot_run_of_the_same_data_seed(report):
    summary = pd.read_csv(report / "summary.csv")
    zero = {r["data_seed"]: r["test"]["accuracy"] for r in _results() if r["mode"] == "zero-shot"}
    for seed, group in summary.groupby("seed"):  # mini runs: data_seed = seed
        assert list(group["zero_shot"]) == pytest.approx([zero[seed]] * len(group))


def test_zero_shot_column_falls_back_to_the_tasks_one_zero_shot_run(tmp_path):
    """The study plans one zero-shot cell (seed 0) for a test set every seed shares."""
    shutil.copytree(MINI_SST2, tmp_path / "sst2")
    for result in sorted((tmp_path / "sst2").rglob("result.json")):
        record = json.loads(result.read_text())
        if record["mode"] == "zero-shot" and record["data_seed"] != 0:
            shutil.rmtree(result.parent)
    (zero,) = [r for r in _results() if r["mode"] == "zero-shot" and r["data_seed"] == 0]
    summary = summary_frame(find_runs(tmp_path))
    assert len(summary) == 16
    assert list(summary["zero_shot"]) == pytest.approx([zero["test"]["accuracy"]] * 16)


def test_table_reports_mean_and_sample_std_in_points():
    summary = summary_frame(find_runs(MINI_SST2))
    values = summary.loc[summary["method"] == "MeZO", "test"]
    expected = f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}"
    (row,) = [line for line in table(summary).splitlines() if "| MeZO |" in line]
    assert f"| {expected} | 3 |" in row


def test_curves_and_memory_plots_are_written(report):
    for name in ("convergence_curves.png", "convergence_memory.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    assert len(list((report / "runs").rglob("result.json"))) == 18


def test_dev_curve_is_read_from_metrics(report):
    (run,) = [r for r in find_runs(MINI_SST2) if r.method == "MeZO" and r.record.seed == 0]
    curve = run.dev_curve()
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(x["step"], x["dev_accuracy"]) for x in lines if "dev_accuracy" in x]
    assert list(zip(curve["step"], curve["dev"], strict=True)) == logged and len(logged) == 2


def test_pilot_marks_the_rate_with_the_best_last_dev_score(tmp_path):
    """Three MeZO runs relabelled as three rates: the rows carry each run's dev curve, and the
    rate with the best dev score at the last evaluation is the chosen one."""
    runs = tmp_path / "runs"
    rates = {0: 1e-5, 1: 3e-5, 2: 1e-4}
    last_dev = {}
    for result in sorted((MINI_SST2 / "smollm2-135m" / "mezo").rglob("result.json")):
        record = json.loads(result.read_text())
        target = runs / result.parent.name
        shutil.copytree(result.parent, target)
        record["hyperparameters"]["lr"] = rates[record["seed"]]
        (target / "result.json").write_text(json.dumps(record))
        lines = (target / "metrics.jsonl").read_text().splitlines()
        devs = [json.loads(x)["dev_accuracy"] for x in lines if "dev_accuracy" in x]
        last_dev[rates[record["seed"]]] = devs[-1]
    (markdown,) = write_pilot(runs, tmp_path / "out")
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| MeZO |")]
    assert [row.split(" | ")[1] for row in rows] == ["1e-05", "3e-05", "0.0001"]
    best = max(last_dev, key=lambda lr: (last_dev[lr], -lr))
    (chosen,) = [row for row in rows if "**chosen**" in row]
    assert chosen.split(" | ")[1] == f"{best:g}"
    assert f"| {100 * last_dev[best]:.1f} |" in chosen

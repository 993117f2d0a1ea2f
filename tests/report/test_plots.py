"""PNG plots of an experiment (zoft.report.plots): loss curves, accuracy against memory, forwards, time."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.report.test_select import run_result, three_seed_table1_runs, write_run
from zoft.report.collect import collect_results, logged_losses
from zoft.report.plots import write_plots
from zoft.report.select import beside_paper, runs_frame, select_best_dev, summarize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOSSES = [1.0, 0.9, 0.8, 0.7, 0.6]


def _tables(root):
    selected = select_best_dev(runs_frame(collect_results(root)))
    reference = pd.DataFrame(
        {"method": ["MeZO", "FT"], "task": ["SST-2", "SST-2"], "paper": [91.4, 92.0],
         "paper_std": [float("nan")] * 2}
    )  # fmt: skip
    return selected, beside_paper(summarize(selected), reference)  # FT: a paper-only row


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


def test_write_plots_writes_the_four_pngs(tmp_path):
    root = tmp_path / "runs"
    for result in three_seed_table1_runs():
        write_run(root, result, LOSSES if result["steps"] else None)
    selected, table = _tables(root)
    stem = tmp_path / "tables" / "nested" / "mini"  # the folder does not exist yet
    paths = write_plots(selected, table, stem, "Mini Table 1")
    assert paths == [
        tmp_path / "tables" / "nested" / "mini_loss.png",
        tmp_path / "tables" / "nested" / "mini_memory.png",
        tmp_path / "tables" / "nested" / "mini_forwards.png",
        tmp_path / "tables" / "nested" / "mini_time.png",
    ]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000
        assert _is_png(path)
    assert sorted(p.name for p in stem.parent.iterdir()) == sorted(p.name for p in paths)


def test_without_trained_runs_the_loss_and_cost_plots_are_skipped(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        for task in ("sst2", "rte"):
            write_run(root, run_result(task, seed=seed, test=0.5, mode="zero-shot"))
            write_run(root, run_result(task, seed=seed, test=0.6, mode="icl", eval_mib=1900.0))
    selected, table = _tables(root)
    assert (selected["steps"] == 0).all()
    stem = tmp_path / "plots" / "eval_only"
    paths = write_plots(selected, table, stem, "evaluation only")
    # no steps: no loss curve; no forward passes or train time to plot against either
    assert paths == [tmp_path / "plots" / "eval_only_memory.png"]
    assert _is_png(paths[0])
    assert not (tmp_path / "plots" / "eval_only_loss.png").exists()
    assert sorted(p.name for p in stem.parent.iterdir()) == ["eval_only_memory.png"]


def test_scatter_plots_need_a_task_every_method_has(tmp_path):
    root = tmp_path / "runs"
    write_run(root, run_result("sst2", seed=0, test=0.5, mode="zero-shot"))
    write_run(root, run_result("rte", seed=0, test=0.6, mode="icl", eval_mib=1900.0))
    selected, table = _tables(root)
    # zero-shot has only SST-2, ICL only RTE: no common task to average over, so no scatter
    assert write_plots(selected, table, tmp_path / "disjoint", "disjoint") == []


@pytest.mark.filterwarnings("ignore:No artists with labels found to put in legend")
def test_trained_runs_whose_metrics_are_gone_still_plot(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, run_result("sst2", "mezo", seed, test=0.8, dev=0.7))  # no metrics.jsonl
    selected, table = _tables(root)
    paths = write_plots(selected, table, tmp_path / "p", "no metrics")
    assert [p.name for p in paths] == ["p_loss.png", "p_memory.png", "p_forwards.png", "p_time.png"]
    assert all(_is_png(p) for p in paths)


def test_losses_reads_the_training_loss_by_step(tmp_path):
    records = [
        {"step": 2, "loss": 0.5},
        {"step": 1, "loss": 1.5, "lr": 1e-5},
        {"step": 2, "dev_accuracy": 0.75},  # an evaluation record: no loss
        {"step": 3, "loss": None},
        {"loss": 9.0},  # no step
        {"step": 4, "loss": 0.25},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n\n")
    losses = logged_losses(str(tmp_path))
    assert losses.index.tolist() == [1, 2, 4]
    assert losses.tolist() == pytest.approx([1.5, 0.5, 0.25])
    assert logged_losses(str(tmp_path / "gone")).empty
    assert logged_losses("").empty

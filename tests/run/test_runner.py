"""End to end: zoft-run as a subprocess on a tiny model with real SST-2 data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRED = {
    "status",
    "task",
    "model",
    "optimizer",
    "seed",
    "data_seed",
    "k",
    "num_train",
    "num_dev",
    "num_test",
    "hyperparameters",
    "test",
    "dev",
    "zero_shot",
    "steps",
    "forward_passes",
    "backward_passes",
    "wall_time_s",
    "memory",
    "zoft_version",
    "git_commit",
    "packages",
    "device_name",
    "data_source",
    "output_dir",
}


def _zoft_run(args, data_dir, cwd):
    env = {**os.environ, "ZOFT_DATA": str(data_dir)}
    cmd = [sys.executable, "-c", "from zoft.cli import run_main; run_main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    args = [
        "model=tiny-opt",
        "optimizer=mezo",
        "steps=6",
        "eval_every=3",
        "log_every=2",
        "task.kshot_test_cap=64",
        "eval_batch_size=16",
        f"results_dir={root}",
    ]
    proc = _zoft_run(args, data_dir, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list((root / "sst2" / "tiny-opt" / "mezo").iterdir())
    return args, root, run_dir, proc


def test_run_writes_a_complete_result(finished_run):
    _, _, run_dir, proc = finished_run
    result = json.loads((run_dir / "result.json").read_text())
    assert set(result) >= REQUIRED, REQUIRED - set(result)
    assert result["status"] == "complete"
    assert result["forward_passes"] == 12 and result["backward_passes"] == 0
    assert result["num_test"] == 64 and result["num_train"] == 32
    assert set(result["memory"]) == {"load", "zero_shot", "train", "eval"}
    assert "ready LM-BFF split k-shot/SST-2/16-13" in result["data_notes"]
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert "test" in proc.stdout  # the summary table


def test_without_a_terminal_progress_is_log_lines_after_a_one_line_header(finished_run):
    _, _, run_dir, proc = finished_run
    log = proc.stderr
    assert "sst2 / tiny-opt / mezo: lr 1e-06" in log and f"-> {run_dir}" in log
    assert "resolved config:" not in log  # it heads run.log (and is config.yaml)
    assert "resolved config:" in (run_dir / "run.log").read_text()
    assert "\rtrain" not in log and "it/s]" not in log  # no progress bar without a terminal
    assert "step 6/6 loss" in log and "s/step," in log and "left)" in log


def test_metrics_and_config_are_written(finished_run):
    _, _, run_dir, _ = finished_run
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 3, 4, 6]
    assert {"loss", "lr", "projected_grad", "elapsed_s", "examples_per_s", "forwards"} <= set(
        lines[0]
    )
    assert "dev_accuracy" in lines[1]
    assert "optimizer:" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "run.log").read_text()


def test_second_identical_call_is_skipped(finished_run, data_dir):
    args, root, run_dir, _ = finished_run
    before = (run_dir / "result.json").read_text()
    proc = _zoft_run(args, data_dir, root)
    assert proc.returncode == 0
    assert "already complete" in proc.stdout + proc.stderr
    assert (run_dir / "result.json").read_text() == before


def test_bad_data_dir_fails_clearly_and_records_the_failure(data_dir, tmp_path):
    proc = _zoft_run(
        [
            "model=tiny-opt",
            "steps=1",
            f"results_dir={tmp_path}",
            f"task.data_dir={tmp_path / 'missing'}",
        ],
        data_dir,
        tmp_path,
    )
    assert proc.returncode == 1
    assert "not a directory" in proc.stderr
    (result,) = list(Path(tmp_path).rglob("result.json"))
    assert json.loads(result.read_text())["status"] == "failed"

"""The demo (`make demo`, conf/experiment/demo.yaml) is a ZO run that learns, and says so."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import compose
from zoft.cli import summary_table


def test_demo_is_a_short_zo_run_with_ft_one_override_away():
    demo = compose(["+experiment=demo"])
    assert demo.optimizer.name == "lozo" and demo.optimizer.lr == 1e-5
    assert (demo.model.name, demo.task.name) == ("smollm2-135m", "sst2")
    assert demo.task.protocol == "large"
    assert (demo.task.num_train, demo.batch_size, demo.steps) == (1000, 16, 100) and demo.zero_shot
    ft = compose(["+experiment=demo", "optimizer=ft"])
    assert ft.optimizer.name == "ft"
    assert (ft.task, ft.steps, ft.batch_size) == (demo.task, demo.steps, demo.batch_size)


def test_summary_shows_the_gain_over_zero_shot_and_train_memory_against_inference():
    result = {
        "task": "sst2",
        "model": "smollm2-135m",
        "method": {"name": "lozo"},
        "status": "complete",
        "zero_shot": {"accuracy": 0.5161},
        "test": {"accuracy": 0.6239},
        "memory": {
            "zero_shot": {"host_peak_rss_mib": 1268.0},
            "train": {"host_peak_rss_mib": 1929.0},
            "eval": {"host_peak_rss_mib": 1624.0},
        },
    }
    table = " ".join(summary_table(result).split())  # tabulate's padding aside
    assert "zero-shot -> test accuracy 0.5161 -> 0.6239 (+10.8 points)" in table
    assert "train vs inference 1929 / 1624 MiB = 1.19x" in table


def test_summary_without_zero_shot_or_train_has_neither_row():
    result = {
        "task": "sst2",
        "model": "smollm2-135m",
        "method": {"name": "zero-shot"},
        "status": "complete",
        "test": {"accuracy": 0.5},
        "memory": {"eval": {"host_peak_rss_mib": 1000.0}},
    }
    table = summary_table(result)
    assert "zero-shot -> test" not in table and "train vs inference" not in table


@pytest.mark.slow
def test_demo_beats_zero_shot(data_dir, tmp_path):
    env = {**os.environ, "ZOFT_DATA": str(data_dir)}
    cmd = [
        sys.executable,
        "-c",
        "from zoft.cli import run_main; run_main()",
        "+experiment=demo",
        f"results_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list(tmp_path.rglob("result.json"))
    result = json.loads(path.read_text())
    assert result["num_test"] == 872 and result["forward_passes"] == 200
    assert result["test"]["accuracy"] > result["zero_shot"]["accuracy"] + 0.05
    assert "zero-shot -> test" in proc.stdout and "train vs inference" in proc.stdout

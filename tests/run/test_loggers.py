"""Loggers: metrics.csv keeps a fixed header; logger=wandb writes an offline W&B run without an
account, with the resolved config and the metrics in it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from zoft.run.loggers import CsvSink, MetricsLog


def test_csv_rows_line_up_with_and_without_dev_values(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", [CsvSink(tmp_path / "metrics.csv", "dev_f1")])
    log.write({"step": 1, "loss": 0.5, "lr": 1e-3})
    log.write({"step": 2, "loss": 0.4, "lr": 1e-3, "dev_f1": 0.7})
    log.write({"step": 3, "skipped": "step 3: non-finite loss = nan"})
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["dev_f1"] == "" and rows[1]["dev_f1"] == "0.7"
    assert rows[2]["skipped"].startswith("step 3: non-finite")
    log.truncate_after(1)  # a resumed run drops what came after its checkpoint
    assert [r["step"] for r in csv.DictReader((tmp_path / "metrics.csv").open())] == ["1"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_wandb_offline_run_holds_the_config_and_the_metrics(data_dir, tmp_path):
    env = {**os.environ, "ZOFT_DATA": str(data_dir), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    cmd = [
        sys.executable,
        "-m",
        "zoft",
        "model=tiny-opt",
        "optimizer=mezo",
        "steps=3",
        "log_every=1",
        "task.kshot_test_cap=16",
        "logger=wandb",
        "logger.tags=[smoke]",
        f"results_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_file,) = tmp_path.rglob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    run_id = (run_file.parents[2] / "wandb_run_id").read_text().strip()
    assert run_file.name == f"run-{run_id}.wandb"
    for expected in (b"tiny-opt", b"projected_grad", b"test_accuracy", b"smoke"):
        assert expected in data, expected

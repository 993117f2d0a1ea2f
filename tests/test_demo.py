"""The default experiment (make demo) lifts test accuracy above its own zero-shot accuracy."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_experiment_beats_zero_shot(data_dir, tmp_path):
    env = {**os.environ, "ZOFT_DATA": str(data_dir)}
    cmd = [
        sys.executable,
        "-c",
        "from zoft.cli import run_main; run_main()",
        f"results_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list(tmp_path.rglob("result.json"))
    result = json.loads(path.read_text())
    assert result["num_test"] == 872
    assert result["test"]["accuracy"] > result["zero_shot"]["accuracy"] + 0.1

"""Exact resume: a zoft-run killed by SIGTERM mid-way and run again ends with the very parameters
and metrics of an uninterrupted run, for every registered method (ZO directions, LOZO-M's
momentum, AdamW with dropout drawing from the RNG, LMAO's two phases); one method per kind runs
by default, the rest are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.methods import method_params, quick_overrides
from zoft.optim import OPTIMIZERS
from zoft.run.replay import replay

COMMON = [
    "model=tiny-opt",
    "steps=40",
    "batch_size=4",
    "eval_every=7",
    "log_every=1",
    "task.kshot_test_cap=32",
    "eval_batch_size=16",
    "save_weights=true",
    "threads=1",
]
TIMING_KEYS = {"elapsed_s", "examples_per_s"}


def _command(results: Path, method: str) -> list[str]:
    # a large lr so the weights move; interval 4 so LOZO's subspace changes within the run;
    # "<method>+philox" draws the directions with optimizer.rng=philox; "+stochastic" trains in
    # bf16 with stochastically rounded updates (their random numbers keyed like the directions)
    method, *variants = method.split("+")
    rng = "philox" if "philox" in variants else "torch"
    method_args = quick_overrides(method, lr=1e-3, zo_lr=1e-3, interval=4, rng=rng)
    if "stochastic" in variants:
        method_args += ["dtype=bf16", "optimizer.rounding=stochastic"]
    if "full" in variants:  # a pure ZO method's checkpoints are its trajectory unless asked
        method_args += ["checkpoint=full"]
    return [sys.executable, "-m", "zoft", *COMMON, *method_args, f"results_dir={results}"]


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "ZOFT_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}


def _run_dir(results: Path) -> Path:
    (result,) = results.rglob("result.json")
    return result.parent


def _metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in lines]


def _interrupt_after(cmd: list[str], env: dict[str, str], results: Path, step: int) -> int:
    """Start the run, SIGTERM it once its metrics show `step` steps; its exit code."""
    proc = subprocess.Popen(cmd, env=env, cwd=results, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logged = list(results.rglob("metrics.jsonl"))
        if logged and len(logged[0].read_text().splitlines()) >= step:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=300)
    assert "stopping after this step" in stderr, stderr[-3000:]
    return proc.returncode


@pytest.mark.parametrize(
    "method",
    [*method_params(), "mezo+philox", "lozo-m+philox", "mezo+philox+stochastic", "lozo-m+full"],
)
def test_killed_and_resumed_run_equals_an_uninterrupted_one(method, data_dir, tmp_path):
    env = _env(data_dir)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    straight.mkdir()
    broken.mkdir()
    done = subprocess.run(_command(straight, method), env=env, cwd=straight, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]

    code = _interrupt_after(_command(broken, method), env, broken, step=9)  # past a dev eval
    assert code == 128 + signal.SIGTERM
    run_dir = _run_dir(broken)
    stopped = json.loads((run_dir / "result.json").read_text())
    assert stopped["status"] == "interrupted" and "re-run the same command" in stopped["reason"]
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    name, *variants = method.split("+")
    if OPTIMIZERS.get(name).replayable and "full" not in variants:
        # a trajectory checkpoint: the steps so far and the small state, no weights
        assert sorted(p.name for p in latest.iterdir()) == [
            "meta.json", "state.pt", "trajectory.jsonl"
        ]  # fmt: skip
        assert json.loads((latest / "meta.json").read_text())["kind"] == "trajectory"
        assert sum(p.stat().st_size for p in latest.iterdir()) < 64_000
    else:
        assert (latest / "best.safetensors").is_file()  # step 7's weights

    again = subprocess.run(_command(broken, method), env=env, cwd=broken, capture_output=True)
    assert again.returncode == 0, again.stderr[-3000:]
    expected, resumed = _run_dir(straight), run_dir
    a = load_file(str(expected / "weights.safetensors"))
    b = load_file(str(resumed / "weights.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _metrics(resumed) == _metrics(expected)
    first, second = (json.loads((d / "result.json").read_text()) for d in (expected, resumed))
    for key in ("test", "dev", "best_step", "train_loss_last", "forward_passes", "zero_shot"):
        assert first[key] == second[key], key
    assert second["optimizer_stats"] == first["optimizer_stats"]
    (step,) = second["resumed_at_steps"]
    assert 9 <= step < 40
    assert not (resumed / "checkpoints").exists()  # removed once the run is complete
    if OPTIMIZERS.get(method.split("+")[0]).replayable:  # the resumed trajectory replays too
        trajectory = (resumed / "trajectory.jsonl").read_text()
        assert trajectory == (expected / "trajectory.jsonl").read_text()
        replay(resumed, None, tmp_path / "replayed.safetensors")
        rebuilt = load_file(str(tmp_path / "replayed.safetensors"))
        assert rebuilt.keys() == b.keys() and all(torch.equal(rebuilt[k], b[k]) for k in b)

"""zoft-replay: every pure ZO method's weights rebuilt from the base model and trajectory.jsonl
equal the weights its run saved, bit for bit, in fp32 and in bf16; any step can be rebuilt; runs
that cannot be replayed are refused with the reason. (Resumed runs: tests/run/test_resume.py;
data-parallel runs: tests/run/test_distributed.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import compose
from tests.methods import quick_overrides
from zoft.optim import OPTIMIZERS
from zoft.run.replay import main, replay
from zoft.run.runner import run
from zoft.run.trajectory import TrajectoryError, read_trajectory

PURE_ZO = [name for name in OPTIMIZERS.in_paper_order() if OPTIMIZERS.get(name).replayable]


def _run(
    tmp_path: Path, data_dir: Path, monkeypatch, *args: str, steps: int = 6, eval_every: int = 2
) -> Path:
    monkeypatch.setenv("ZOFT_DATA", str(data_dir))
    cfg = compose(
        [
            "model=tiny-opt",
            "task=rte",
            "task.protocol=large",
            "task.num_train=8",
            "task.num_dev=4",
            "task.num_eval=4",
            f"steps={steps}",
            f"eval_every={eval_every}",
            "batch_size=4",
            "eval_batch_size=8",
            "zero_shot=false",
            "save_weights=true",
            "threads=1",
            f"results_dir={tmp_path}",
            *args,
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete"
    return Path(result["output_dir"])


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_pure_zo_methods_are_the_zeroth_order_optimizers():
    assert set(PURE_ZO) == {
        "mezo", "mezo-lora", "mezo-prefix", "mezo-m", "mezo-adam", "lozo", "lozo-m", "subzero"
    }  # fmt: skip
    assert not OPTIMIZERS.get("lmao").replayable  # its LoRA half is backprop


VARIANTS = {
    "fp32": [],
    "bf16-stochastic": ["dtype=bf16", "optimizer.rounding=stochastic"],
    "bf16-nearest": ["dtype=bf16", "optimizer.rounding=nearest"],
    "bf16-default": ["dtype=bf16"],  # rounding=auto: stochastic in bf16
}
ROUNDING_DONE = {"fp32": "nearest", "bf16-default": "stochastic"}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", PURE_ZO)
def test_replay_equals_the_saved_weights(method, variant, data_dir, tmp_path, monkeypatch):
    if variant in ("bf16-nearest", "bf16-default") and method != "mezo":
        pytest.skip("round-to-nearest and the default in bf16: one method is enough")
    # large rates, so that the weights move in bf16 too; interval 2 changes LOZO's subspace
    args = quick_overrides(method, lr=5e-2, interval=2) + VARIANTS[variant]
    run_dir = _run(tmp_path, data_dir, monkeypatch, *args)
    trajectory = read_trajectory(run_dir / "trajectory.jsonl")
    assert [e.step for e in trajectory] == list(range(1, 7))
    assert all(len(e.estimates) == 1 and not e.skipped for e in trajectory)
    result = json.loads((run_dir / "result.json").read_text())
    done_rounding = ROUNDING_DONE.get(variant, variant.removeprefix("bf16-"))
    assert result["hyperparameters"]["rounding"] == done_rounding  # the rounding it did
    out = tmp_path / "replayed.safetensors"
    done = replay(run_dir, None, out)
    assert done.step == result["best_step"] and done.updates == result["best_step"]
    saved, replayed = load_file(str(run_dir / "weights.safetensors")), load_file(str(out))
    assert _equal(saved, replayed)
    replay(run_dir, 0, tmp_path / "base.safetensors")
    untrained = load_file(str(tmp_path / "base.safetensors"))
    assert not _equal(untrained, saved), "the run must move the weights for the test to mean much"


def test_any_step_replays_to_the_run_that_stopped_there(data_dir, tmp_path, monkeypatch):
    """ZO steps do not depend on the step budget: replaying 3 steps of a 6-step run gives the
    weights of a 3-step run (its only dev evaluation is at the end, so no best-dev restore)."""
    args = ["optimizer=lozo-m", "optimizer.lr=1e-2", "optimizer.interval=2"]
    long = _run(tmp_path / "long", data_dir, monkeypatch, *args)
    short = _run(tmp_path / "short", data_dir, monkeypatch, *args, steps=3, eval_every=0)
    replay(long, 3, tmp_path / "three.safetensors")
    assert _equal(
        load_file(str(tmp_path / "three.safetensors")),
        load_file(str(short / "weights.safetensors")),
    )
    assert (
        read_trajectory(short / "trajectory.jsonl")
        == read_trajectory(long / "trajectory.jsonl")[:3]
    )


def test_step_last_is_the_last_step_of_the_trajectory(data_dir, tmp_path, monkeypatch):
    run_dir = _run(tmp_path, data_dir, monkeypatch, "optimizer=mezo", "optimizer.lr=5e-2")
    assert replay(run_dir, "last", tmp_path / "last.safetensors").step == 6
    replay(run_dir, 6, tmp_path / "six.safetensors")
    assert _equal(
        load_file(str(tmp_path / "last.safetensors")), load_file(str(tmp_path / "six.safetensors"))
    )


@pytest.mark.parametrize("step", ["-1", "best", "1.5"])
def test_a_step_that_is_not_a_step_is_refused_by_the_command_line(step, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--step", step, "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "a step is a number, 0 or more, or 'last'" in capsys.readouterr().err


def test_a_step_past_the_trajectory_is_refused_before_loading(data_dir, tmp_path, monkeypatch):
    run_dir = _run(tmp_path, data_dir, monkeypatch, "optimizer=mezo", steps=2)
    with pytest.raises(
        TrajectoryError, match=r"steps 1\.\.2 \(2 lines\), not each of steps 1\.\.5"
    ):
        replay(run_dir, 5, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_a_first_order_run_has_no_trajectory(data_dir, tmp_path, monkeypatch):
    run_dir = _run(tmp_path, data_dir, monkeypatch, "optimizer=ft-lora", steps=2)
    assert not (run_dir / "trajectory.jsonl").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "zoft.run.replay", str(run_dir), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "has no trajectory.jsonl: only pure zeroth-order runs" in proc.stderr
    assert "Traceback" not in proc.stderr

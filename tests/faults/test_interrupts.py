"""Faults that must lose no training and leave a record of every attempt (issue 18, items 2, 7
and 8): stop signals during the final evaluation, during loading and twice in a row, damaged
checkpoints, and run folders that cannot be written, before or during a run.

Each process here receives real signals (or meets a real read-only folder); the runs are tiny
(tiny-opt, a few MeZO steps, one thread)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import compose
from tests.faults.harness import DATA_DIR, REPO, Fault, check_fault, command, run_command
from zoft.run.checkpoint import Checkpointer
from zoft.run.rundir import config_digest
from zoft.run.signals import Interrupted, signal_flags

TINY = (
    "model=tiny-opt",
    "optimizer=mezo",
    "steps=6",
    "batch_size=8",
    "log_every=2",
    "eval_batch_size=32",
    "zero_shot=false",
    "threads=1",
)
TIMING = {"elapsed_s", "examples_per_s"}
TRACEBACK = "Traceback (most recent call last)"


# ---- helpers -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ZOFT_DATA": str(DATA_DIR),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }


class Running:
    """A zoft process whose merged output is read line by line, so a test can act (send a
    signal, break a folder) at the moment the run says it reached a point."""

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []

    def wait_for(self, marker: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        assert self.proc.stdout is not None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if marker in line:
                return
        self.proc.kill()
        pytest.fail(f"never saw {marker!r}:\n{''.join(self.lines)[-4000:]}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return self.proc.returncode, "".join(self.lines) + (rest or "")


def _zoft_run(*args: str) -> list[str]:
    return command(("zoft-run", *args))


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def _run_dir(results: Path) -> Path:
    (found,) = results.rglob("config.yaml")
    return found.parent


def _unwritable(path: Path) -> None:
    """Make a folder or file unwritable for this user; as root, whom permission bits do not
    stop, with the immutable attribute (undone after each test)."""
    if os.geteuid() != 0:
        path.chmod(0o555 if path.is_dir() else 0o444)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a folder unwritable")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i is refused here: {done.stderr.strip()}")


@pytest.fixture(autouse=True)
def _writable_again(tmp_path: Path):
    """Whatever a test made unwritable is made writable again, so tmp_path can be removed."""
    yield
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-i", str(tmp_path)], capture_output=True)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


# ---- the fault table: damaged checkpoints and unwritable folders ---------------------------

RUN = "run"  # output_dir of the table's runs, relative to the work folder
PREVIOUS_REASON = "ZoftError: the previous attempt's reason"


def _with_checkpoint(damage: str):
    """A run folder whose checkpoint (of this very config) has `damage`d file, and a
    result.json of an earlier failed attempt, whose reason must not survive this one."""

    def setup(work: Path) -> None:
        cfg = compose([*TINY, f"output_dir={work / RUN}"])
        params = {"w": torch.ones(3)}
        checkpointer = Checkpointer(work / RUN, config_digest(cfg))
        path = checkpointer.save(2, params, None, {"extra": {}})
        target = path / damage
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or a bad copy
        earlier = {"status": "failed", "reason": PREVIOUS_REASON, "task": "sst2"}
        (work / RUN / "result.json").write_text(json.dumps(earlier))

    return setup


def _unwritable_results(work: Path) -> None:
    (work / "readonly").mkdir()
    _unwritable(work / "readonly")


def _unwritable_checkpoints(work: Path) -> None:
    (work / RUN / "checkpoints").mkdir(parents=True)
    _unwritable(work / RUN / "checkpoints")


FAULTS = [
    Fault(
        "truncated state.pt",
        ("zoft-run", *TINY, f"output_dir={RUN}"),
        exit_code=1,
        words=("state.pt", "damaged or truncated", "resume=false starts the run over"),
        intact=(f"{RUN}/checkpoints",),
        setup=_with_checkpoint("state.pt"),
    ),
    Fault(
        "truncated weights.safetensors",
        ("zoft-run", *TINY, f"output_dir={RUN}"),
        exit_code=1,
        words=("weights.safetensors", "damaged or truncated", "resume=false"),
        intact=(f"{RUN}/checkpoints",),
        setup=_with_checkpoint("weights.safetensors"),
    ),
    Fault(
        "unwritable results_dir",
        ("zoft-run", *TINY, "results_dir=readonly/results"),
        exit_code=1,
        words=("cannot write the run folder", "readonly/results", "results_dir="),
        setup=_unwritable_results,
    ),
    Fault(
        "unwritable checkpoints folder",
        ("zoft-run", *TINY, f"output_dir={RUN}"),
        exit_code=1,
        words=("cannot write the run folder", f"{RUN}/checkpoints"),
        setup=_unwritable_checkpoints,
    ),
]


def _this_attempts_reason(file: str):
    def check(work: Path, output: str) -> None:
        record = _result(work / RUN)
        assert record["status"] == "failed"
        assert file in record["reason"] and PREVIOUS_REASON not in record["reason"], record

    return check


def _nothing_written(work: Path, output: str) -> None:
    """Refused before the run: nothing written, and no result.json claimed."""
    assert not (work / "readonly" / "results").exists()
    assert "result.json" not in output, output


AFTER = {
    "truncated state.pt": _this_attempts_reason("state.pt"),
    "truncated weights.safetensors": _this_attempts_reason("weights.safetensors"),
    "unwritable results_dir": _nothing_written,
}


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault(fault: Fault, tmp_path: Path, data_dir: Path):
    done = check_fault(fault, tmp_path)
    if fault.name in AFTER:
        AFTER[fault.name](tmp_path, done.stdout + done.stderr)


# ---- stop signals ----------------------------------------------------------------------------


def test_sigterm_during_the_final_test_evaluation_keeps_the_training(tmp_path, data_dir):
    """SIGTERM while the test set is evaluated (after the last step, checkpoint_every=0): the
    trained state is checkpointed, and the re-run trains 0 steps and reports the very test
    metric of a run that was never stopped."""
    args = (*TINY, "task.kshot_test_cap=872")  # the whole SST-2 test set: a long evaluation
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = run_command(("zoft-run", *args, f"results_dir={straight}"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    run = Running(_zoft_run(*args, f"results_dir={broken}"), tmp_path)
    run.wait_for("test evaluation on")
    run.signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert TRACEBACK not in output, output
    assert "during the final evaluation" in output and "without training again" in output
    run_dir = _run_dir(broken)
    stopped = _result(run_dir)
    assert stopped["status"] == "interrupted" and "without training again" in stopped["reason"]
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-000000006"

    again = run_command(("zoft-run", *args, f"results_dir={broken}"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 steps to train" in again.stderr
    first, second = _result(_run_dir(straight)), _result(run_dir)
    assert second["status"] == "complete"
    assert second["resumed_at_steps"] == [6]  # no step trained again
    for key in ("test", "dev", "best_step", "steps", "forward_passes", "train_loss_last"):
        assert first[key] == second[key], key
    assert _metrics(run_dir) == _metrics(_run_dir(straight))
    assert not (run_dir / "checkpoints").exists()


def test_a_double_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, data_dir):
    """Ctrl-C twice during a long step (a 300-example dev evaluation after every step, a
    checkpoint after every step): no traceback, status interrupted, exit 130, and the latest
    checkpoint complete and loadable."""
    results = tmp_path / "results"
    args = (
        *TINY,
        "steps=50",
        "task.protocol=large",
        "task.num_train=64",
        "task.num_dev=300",
        "task.num_eval=16",
        "eval_every=1",
        "checkpoint_every=1",
        f"results_dir={results}",
    )
    run = Running(_zoft_run(*args), tmp_path)
    run.wait_for("checkpoint after step 2")
    run.signal(signal.SIGINT)
    run.wait_for("press Ctrl-C again")
    run.signal(signal.SIGINT)
    code, output = run.finish()
    assert code == 128 + signal.SIGINT, output[-3000:]
    assert TRACEBACK not in output and "KeyboardInterrupt" not in output, output
    assert "second Ctrl-C" in output and "is kept" in output, output[-3000:]
    run_dir = _run_dir(results)
    record = _result(run_dir)
    assert record["status"] == "interrupted" and "second Ctrl-C" in record["reason"], record
    meta = json.loads((Checkpointer(run_dir, "").latest() / "meta.json").read_text())
    found = Checkpointer(run_dir, meta["config_digest"]).load()
    assert found is not None and found.step >= 2 and "optimizer" in found.state
    assert not list((run_dir / "checkpoints").glob(".step-*"))  # no half-written checkpoint


def test_a_second_ctrl_c_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """Atomic checkpoints: a real SIGINT arriving while state.pt is written aborts that write
    and the previous checkpoint stays the latest, whole."""
    import zoft.run.checkpoint as checkpoint_module

    checkpointer = Checkpointer(tmp_path, "digest")
    checkpointer.save(1, {"w": torch.zeros(2)}, None, {"at": 1})
    real_save = checkpoint_module.torch.save

    def interrupted_save(obj, f):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, mid-write
        real_save(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted_save)
    with signal_flags() as flags, flags.deferred():
        flags.stop = signal.SIGINT  # the first Ctrl-C asked for this checkpoint
        with pytest.raises(Interrupted, match="second Ctrl-C"):
            checkpointer.save(2, {"w": torch.ones(2)}, None, {"at": 2})
    found = checkpointer.load()
    assert found is not None and found.step == 1 and found.state == {"at": 1}
    assert sorted(p.name for p in checkpointer.root.iterdir()) == ["latest", "step-000000001"]


# zoft-run with this checkout's grid sweeper, loaded under its plugin name: an editable install
# of another checkout would map hydra_plugins.zoft_grid there
_THIS_SWEEPER = """
import importlib.util, sys
from pathlib import Path
import zoft
path = Path(zoft.__file__).parent / "sweep" / "hydra_plugin" / "__init__.py"
spec = importlib.util.spec_from_file_location("hydra_plugins.zoft_grid", path)
sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""
_ZOFT_RUN = """
from zoft.cli import run_main
sys.argv[0] = "zoft-run"
run_main()
"""
# ... whose hub is slow: the first load_dataset call waits, as a hub retrying would
_SLOW_HUB = """
import time
import datasets
real, calls = datasets.load_dataset, []
def slow_hub(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        print("slow hub: waiting", file=sys.stderr, flush=True)
        time.sleep(120)
    return real(*args, **kwargs)
datasets.load_dataset = slow_hub
"""


def test_sigterm_while_a_sweep_cell_loads_data_stops_the_sweep(tmp_path, data_dir):
    """The hub loader rewraps every Exception as "Could not load task"; a stop signal must go
    through it and end the whole sweep, not fail this cell and launch the next."""
    results = tmp_path / "results"
    script = _THIS_SWEEPER + _SLOW_HUB + _ZOFT_RUN
    cmd = [sys.executable, "-c", script, "-m", *TINY, "task.data_dir=hub", "seed=0,1"]
    run = Running([*cmd, f"results_dir={results}"], tmp_path)
    run.wait_for("slow hub: waiting")
    run.signal(signal.SIGTERM)
    code, output = run.finish(timeout=120)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert TRACEBACK not in output and "Could not load task" not in output, output[-3000:]
    assert "stopped by SIGTERM" in output
    (cell,) = [p.parent for p in results.rglob("config.yaml")]  # the second cell never started
    assert _result(cell)["status"] == "interrupted"


def test_a_sweep_into_an_unwritable_results_dir_is_refused_before_any_cell(tmp_path, data_dir):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    _unwritable(readonly)
    script = _THIS_SWEEPER + _ZOFT_RUN
    cmd = [sys.executable, "-c", script, "-m", *TINY, "seed=0,1", f"results_dir={readonly}/results"]
    done = subprocess.run(
        cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert TRACEBACK not in output, output[-3000:]
    assert "cannot write the run folder" in output and str(readonly) in output, output[-3000:]
    assert not list(readonly.iterdir())  # no cell ran, nothing was created


def test_a_run_folder_made_unwritable_mid_run_is_a_message(tmp_path, data_dir):
    """The run folder turns read-only while training (a quota, a remount, a chmod): the run
    stops naming the file it could not write, without a chained traceback, and does not claim
    a result.json it could not write."""
    run_dir = tmp_path / RUN
    run = Running(
        _zoft_run(*TINY, "steps=100000", "log_every=1", f"output_dir={run_dir}"), tmp_path
    )
    run.wait_for("step 3/100000")
    _unwritable(run_dir / "metrics.jsonl")
    _unwritable(run_dir)
    code, output = run.finish(timeout=120)
    assert code == 1, output[-3000:]
    assert TRACEBACK not in output, output[-4000:]
    assert f"could not write {run_dir / 'metrics.jsonl'}" in output, output[-3000:]
    assert "no longer writable" in output
    assert "is not recorded" in output and "records why" not in output

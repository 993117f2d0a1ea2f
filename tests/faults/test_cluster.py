"""The cluster path for real: sweeps through the submitit launcher (`hydra/launcher=slurm_local`:
the machinery `hydra/launcher=slurm` uses, with local processes in place of sbatch), whose cells
are signalled, requeued, failed and killed as a cluster would, and compared bit for bit with an
uninterrupted sweep. Also: no sweep leaves an empty `multirun/<time>/` folder behind.

What this cannot exercise without SLURM: sbatch itself and `scontrol requeue` (the local
executor's requeue is its controller restarting the job, with the same pickled job and the same
submitit signal handling)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DATA_DIR, REPO, compose
from tests.faults.harness import Fault, check_fault, command

TINY = (
    "model=tiny-opt",
    "task=sst2",
    "task.kshot_test_cap=32",
    "steps=2",
    "batch_size=4",
    "eval_batch_size=16",
    "threads=1",
)
# long enough (40 steps, dev evaluations) for a signal to land mid-training
TRAIN = (
    "model=tiny-opt",
    "task=sst2",
    "steps=40",
    "batch_size=4",
    "eval_every=7",
    "log_every=1",
    "task.kshot_test_cap=32",
    "eval_batch_size=16",
    "save_weights=true",
    "threads=1",
    "optimizer.lr=1e-3",
)
LOCAL = ("-m", "hydra/launcher=slurm_local")
TIMING_KEYS = {"elapsed_s", "examples_per_s"}


def _no_sbatch(work: Path) -> None:
    if shutil.which("sbatch", path=_PATH_WITHOUT_SBATCH) or shutil.which(
        "srun", path=_PATH_WITHOUT_SBATCH
    ):
        pytest.skip("SLURM is installed here")


_PATH_WITHOUT_SBATCH = f"{Path(sys.executable).parent}:/usr/bin:/bin"

FAULTS = [
    Fault(
        "preempt signal collides with zoft's SIGUSR1",
        ("zoft-run", *LOCAL, *TINY, "results_dir=runs"),
        2,
        ("SUBMITIT_PREEMPT_SIGNAL=USR1", "checkpoint and go on", "USR2"),
        env={"SUBMITIT_PREEMPT_SIGNAL": "USR1"},
    ),
    Fault(
        "slurm launcher without sbatch",
        ("zoft-run", "-m", "hydra/launcher=slurm", *TINY, "results_dir=runs"),
        2,
        ("sbatch and srun not on PATH", "login node", "hydra/launcher=slurm_local"),
        setup=_no_sbatch,
        env={"PATH": _PATH_WITHOUT_SBATCH},
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_cluster_fault(fault, data_dir, tmp_path):
    check_fault(fault, tmp_path)
    assert not (tmp_path / "runs").exists()  # refused before anything was submitted or written


# --------------------------------------------------------------------------- configs


def test_the_sweep_folder_is_the_results_dir_and_jobs_log_under_it():
    """Hydra makes its sweep folder whenever a sweep launches: it is results_dir itself (runs
    write there anyway), never a new empty multirun/<time>/."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            overrides=["hydra/launcher=slurm_local", "results_dir=somewhere"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweep.dir == "somewhere" and cfg.hydra.sweep.subdir == "."
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.zoft_grid.launchers.ZoftLocalLauncher"
    assert launcher.submitit_folder == "somewhere/.submitit/%j"
    assert compose(["results_dir=somewhere"]).results_dir == "somewhere"


# --------------------------------------------------------------------------- helpers


def _sweep(args: tuple[str, ...], cwd: Path) -> subprocess.Popen:
    """zoft-run in a fresh process, as the fault harness runs it, but not waited for."""
    env = {
        **os.environ,
        "ZOFT_DATA": str(DATA_DIR),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        command(("zoft-run", *args)), cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _steps_logged(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def _task(runs: Path, run_dir: Path) -> psutil.Process | None:
    """The process running `run_dir`'s cell: the child of its submitit controller (the job id
    names both the job's folder and the controller's pid), found by the run directory its log
    names."""
    for log in runs.glob(".submitit/*/*_0_log.err"):
        if f"-> {run_dir} " in log.read_text(errors="replace"):
            try:
                children = psutil.Process(int(log.parent.name)).children()
            except psutil.NoSuchProcess:
                return None
            return children[-1] if children else None
    return None


def _signal_when(
    runs: Path, schedule: list[tuple[Path, int, int]], timeout: float = 300
) -> list[int]:
    """Send each (run directory, step, signal) once that cell's metrics show `step` steps, the
    entries of one cell in their order; the step each cell had logged when signalled."""
    pending, seen = list(schedule), [0] * len(schedule)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for entry in list(pending):
            run_dir, step, signum = entry
            if any(e[0] == run_dir for e in pending[: pending.index(entry)]):
                continue  # an earlier signal to this cell goes first
            logged = _steps_logged(run_dir)
            if logged >= step and (task := _task(runs, run_dir)) is not None:
                task.send_signal(signum)
                seen[schedule.index(entry)] = logged
                pending.remove(entry)
        time.sleep(0.02)
    assert not pending, f"never reached: {pending}"
    return seen


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=600)
    assert "Traceback (most recent call last)" not in output, output[-4000:]
    return proc.returncode, output


def _metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in lines]


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _assert_same_run(expected: Path, resumed: Path) -> None:
    a = load_file(str(expected / "weights.safetensors"))
    b = load_file(str(resumed / "weights.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _metrics(resumed) == _metrics(expected)
    first, second = _result(expected), _result(resumed)
    for key in ("status", "test", "dev", "best_step", "train_loss_last", "forward_passes"):
        assert first[key] == second[key], key
    assert first["optimizer_stats"] == second["optimizer_stats"]


def _no_sweep_litter(runs: Path) -> None:
    assert not (runs / "multirun").exists()
    assert [p.name for p in runs.glob(".submitit/*") if not p.name.isdigit()] == []


# --------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory) -> Path:
    """The reference: a 2-cell sweep (MeZO, FT) of submitit jobs that nothing interrupts."""
    root = tmp_path_factory.mktemp("straight")
    runs = root / "runs"
    args = (*LOCAL, *TRAIN, "optimizer=mezo,ft", f"results_dir={runs}")
    code, output = _finish(_sweep(args, root))
    assert code == 0, output[-4000:]
    assert "2 cells, 0 complete, 2 to run" in output
    return runs


def _run_dirs(runs: Path) -> dict[str, Path]:
    """optimizer -> run directory, relative to the results folder."""
    found = {}
    for path in runs.rglob("result.json"):
        found[_result(path.parent)["optimizer"]] = path.parent.relative_to(runs)
    return found


def test_a_two_cell_sweep_of_submitit_jobs_completes_with_logs_and_no_empty_folders(straight):
    dirs = _run_dirs(straight)
    assert set(dirs) == {"mezo", "ft"}
    for rel in dirs.values():
        result = _result(straight / rel)
        assert result["status"] == "complete" and result["steps"] == 40
    logs = sorted(straight.glob(".submitit/*/*_0_log.err"))
    assert len(logs) == 2  # each job's log, under results_dir, carries zoft's log lines
    assert all("(full config: config.yaml, run.log)" in log.read_text() for log in logs)
    _no_sweep_litter(straight)


def test_signalled_cells_checkpoint_are_requeued_and_resume_bit_identically(straight, tmp_path):
    """MeZO's job gets SIGUSR1 (checkpoint, go on), then submitit's preemption signal USR2 (what
    SLURM sends before a time limit): it finishes its step, checkpoints, is requeued by submitit
    and resumes. FT's job gets SIGTERM (scancel): it checkpoints and stops, the sweep reports it,
    and launching the sweep again resumes it. Both end as the uninterrupted sweep did."""
    dirs = _run_dirs(straight)
    runs = tmp_path / "runs"
    mezo, ft = runs / dirs["mezo"], runs / dirs["ft"]
    args = (*LOCAL, *TRAIN, "optimizer=mezo,ft", f"results_dir={runs}")
    proc = _sweep(args, tmp_path)
    schedule = [(mezo, 5, signal.SIGUSR1), (mezo, 15, signal.SIGUSR2), (ft, 10, signal.SIGTERM)]
    preempted_at = _signal_when(runs, schedule)[1]
    code, output = _finish(proc)
    assert code == 1, output[-4000:]
    assert "interrupted with a checkpoint" in output and "optimizer=ft" in output
    interrupted = _result(ft)
    assert (
        interrupted["status"] == "interrupted"
        and "re-run the same command" in interrupted["reason"]
    )

    log = (mezo / "run.log").read_text()
    assert log.count("checkpoint after step") == 2  # SIGUSR1's, then the preemption's
    result = _result(mezo)
    assert result["status"] == "complete"
    (resumed_at,) = result["resumed_at_steps"]
    assert preempted_at <= resumed_at < 40
    (job_log,) = [p for p in runs.glob(".submitit/*/*_0_log.err") if str(mezo) in p.read_text()]
    assert "Requeued job" in job_log.with_name(job_log.name.replace(".err", ".out")).read_text()
    _assert_same_run(straight / dirs["mezo"], mezo)

    code, output = _finish(_sweep(args, tmp_path))
    assert code == 0, output[-4000:]
    assert "2 cells, 1 complete, 1 to run" in output
    assert len(_result(ft)["resumed_at_steps"]) == 1
    _assert_same_run(straight / dirs["ft"], ft)
    _no_sweep_litter(runs)


def test_a_failed_and_a_killed_cell_are_reported_and_the_sweep_goes_on(data_dir, tmp_path):
    """A cell whose run fails records why in result.json; a cell whose process is killed
    (SIGKILL: out of memory, a node lost) ends its job without a result. The sweep names both,
    with the killed job's log, and exits 1 without a traceback."""
    runs = tmp_path / "runs"
    args = (*LOCAL, *TRAIN, "optimizer=mezo", "optimizer.lr=1e30,1e-3", f"results_dir={runs}")
    proc = _sweep(args, tmp_path)
    deadline = time.time() + 300
    while not (killed := _find_run(runs, "0.001")) and time.time() < deadline:
        time.sleep(0.05)
    assert killed is not None
    _signal_when(runs, [(killed, 5, signal.SIGKILL)])
    code, output = _finish(proc)
    assert code == 1, output[-4000:]
    assert "2 cell(s) of the sweep failed" in output
    assert "ended without a result" in output and "_0_log.err" in output
    (failed,) = [p.parent for p in runs.rglob("result.json") if p.parent != killed]
    record = _result(failed)
    assert record["status"] == "failed" and "non-finite" in record["reason"]


def _find_run(runs: Path, lr: str) -> Path | None:
    """The run directory of the cell with this learning rate, once its run has started."""
    for config in runs.rglob("config.yaml"):
        if f"lr: {lr}" in config.read_text():
            return config.parent
    return None

"""Run identity and one writer (issue 18, items 1, 3 and 7): a finished run is reused only when it
read the data the command would read now; one process writes a run folder; files get the mode
the umask says.

The fault table runs zoft-run as a user would; the other tests check the rules behind it in
process. Every case fails on the code before this change: the changed data printed "already
complete", the second process ran into the locked folder, and atomic writes were mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import DATA_DIR, REPO, compose
from tests.faults.harness import Fault, check_fault
from zoft.run import fingerprint
from zoft.run.fingerprint import check_data, data_fingerprint, reusable_result
from zoft.run.lock import LOCKED_EXIT, RunLock, RunLocked, lock_holder
from zoft.run.record import RunResult
from zoft.run.rundir import LOCK_FILE, RESULT_FILE, resolve_output_dir
from zoft.run.runner import run
from zoft.tasks.io import DataReads, recording_reads

SPLIT = "k-shot/SST-2/16-13"  # the ready LM-BFF split the default SST-2 run reads
TRAIN = f"{SPLIT}/train.tsv"
RUN = (
    "model=tiny-opt",
    "steps=1",
    "task.kshot_test_cap=8",
    "eval_batch_size=16",
    "threads=1",
    "results_dir=runs",
)
ENV = {"ZOFT_CACHE_DIR": "cache"}  # the data hash cache of the work folder, not ~/.cache
PID, HOST = os.getpid(), socket.gethostname()
_HELD: list[RunLock] = []  # locks this test process holds while a command runs


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOFT_CACHE_DIR", str(tmp_path / "cache"))
    yield
    while _HELD:
        _HELD.pop().release()


# --- the work folder ---------------------------------------------------------------------------


def _copy_data(work: Path, name: str = "data") -> None:
    shutil.copytree(DATA_DIR / SPLIT, work / name / SPLIT)


def _run_in_process(work: Path, data: str = "data", *extra: str) -> dict:
    """The first run of a case, in this process (the same run directory zoft-run finds)."""
    overrides = [o for o in RUN if not o.startswith("results_dir=")]
    cfg = compose(
        [*overrides, *extra, f"results_dir={work / 'runs'}", f"task.data_dir={work / data}"]
    )
    result = run(cfg)
    assert result["status"] == "complete"
    return result


def _flip_labels(work: Path) -> None:
    """Every train label 0 <-> 1: the same size, other content."""
    path = work / "data" / TRAIN
    header, *rows = path.read_text().splitlines()
    flipped = [row[:-1] + ("1" if row[-1] == "0" else "0") for row in rows]
    path.write_text("\n".join([header, *flipped]) + "\n")


def _strip_fingerprints(work: Path) -> None:
    """result.json as zoft wrote it before data fingerprints existed."""
    for path in (work / "runs").rglob(RESULT_FILE):
        data = json.loads(path.read_text())
        data.pop("data_fingerprint")
        path.write_text(json.dumps(data, indent=2))


def _run_dir(work: Path) -> Path:
    (path,) = (work / "runs").rglob(RESULT_FILE)
    return path.parent


def _hold(out_dir: Path) -> None:
    _HELD.append(RunLock.acquire(out_dir))


def _shim(work: Path) -> None:
    """Hydra imports the grid sweeper as hydra_plugins.zoft_grid, which an editable install may
    resolve to another checkout: this one's goes first on the command's path."""
    plugins = work / "shim" / "hydra_plugins"
    plugins.mkdir(parents=True)
    (plugins / "zoft_grid").symlink_to(REPO / "zoft" / "sweep" / "hydra_plugin")


def _steps(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        for step in steps:
            step(work)

    return setup


# the run folder of the sweep's cell seed=1, under the work folder
LOCKED_CELL = str(resolve_output_dir(compose([*RUN, "seed=1", f"task.data_dir={DATA_DIR}"])))


def _sweep_setup(work: Path) -> None:
    _shim(work)
    _hold(work / LOCKED_CELL)


FAULTS = [
    Fault(
        "changed data is run again",
        ("zoft-run", *RUN, "task.data_dir=data"),
        0,
        ("re-running", "its data changed", f"{TRAIN} changed content", "kept as result."),
        setup=_steps(_copy_data, _run_in_process, _flip_labels),
        env=ENV,
    ),
    Fault(
        "unchanged data is reused",
        ("zoft-run", *RUN, "task.data_dir=data"),
        0,
        ("already complete",),
        intact=("runs",),
        setup=_steps(_copy_data, _run_in_process),
        env=ENV,
    ),
    Fault(
        "an old run is trusted while its data source is unchanged",
        ("zoft-run", *RUN, "task.data_dir=data"),
        0,
        ("already complete", "predates data fingerprints", "data source", "is unchanged"),
        intact=("runs",),
        setup=_steps(_copy_data, _run_in_process, _strip_fingerprints),
        env=ENV,
    ),
    Fault(
        "a second process is refused a locked run folder",
        ("zoft-run", *RUN, "output_dir=out"),
        LOCKED_EXIT,
        ("is locked by another zoft-run", f"pid {PID} on host {HOST}", "out"),
        intact=("out",),
        setup=lambda work: _hold(work / "out"),
        env=ENV,
    ),
    Fault(
        "a sweep skips the cell another process is writing and says so",
        ("zoft-run", "-m", *RUN, "seed=0,1"),
        LOCKED_EXIT,
        (
            "1 to run, 1 locked by another process",
            "1 cell(s) of the sweep skipped",
            "seed=1",
            f"pid {PID} on host {HOST}",
        ),
        intact=(LOCKED_CELL,),
        setup=_sweep_setup,
        env={**ENV, "PYTHONPATH": f"shim{os.pathsep}{REPO}"},
    ),
]
NOT_SAID = {
    "changed data is run again": ("already complete",),
}


def _after(fault: Fault, work: Path) -> None:
    """What each case leaves behind, beyond the harness's checks."""
    if "run again" in fault.name:
        run_dir = _run_dir(work)
        result = json.loads((run_dir / RESULT_FILE).read_text())
        assert result["status"] == "complete" and result["data_fingerprint"]["files"]
        assert list(run_dir.glob("result.*.json")), "the earlier result is kept"
    if fault.name.startswith("a sweep"):
        done = [json.loads(p.read_text()) for p in (work / "runs").rglob(RESULT_FILE)]
        assert [(r["seed"], r["status"]) for r in done] == [(0, "complete")]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault(fault: Fault, tmp_path: Path) -> None:
    done = check_fault(fault, tmp_path)
    output = (done.stdout + done.stderr).lower()
    for words in NOT_SAID.get(fault.name, ()):
        assert words not in output, f"{fault.name}: said {words!r}"
    _after(fault, tmp_path)


# --- the data fingerprint ---------------------------------------------------------------------


def _fingerprinted(data: Path) -> tuple[RunResult, object]:
    """A complete record of an SST-2 run reading `data`, and the config that reads it."""
    from zoft.tasks import get_task
    from zoft.tasks.sampling import load_splits

    cfg = compose(["model=tiny-opt", f"task.data_dir={data}"])
    with recording_reads() as reads:
        splits = load_splits(get_task("sst2"), cfg.task, cfg.data_seed)
    record = RunResult(
        status="complete",
        task="sst2",
        data_source=splits.source,
        data_fingerprint=data_fingerprint(reads, cfg.task),
    )
    return record, cfg


def _age(path: Path) -> None:
    """An mtime older than the racy window, so the hash may be cached."""
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))


def test_the_fingerprint_names_every_file_read_with_its_size_and_hash(tmp_path):
    _copy_data(tmp_path)
    record, cfg = _fingerprinted(tmp_path / "data")
    files = record.data_fingerprint["files"]
    assert [f["path"] for f in files] == [f"{SPLIT}/{n}.tsv" for n in ("train", "dev", "test")]
    train = (tmp_path / "data" / TRAIN).read_bytes()
    assert files[0] == {
        "path": TRAIN,
        "size": len(train),
        "sha256": hashlib.sha256(train).hexdigest(),
    }
    assert check_data(record, cfg).same


def test_hashes_are_cached_by_size_mtime_and_inode(tmp_path, monkeypatch):
    _copy_data(tmp_path)
    for path in (tmp_path / "data" / SPLIT).iterdir():
        _age(path)
    hashed: list[str] = []
    real = fingerprint.hashlib.file_digest
    monkeypatch.setattr(
        fingerprint.hashlib, "file_digest", lambda f, d: hashed.append(f.name) or real(f, d)
    )
    record, cfg = _fingerprinted(tmp_path / "data")
    assert len(hashed) == 3
    fingerprint._CACHES.clear()  # a new process: the cache is read from disk
    assert check_data(record, cfg).same and len(hashed) == 3  # nothing hashed again
    assert (tmp_path / "cache" / fingerprint.CACHE_FILE).is_file()


def test_a_file_changed_just_now_is_hashed_again(tmp_path):
    """A change within the file system's mtime resolution keeps size and mtime: a file modified
    in the last seconds is never cached, so such a change is still seen."""
    _copy_data(tmp_path)
    path = tmp_path / "data" / TRAIN
    os.utime(path)  # written just now
    record, cfg = _fingerprinted(tmp_path / "data")
    stamp = path.stat()
    _flip_labels(tmp_path)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same size, same mtime
    check = check_data(record, cfg)
    assert not check.same and f"{TRAIN} changed content" in check.note


def test_a_ready_split_that_appears_changes_what_the_run_reads(tmp_path):
    """Without its ready k-shot folder SST-2 samples from glue/SST-2; the folder's absence is
    part of the fingerprint."""
    shutil.copytree(DATA_DIR / "glue" / "SST-2", tmp_path / "data" / "glue" / "SST-2")
    record, cfg = _fingerprinted(tmp_path / "data")
    assert record.data_fingerprint["absent"] == [SPLIT]
    assert check_data(record, cfg).same
    _copy_data(tmp_path)
    check = check_data(record, cfg)
    assert not check.same and f"{SPLIT} now exists" in check.note


def test_the_same_files_elsewhere_are_the_same_data(tmp_path):
    _copy_data(tmp_path)
    record, _ = _fingerprinted(tmp_path / "data")
    _copy_data(tmp_path, "copy")
    check = check_data(record, compose(["model=tiny-opt", f"task.data_dir={tmp_path / 'copy'}"]))
    assert check.same and "same data files as recorded under" in check.note


def test_hub_data_is_fingerprinted_by_repository_config_and_revision():
    from zoft.tasks import get_task

    task = get_task("sst2")
    reads = DataReads(hub=[{"repo": task.hub_path, "config": task.hub_config, "revision": "r1"}])
    cfg = compose(["model=tiny-opt", "task.data_dir=hub"])
    print_ = data_fingerprint(reads, cfg.task)
    assert print_["kind"] == "hub" and print_["files"] == []
    record = RunResult(status="complete", task="sst2", data_fingerprint=print_)
    check = check_data(record, cfg)
    assert not check.same and "its hub data changed" in check.note  # r1 is not the task's revision
    print_["hub"][0]["revision"] = task.hub_revision
    assert check_data(record, cfg).same


def test_an_old_run_is_checked_by_its_data_source(tmp_path):
    cfg = compose(["model=tiny-opt", f"task.data_dir={DATA_DIR}"])
    old = RunResult(status="complete", task="sst2", data_source=str(DATA_DIR))
    assert check_data(old, cfg).same
    old.data_source = "hub:nyu-mll/glue/sst2"
    assert not check_data(old, cfg).same
    old.data_source = None  # no record of its data at all: not trusted
    assert not check_data(old, cfg).same


def test_a_run_whose_data_changed_is_not_reused_by_the_runner_or_the_sweeper(tmp_path):
    """reusable_result is the runner's skip and the sweeper's "done"."""
    _copy_data(tmp_path)
    first = _run_in_process(tmp_path)
    out_dir = Path(first["output_dir"])
    cfg = compose(
        [
            *[o for o in RUN if not o.startswith("results_dir=")],
            f"results_dir={tmp_path / 'runs'}",
            f"task.data_dir={tmp_path / 'data'}",
        ]
    )
    assert reusable_result(out_dir, cfg).record is not None
    _flip_labels(tmp_path)
    reuse = reusable_result(out_dir, cfg)
    assert reuse.record is None and reuse.stale is not None and TRAIN in reuse.note


def test_an_old_run_whose_data_source_changed_is_run_again(tmp_path, caplog):
    _copy_data(tmp_path)
    _copy_data(tmp_path, "data2")
    _run_in_process(tmp_path)
    _strip_fingerprints(tmp_path)
    caplog.set_level("INFO", logger="zoft")
    again = _run_in_process(tmp_path, "data2")
    assert not again.get("skipped") and again["data_fingerprint"]["files"]
    said = caplog.text
    assert "re-running" in said and "predates data fingerprints" in said
    assert f"data source changed from {tmp_path / 'data'} to {tmp_path / 'data2'}" in said
    assert "already complete" not in said


def test_an_interrupted_run_whose_data_changed_starts_over_keeping_its_checkpoints(tmp_path):
    """A checkpoint trained on other data is not resumed: the run starts over, says why, and
    keeps the checkpoints under a new name (before: it resumed, mixing the two data sets)."""
    from tests.faults.test_interrupts import Running, _zoft_run

    _copy_data(tmp_path)
    args = ("model=tiny-opt", "optimizer=mezo", "steps=100000", "log_every=1", "threads=1",
            "zero_shot=false", "task.data_dir=data", "output_dir=out")  # fmt: skip
    first = Running(_zoft_run(*args), tmp_path)
    first.wait_for("step 2/100000")
    first.signal(signal.SIGTERM)
    code, output = first.finish(timeout=120)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert (tmp_path / "out" / "checkpoints").is_dir()
    _flip_labels(tmp_path)
    again = Running(_zoft_run(*args), tmp_path)
    again.wait_for("step 1/100000")
    again.signal(signal.SIGTERM)
    code, output = again.finish(timeout=120)
    assert "starting over: the checkpoints in" in output, output[-3000:]
    assert f"{TRAIN} changed content" in output and "resuming" not in output.lower()
    assert list((tmp_path / "out").glob("checkpoints.*")), "the earlier checkpoints are kept"


# --- one writer -------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from zoft.run.lock import RunLock
lock = RunLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_goes_with_its_process_even_after_kill_9(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_holder(tmp_path).startswith(f"pid {holder.pid} on host {HOST}")
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on host"):
            RunLock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_holder(tmp_path) is None
    with RunLock.acquire(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_FILE).is_file()  # kept: never unlinked under another waiter


def test_a_run_holds_its_folder_while_it_writes_and_frees_it_after(tmp_path):
    _copy_data(tmp_path)
    result = _run_in_process(tmp_path)
    assert lock_holder(Path(result["output_dir"])) is None  # released after the run


def test_an_unwritable_folder_is_named_when_the_lock_cannot_be_made(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(Exception, match=str(tmp_path / "run")):
            RunLock.acquire(tmp_path / "run")
    finally:
        tmp_path.chmod(0o700)


# --- file modes -------------------------------------------------------------------------------


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in [root, *root.rglob("*")]
        if not p.is_symlink()
    }


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_file_written_respects_the_umask(tmp_path, mask):
    from zoft.benchmark.cli import bench_main
    from zoft.cli import table_main
    from zoft.run.checkpoint import Checkpointer

    _copy_data(tmp_path)
    previous = os.umask(mask)
    try:
        result = _run_in_process(tmp_path, "data", "save_weights=true")
        run_dir = Path(result["output_dir"])
        table_main([str(tmp_path / "runs"), "--out", str(tmp_path / "tables" / "t")])
        bench_main(
            ["--model", "tiny-opt", "--batch", "2", "--seq-len", "8", "--repeats", "1",
             "--warmup", "1", "--methods", "forward", "--out", str(tmp_path / "bench" / "b")]
        )  # fmt: skip
        weights = {"w": torch.zeros(2)}
        Checkpointer(tmp_path / "ckpt", "0123456789").save(3, weights, weights, {"step": 3})
    finally:
        os.umask(previous)
    written = {
        "run": run_dir,
        "tables": tmp_path / "tables",
        "bench": tmp_path / "bench",
        "checkpoints": tmp_path / "ckpt",
    }
    names = {p.name for p in run_dir.iterdir()}
    assert {"result.json", "config.yaml", "metrics.jsonl", "run.log", LOCK_FILE} <= names
    assert "weights.safetensors" in names
    assert {p.suffix for p in (tmp_path / "tables").iterdir()} >= {".md", ".csv", ".tex"}
    for what, root in written.items():
        for name, mode in _modes(root).items():
            is_dir = (root / name).is_dir()
            expected = (0o777 if is_dir else 0o666) & ~mask
            assert mode == expected, f"{what}: {name} is {mode:o}, expected {expected:o}"
    assert len(_modes(tmp_path / "ckpt")) >= 6  # checkpoints/, step dir, weights, best, state, meta

"""The fault-table harness: each fault is (command or fault, expected exit code, expected words,
files that must be intact), run as a user would run it, in a fresh process.

A fault test asserts three things: the exit code, that the output says what went wrong (its
words, and never a Python traceback), and that files written before the fault are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import DATA_DIR, REPO

ENTRY_POINTS = {
    "zoft-run": "zoft.cli:run_main",
    "zoft-table": "zoft.cli:table_main",
    "zoft-bench": "zoft.benchmark.cli:bench_main",
}


@dataclass(frozen=True)
class Fault:
    """One row of a fault table."""

    name: str
    argv: tuple[str, ...]  # ("zoft-run", "optimizer.lr=-1", ...): an entry point and its arguments
    exit_code: int
    words: tuple[str, ...]  # each must appear in stdout + stderr (case-insensitive)
    intact: tuple[str, ...] = ()  # paths relative to the work folder, unchanged by the command
    setup: Callable[[Path], None] | None = None  # prepares the work folder before the command
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def command(argv: tuple[str, ...] | list[str]) -> list[str]:
    """The process to start for an entry point: the same function the console script calls."""
    entry, *args = argv
    module, function = ENTRY_POINTS[entry].split(":")
    code = f"import sys; from {module} import {function} as main; sys.argv[0] = {entry!r}; main()"
    return [sys.executable, "-c", code, *args]


def run_command(
    argv: tuple[str, ...] | list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run an entry point in a fresh process from `cwd` (one thread, the shared task data)."""
    full_env = {
        **os.environ,
        "ZOFT_DATA": str(DATA_DIR),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    return subprocess.run(
        command(argv), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def digest_files(root: Path, paths: tuple[str, ...]) -> dict[str, str]:
    """Content hashes of the files under each path (a file, or every file in a folder)."""
    hashes: dict[str, str] = {}
    for rel in paths:
        target = root / rel
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        for f in files:
            hashes[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return hashes


def check_fault(fault: Fault, work: Path) -> subprocess.CompletedProcess:
    """Prepare, run and judge one fault; returns the finished process for extra assertions."""
    if fault.setup is not None:
        fault.setup(work)
    before = digest_files(work, fault.intact)
    done = run_command(fault.argv, cwd=work, env=fault.env)
    output = done.stdout + done.stderr
    assert done.returncode == fault.exit_code, (
        f"{fault.name}: exit {done.returncode}, expected {fault.exit_code}\n{output[-4000:]}"
    )
    assert "Traceback (most recent call last)" not in output, f"{fault.name}: traceback\n{output}"
    for word in fault.words:
        assert word.lower() in output.lower(), f"{fault.name}: {word!r} not said\n{output[-4000:]}"
    assert digest_files(work, fault.intact) == before, f"{fault.name}: files changed"
    return done

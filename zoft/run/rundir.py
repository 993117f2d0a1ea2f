"""Run-directory writers: atomic result.json/config.yaml, append-only metrics.jsonl, a human log."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch

PACKAGES = ("torch", "transformers", "datasets", "hydra-core", "peft", "accelerate", "numpy")
RESULT_FILE = "result.json"


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


class MetricSink(Protocol):
    """Where metrics lines go besides metrics.jsonl (zoft.run.loggers: csv, wandb)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def truncate_after(self, step: int) -> None: ...

    def finish(self, result: dict[str, Any]) -> None: ...


class MetricsLog:
    """metrics.jsonl, one JSON object per logged step, flushed as it goes, plus the sinks of the
    configured logger."""

    def __init__(self, path: Path | None, sinks: Sequence[MetricSink] = ()) -> None:
        self.path = path  # None: write nothing (a data-parallel rank other than 0)
        self.sinks = list(sinks)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after `step` (a resumed run logs them again)."""
        if self.path is not None and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            atomic_write(self.path, "".join(line + "\n" for line in kept))
        for sink in self.sinks:
            sink.truncate_after(step)

    def finish(self, result: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.finish(result)


def attach_file_log(run_dir: Path) -> logging.Handler:
    """Mirror every log line of this run into <run_dir>/run.log."""
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


@functools.cache
def git_commit() -> str | None:
    """The commit of the zoft checkout (with -dirty for uncommitted changes), if it is one. Read
    once per process: the code a sweep runs is what it imported at start, whatever the checkout
    holds by the time a later cell begins."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Versions and device, for result.json."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return {"packages": versions, "git_commit": git_commit(), "device_name": device_name}

"""The data a run read, as a fingerprint recorded in result.json, and the check that a finished
run read the data the same command would read now before it is reused.

The config digest names the run directory and never changes with the data (every existing run
folder keeps its name); the fingerprint is a recorded check beside it. Local data is fingerprinted
by the files actually read: their path under the data root, size and sha256. Hashes are cached by
(path, size, mtime, inode) in the user's cache (`$ZOFT_CACHE_DIR`, else `$XDG_CACHE_HOME/zoft` or
`~/.cache/zoft`, file `data-hashes.json`), so checking a finished run re-hashes nothing that did not
change. Hub data has no local files: its repository, config and revision stand in. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoft.run.record import RunResult
from zoft.run.rundir import atomic_write, finished_result, read_run
from zoft.tasks import TASKS
from zoft.tasks.io import DataError, DataReads
from zoft.tasks.sampling import data_source, resolve_data_dir

log = logging.getLogger(__name__)

CACHE_FILE = "data-hashes.json"
# A file modified this recently is hashed but not cached: a second change within the file
# system's mtime resolution would leave size and mtime equal (git's "racy" entries).
_RACY_NS = 3_000_000_000
_SHOWN = 3  # changed files named in a message


def cache_dir() -> Path:
    """Where the hash cache lives: $ZOFT_CACHE_DIR, else the XDG cache folder."""
    if chosen := os.environ.get("ZOFT_CACHE_DIR"):
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "zoft"


class _HashCache:
    """sha256 of files keyed by absolute path, valid while (size, mtime_ns, inode) are unchanged;
    saved by merging into the file on disk (several processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = _read_cache(path)
        self.new: dict[str, list[Any]] = {}

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.absolute())
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self.new.get(key) or self.entries.get(key)
        if entry and entry[:3] == stamp:
            return entry[3]
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
            self.new[key] = [*stamp, digest]
        return digest

    def save(self) -> None:
        if not self.new:
            return
        merged = {**_read_cache(self.path), **self.new}
        try:
            lines = (f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(merged.items()))
            atomic_write(self.path, "{\n" + ",\n".join(lines) + "\n}\n")
        except OSError as err:  # a read-only home: hashing again next time is all it costs
            log.debug("could not write the data hash cache %s: %s", self.path, err)
            return
        self.entries, self.new = merged, {}


def _read_cache(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_CACHES: dict[Path, _HashCache] = {}


def _cache() -> _HashCache:
    path = cache_dir() / CACHE_FILE
    if path not in _CACHES:
        _CACHES[path] = _HashCache(path)
    return _CACHES[path]


def _relative(path: Path, root: Path | None) -> str:
    """A file's name in the fingerprint: its path under the data root (the same data copied
    elsewhere has the same fingerprint), else the path itself."""
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _digest(files: list[dict[str, Any]], absent: list[str], hub: list[dict[str, str]]) -> str:
    canonical = json.dumps({"files": files, "absent": absent, "hub": hub}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def data_fingerprint(reads: DataReads, task_cfg: DictConfig) -> dict[str, Any]:
    """result.json's `data_fingerprint` for what was read: the local files (path under the data
    root, size, sha256) and the ready-split folders looked for and missing, or the hub datasets."""
    root = resolve_data_dir(task_cfg.data_dir)
    cache = _cache()
    files = [
        {"path": _relative(p, root), "size": p.stat().st_size, "sha256": cache.sha256(p)}
        for p in reads.files
    ]
    cache.save()
    absent = [_relative(p, root) for p in reads.absent]
    fingerprint: dict[str, Any] = {"kind": "local" if root else "hub"}
    if root is not None:
        fingerprint["root"] = str(root.absolute())
    fingerprint.update(files=files, absent=absent, hub=list(reads.hub))
    fingerprint["digest"] = _digest(files, absent, list(reads.hub))
    return fingerprint


@dataclass(frozen=True)
class DataCheck:
    """Whether a finished run read the data the run would read now, and the words saying why."""

    same: bool
    note: str = ""


def check_data(record: RunResult, cfg: DictConfig) -> DataCheck:
    """Compare a finished run's recorded data with what `cfg` reads now. A run without a
    fingerprint (an earlier zoft version) is trusted only when its data source is unchanged."""
    task = TASKS.get(cfg.task.name)()
    try:
        root = resolve_data_dir(OmegaConf.select(cfg, "task.data_dir"))
    except DataError as err:
        return DataCheck(False, f"its data cannot be checked: {err}")
    source = data_source(task, root)
    recorded = record.data_fingerprint
    if not recorded:
        if _same_source(record.data_source, source):
            return DataCheck(
                True,
                f"it predates data fingerprints; trusted because its data source {source} is "
                "unchanged",
            )
        return DataCheck(
            False,
            f"it predates data fingerprints and its data source changed from "
            f"{record.data_source} to {source}",
        )
    if (recorded.get("kind") == "local") != (root is not None):
        return DataCheck(False, f"its data source changed from {record.data_source} to {source}")
    if root is None:
        return _check_hub(recorded, task)
    changes = _local_changes(recorded, root)
    if changes:
        shown = changes[:_SHOWN] + ([f"{len(changes) - _SHOWN} more"] if changes[_SHOWN:] else [])
        return DataCheck(False, f"its data changed under {root}: {'; '.join(shown)}")
    moved = not _same_source(recorded.get("root"), str(root))
    return DataCheck(
        True, f"same data files as recorded under {recorded.get('root')}" if moved else ""
    )


def _same_source(recorded: str | None, now: str) -> bool:
    """The same hub dataset, or the same local folder however it was spelled (relative paths
    are read from the current folder)."""
    if recorded is None or recorded.startswith("hub:") or now.startswith("hub:"):
        return recorded == now
    return Path(recorded).expanduser().resolve() == Path(now).expanduser().resolve()


def _local_changes(recorded: dict[str, Any], root: Path) -> list[str]:
    """What differs between the recorded files and those under `root` now."""
    cache = _cache()
    changes = []
    for entry in recorded.get("files", []):
        name = entry["path"]
        path = root / name if not Path(name).is_absolute() else Path(name)
        if not path.is_file():
            changes.append(f"{name} is gone")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            changes.append(f"{name} changed size ({entry.get('size')} -> {size} bytes)")
        elif (digest := cache.sha256(path)) != entry.get("sha256"):
            changes.append(
                f"{name} changed content (sha256 {str(entry.get('sha256'))[:12]} -> {digest[:12]})"
            )
    cache.save()
    for name in recorded.get("absent", []):
        if (root / name).exists():
            changes.append(f"{name} now exists (the run read other files without it)")
    return changes


def _check_hub(recorded: dict[str, Any], task: Any) -> DataCheck:
    now = (task.hub_path, task.hub_config, task.hub_revision)
    then = {(h.get("repo"), h.get("config"), h.get("revision")) for h in recorded.get("hub", [])}
    if then and then != {now}:
        was = ", ".join(f"{r}/{c}@{v}" for r, c, v in sorted(then, key=str))
        return DataCheck(False, f"its hub data changed from {was} to {now[0]}/{now[1]}@{now[2]}")
    return DataCheck(True)


@dataclass(frozen=True)
class Reuse:
    """What a run directory offers a run about to start: a finished run to reuse, or a finished
    run that is not reused because its data changed (`stale`), with the words saying why."""

    record: RunResult | None
    stale: RunResult | None = None
    note: str = ""


def reusable_result(out_dir: Path, cfg: DictConfig) -> Reuse:
    """The runner's skip and the sweeper's "done": a complete run of this very config (same
    digest; another config's is an error) that read the data this config reads now."""
    previous = finished_result(out_dir, cfg)
    if previous is None:
        return Reuse(None)
    check = check_data(previous, cfg)
    if check.same:
        return Reuse(previous, note=check.note)
    return Reuse(None, stale=previous, note=check.note)


def checkpoint_data_check(out_dir: Path, cfg: DictConfig) -> DataCheck:
    """Whether the interrupted attempt whose checkpoints are in out_dir read the data this
    config reads now (from its result.json's fingerprint). An attempt that recorded no
    fingerprint (stopped before its data was read, or killed before its record was written)
    is trusted."""
    attempt = read_run(out_dir)
    if attempt is None or attempt.complete or not attempt.data_fingerprint:
        return DataCheck(True)
    return check_data(attempt, cfg)

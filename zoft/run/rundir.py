"""Run identity and the run directory: the config digest, where a run writes, whether it is
finished, the file names, and atomic writes (never a half-written file). No torch import here: the
report side reads run directories through this module."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoft.config import effective_rounding
from zoft.errors import RunConfigError, ZoftError
from zoft.run.record import RunResult, read_record
from zoft.tasks import TASKS
from zoft.tasks.io import HUB
from zoft.tasks.lmbff import LMBFF_ENCODING_REVISION

RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "run.log"
WEIGHTS_FILE = "weights.safetensors"
# pure ZO runs: one line per step, {step, g (per query), lr, skipped}; zoft-replay rebuilds the
# weights of any step from it and the base model (zoft.run.trajectory)
TRAJECTORY_FILE = "trajectory.jsonl"
# one line per test example of the reported test evaluation: ids, candidate scores, prediction, gold
PREDICTIONS_FILE = "predictions.jsonl"
# held (fcntl.flock) by the one process writing the run directory; holds that process's pid and host
LOCK_FILE = "run.lock"

# Keys that do not change what a run computes, left out of the config digest.
_NON_SEMANTIC = (
    "output_dir",
    "results_dir",
    "log_every",
    "eval_batch_size",
    "device",
    "logger",
    "threads",
    "experiment",
    "optimizer.probes",  # paired or sequential probes: the same losses up to float rounding
    "optimizer.max_memory_ratio",  # only chooses between paired and sequential probes
    "model.max_memory",  # where device_map=auto places the layers
    "checkpoint_every",
    "checkpoint",  # a full or a trajectory checkpoint resumes to the same bits
    "resume",
    "save_weights",
    "fsdp",  # FSDP2 or plain data parallelism: the same gradients up to float rounding
    "guard",  # what a bad step does; skipped batches are counted in result.json
)


# Keys added after the digest was first pinned, each with the value that computes exactly what runs
# did before the key existed: at that value the key is left out of the digest, so finished runs
# stay finished; any other value enters it. Add a key here when it is added to a schema.
LEGACY_VALUES: dict[str, Any] = {
    "icl_demo_sets": "shared",  # one demonstration set from the run's train subset (issue 17)
    "optimizer.momentum_init": "zero",  # LOZO-M started from N = 0 (issue 17)
    "select_by": "metric",  # best dev step by the task's metric
    "drop_last": True,  # the short last batch of an epoch was dropped
    "optimizer.zo_amp": None,  # LMAO's ZO phase without autocast
    "task.generation_stop": "first_newline",  # generation stopped at the first newline
    "optimizer.rng": "torch",  # directions drawn by torch.randn (issue 19 added philox)
    # ZO updates rounded to nearest in bf16/fp16 (issue 21). The default, auto, is digested as the
    # rounding it does (config_digest): nearest in fp32, so fp32 runs keep their digests
    "optimizer.rounding": "nearest",
    "model.arch": None,  # model=tiny's architecture key (issue 21); other models have none
}
# Keys that only matter when another key is set (truthy): left out of the digest otherwise
_ONLY_WITH = {"icl_demo_sets": "icl_demos"}


def _pop(data: dict[str, Any], key: str, only_if: Any = ...) -> None:
    """Remove a dotted key from nested dicts (only when it holds `only_if`, if given)."""
    *parents, leaf = key.split(".")
    node = data
    for parent in parents:
        node = node.get(parent) or {}
    if leaf in node and (only_if is ... or node[leaf] == only_if):
        node.pop(leaf)


def config_digest(cfg: DictConfig) -> str:
    """A hash of what the run computes: the config without paths and logging keys, with the
    data directory reduced to where the data comes from (local files or the hub), new keys at
    their legacy values left out, and the task's revision when its prompts or data changed."""
    data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    optimizer = data.get("optimizer") or {}
    if "rounding" in optimizer:  # auto is digested as the rounding it does
        optimizer["rounding"] = effective_rounding(optimizer["rounding"], data.get("dtype", "fp32"))
    for key in _NON_SEMANTIC:
        _pop(data, key)
    for key, legacy in LEGACY_VALUES.items():
        _pop(data, key, only_if=legacy)
    for key, needed in _ONLY_WITH.items():
        if not data.get(needed):
            _pop(data, key)
    local = data["task"].pop("data_dir", None) or os.environ.get("ZOFT_DATA")
    data["task"]["data_origin"] = "local" if local and local != HUB else "hub"
    if cfg.task.name in TASKS and (revision := TASKS.get(cfg.task.name).revision) != 1:
        data["task"]["revision"] = revision
    if data.get("model", {}).get("kind") == "masked_lm" and LMBFF_ENCODING_REVISION != 1:
        data["model"]["lmbff_encoding"] = LMBFF_ENCODING_REVISION  # how masked prompts are encoded
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def resolve_output_dir(cfg: DictConfig) -> Path:
    """cfg.output_dir, else results_dir/task/model/<optimizer, or the evaluation-only mode>/
    seed-data_seed-<config digest>."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    method = cfg.optimizer.name if cfg.steps else run_mode(cfg)
    leaf = f"seed{cfg.seed}-data{cfg.data_seed}-{config_digest(cfg)}"
    return Path(cfg.results_dir) / cfg.task.name / cfg.model.name / method / leaf


def run_mode(cfg: DictConfig) -> str:
    """fine-tune, or one of the evaluation-only modes (zero-shot, icl)."""
    if cfg.steps:
        return "fine-tune"
    return "icl" if cfg.icl_demos else "zero-shot"


def umask() -> int:
    """The process's umask, read without changing it (Linux reports it in /proc; elsewhere it is
    set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the umask (0644 under the usual 022)."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode mkdir() gives a new folder: 0o777 less the umask (0755 under 022)."""
    return 0o777 & ~umask()


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename: never a half file. The file
    gets the mode a plain write would (mkstemp's is 0600, unreadable by collaborators)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDirError(ZoftError):
    """A run folder zoft cannot write: named with the path, the system's reason and the fix."""


def ensure_writable(out_dir: Path) -> None:
    """Refuse, before anything is loaded, a run folder (or its checkpoints/) that cannot be
    created or written: by trying, since permission bits do not tell (root, read-only mounts,
    immutable folders, quotas)."""
    targets = [out_dir, *(p for p in [out_dir / "checkpoints"] if p.is_dir())]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for target in targets:
            _probe(target)
    except OSError as err:
        raise _unwritable(out_dir, err) from None


def check_writable(path: Path) -> None:
    """Refuse a folder that could not be created or written, creating nothing: the nearest
    existing folder at or above it is tried (a sweep checks its cells' folders this way)."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a directory", str(existing))
        _probe(existing)
    except OSError as err:
        raise _unwritable(Path(path), err) from None


def _probe(folder: Path) -> None:
    """Create and remove a file in `folder`; the OSError names the folder, not the probe."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".zoft-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(folder)) from None


def _unwritable(out_dir: Path, err: OSError) -> RunDirError:
    where = err.filename or out_dir
    return RunDirError(
        f"cannot write the run folder {out_dir} ({err.strerror or err}: {where}); nothing was "
        "run. Choose a writable results_dir=... (or output_dir=...), or make that folder writable"
    )


def write_failure(err: BaseException, out_dir: Path) -> str | None:
    """What to tell the user when `err` is a failure to write (or read) a file of the run folder
    (a folder made read-only, a full disk or quota) -- else None."""
    if not isinstance(err, OSError):
        return None
    name = err.filename or ""
    try:
        inside = Path(name).resolve().is_relative_to(out_dir.resolve())
    except (OSError, ValueError):
        inside = False
    if not inside:
        return None
    return (
        f"could not write {name} ({err.strerror or err}): the run folder {out_dir} is no longer "
        "writable (permissions, a full disk or quota?); make it writable and re-run the same "
        "command (it resumes from its last checkpoint, if any)"
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_run(run_dir: Path) -> RunResult | None:
    """The run's result.json as a record; None when there is none or it cannot be read."""
    return read_record(Path(run_dir) / RESULT_FILE).record


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json as a dict (read through its record, so any version reads alike)."""
    record = read_run(run_dir)
    return None if record is None else record.to_json()


def finished_result(out_dir: Path, cfg: DictConfig) -> RunResult | None:
    """The complete result already in out_dir if it is this very run (same config digest); None
    when there is none or it did not finish. The runner's skip and the sweeper's "done" are this
    one check. A complete run of another config in out_dir is an error: it is never overwritten."""
    previous = read_run(out_dir)
    if previous is None or not previous.complete:
        return None
    if previous.config_digest != config_digest(cfg):
        raise RunConfigError(
            f"{out_dir} already holds a complete run of a different config (digest "
            f"{previous.config_digest} vs {config_digest(cfg)}); choose another output_dir "
            "or move that run away"
        )
    return previous

"""Checkpoints a run can be resumed from bit for bit (DESIGN §9).

A checkpoint is a directory `checkpoints/step-<k>/` in the run directory holding
- `weights.safetensors`: the trainable parameters after step k;
- `best.safetensors`: the best-dev copy of those parameters, when training went on past it;
- `state.pt`: everything else, plain values and tensors only (loaded with weights_only=True):
  the optimizer's state (AdamW moments, schedule, ZO counters, LOZO-M momentum factors), the
  training counters, the best-dev record, the run's earlier results and the RNG states;
- `meta.json`, written last: the step, the config digest and the kind, so a directory without it
  is incomplete and never read.
A trajectory checkpoint (checkpoint=trajectory, a pure ZO run's default) holds no weights and no
per-coordinate optimizer state: `trajectory.jsonl` (the run's steps so far) and a `state.pt` with
the small state only, a few KB; resuming replays the steps from the base model (Trainer._restore).
It is written under a temporary name and renamed into place, then `checkpoints/latest` names
it, and only then are older checkpoints removed: a kill at any moment leaves a readable one.
ZO directions are keyed by (seed, step, query, name) and the data order by (seed, epoch), so
no generator state of theirs needs saving: the step is enough.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from zoft.errors import ZoftError
from zoft.run import distributed
from zoft.run.rundir import TRAJECTORY_FILE, atomic_write, dir_mode, file_mode

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_LATEST = "latest"
_META = "meta.json"


class CheckpointError(ZoftError):
    """A checkpoint that cannot be used to resume this run."""


@dataclass
class Checkpoint:
    """A checkpoint found on disk: its state is read, its weights are copied in when restored.
    A sharded (FSDP) checkpoint holds one set of files per rank, suffixed -rank<r>."""

    step: int
    state: dict[str, Any]
    path: Path
    suffix: str = ""
    kind: str = "full"  # or "trajectory": no weights, the steps to replay instead

    @property
    def weights_file(self) -> Path:
        return self.path / f"weights{self.suffix}.safetensors"

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        best = self.path / f"best{self.suffix}.safetensors"
        if not best.is_file():
            return None
        try:
            return load_file(str(best))
        except Exception as err:  # safetensors raises its own error types for damaged files
            raise damaged(best, err) from None


def damaged(path: Path, err: BaseException) -> CheckpointError:
    """The error for a checkpoint file that cannot be read: which file, why, and the way out."""
    detail = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:200]  # its first sentence
    return CheckpointError(
        f"the checkpoint file {path} is damaged or truncated ({type(err).__name__}: "
        f"{detail}); resume=false starts the run over (the damaged checkpoints are kept "
        f"under {CHECKPOINT_DIR}.<time>/)"
    )


def capture_rng() -> dict[str, Any]:
    """Every global generator a training step may draw from (dropout, LoRA init, numpy, random)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _alone() -> None:
    """Nothing to wait for: one process writes the whole checkpoint."""


def _cpu_copies(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}


class Checkpointer:
    """Writes and finds the checkpoints of one run directory."""

    def __init__(self, run_dir: Path, config_digest: str) -> None:
        self.root = run_dir / CHECKPOINT_DIR
        self.config_digest = config_digest

    def save(
        self,
        step: int,
        weights: dict[str, torch.Tensor] | None,
        best_weights: dict[str, torch.Tensor] | None,
        state: dict[str, Any],
        trajectory: str | None = None,
    ) -> Path:
        """Write the checkpoint of `step` atomically and make it the latest. Under FSDP every
        rank calls it with its own shards and writes its own files; rank 0 completes it. With
        `trajectory` (the text of trajectory.jsonl) and no weights it is a trajectory checkpoint."""
        sharded = distributed.shards_parameters()
        suffix = f"-rank{distributed.rank()}" if sharded else ""
        sync = distributed.barrier if sharded else _alone
        name = f"step-{step:09d}"
        staging = self._staging(name, sharded)
        try:
            if weights is not None:
                save_file(_cpu_copies(weights), str(staging / f"weights{suffix}.safetensors"))
            if trajectory is not None:
                atomic_write(staging / TRAJECTORY_FILE, trajectory)
            if best_weights is not None:
                save_file(_cpu_copies(best_weights), str(staging / f"best{suffix}.safetensors"))
            with (staging / f"state{suffix}.pt").open("wb") as f:
                torch.save(state, f)
            sync()  # every rank's files are in place
            target = self.root / name
            if distributed.is_main():
                meta = {
                    "step": step,
                    "config_digest": self.config_digest,
                    "world_size": distributed.world_size() if sharded else 1,
                    "kind": "full" if weights is not None else "trajectory",
                    "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                atomic_write(staging / _META, json.dumps(meta, indent=2) + "\n")
                for written in staging.iterdir():  # safetensors writes 0600 whatever the umask
                    written.chmod(file_mode())
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if distributed.is_main():
            atomic_write(self.root / _LATEST, name + "\n")
            for old in self.root.iterdir():
                if old.is_dir() and old.name != name and old.name.startswith(("step-", ".step-")):
                    shutil.rmtree(old, ignore_errors=True)
        sync()  # no rank goes on before the checkpoint is complete
        return target

    def _staging(self, name: str, sharded: bool) -> Path:
        """A fresh directory to write into: private to this process, or, when every rank writes
        its shards, one name all ranks agree on (rank 0 creates it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not sharded:
            staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}-"))
            staging.chmod(dir_mode())  # mkdtemp's 0700 would hide the checkpoint from the group
            return staging
        staging = self.root / f".{name}-shards"
        if distributed.is_main():
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
        distributed.barrier()
        return staging

    def latest(self) -> Path | None:
        """The newest complete checkpoint directory, if any."""
        if not self.root.is_dir():
            return None
        pointer = self.root / _LATEST
        if pointer.is_file():
            named = self.root / pointer.read_text().strip()
            if (named / _META).is_file():
                return named
        complete = sorted(p for p in self.root.glob("step-*") if (p / _META).is_file())
        return complete[-1] if complete else None

    def load(self) -> Checkpoint | None:
        """The latest checkpoint, refused when it belongs to another config."""
        path = self.latest()
        if path is None:
            return None
        try:
            meta = json.loads((path / _META).read_text())
            meta["step"], meta["config_digest"]  # noqa: B018 (both must be there)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise damaged(path / _META, err) from None
        if meta["config_digest"] != self.config_digest:
            raise CheckpointError(
                f"{path} was written by a different config (digest {meta['config_digest']} vs "
                f"{self.config_digest}); resume with the config that wrote it, or set "
                "resume=false to start over (the old checkpoint is kept under a new name)"
            )
        world = meta.get("world_size", 1)
        suffix = f"-rank{distributed.rank()}" if world > 1 else ""
        if world > 1 and world != distributed.world_size():
            raise CheckpointError(
                f"{path} holds parameter shards of {world} processes, but this run has "
                f"{distributed.world_size()}; resume with torchrun --nproc-per-node={world}, or "
                "set resume=false to start over"
            )
        state_file = path / f"state{suffix}.pt"
        try:
            with state_file.open("rb") as f:
                state = torch.load(f, weights_only=True)
        except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
            raise damaged(state_file, err) from None
        if not isinstance(state, dict):
            raise damaged(state_file, TypeError(f"holds a {type(state).__name__}, not a state"))
        kind = meta.get("kind", "full")
        return Checkpoint(step=meta["step"], state=state, path=path, suffix=suffix, kind=kind)

    def set_aside(self) -> Path | None:
        """Move existing checkpoints out of the way (a fresh start keeps them, renamed)."""
        if not self.root.is_dir():
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = self.root.with_name(f"{CHECKPOINT_DIR}.{stamp}")
        self.root.rename(target)
        return target

    def remove(self) -> None:
        """Drop the checkpoints of a finished run (its result and weights are written)."""
        shutil.rmtree(self.root, ignore_errors=True)


@torch.no_grad()
def load_weights(params: dict[str, torch.nn.Parameter], path: Path) -> None:
    """Copy saved tensors into the parameters one at a time (no second copy of the model in
    memory), refusing any mismatch of names or shapes."""
    try:
        opened = safe_open(str(path), framework="pt")
    except Exception as err:  # a missing, truncated or garbled safetensors file
        raise damaged(path, err) from None
    with opened as f:
        names = set(f.keys())
        missing, unexpected = set(params) - names, names - set(params)
        if missing or unexpected:
            raise CheckpointError(
                f"the parameters in {path} do not match the model's (missing "
                f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}); set resume=false"
            )
        for name, p in params.items():
            saved, target = f.get_tensor(name), distributed.local(p)
            if saved.shape != target.shape or saved.dtype != target.dtype:
                raise CheckpointError(
                    f"parameter {name} is {saved.dtype} {tuple(saved.shape)} in {path} but "
                    f"{target.dtype} {tuple(target.shape)} in the model; set resume=false"
                )
            target.copy_(saved)

"""What a run shows on the console: one compact header (the full resolved config goes to run.log
and config.yaml only) and progress bars that log lines are written above (zoft.cli wraps each run
in tqdm.contrib.logging.logging_redirect_tqdm). A sweep of 99 cells prints 99 headers, not 99
resolved configs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from zoft.config import enum_value

T = TypeVar("T")

# the optimizer keys worth a place in the header, where the method has them (the rest is in
# config.yaml); a display choice, not a list of keys: a key missing here is only not shown
HEADER_OPTIMIZER_KEYS = ("lr", "zo_lr", "eps", "rank", "interval", "queries", "beta")


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(enum_value(value))


def run_header(cfg: DictConfig, out_dir: Path, method: str, device: str) -> str:
    """One line naming the run and its key settings, one naming where it writes."""
    parts = []
    if cfg.steps:
        opt = cfg.optimizer
        parts += [f"{k} {_short(opt[k])}" for k in HEADER_OPTIMIZER_KEYS if k in opt]
        if enum_value(opt.get("adapter", "none")) == "lora":
            parts.append(f"lora r={opt.lora.r}")
        parts += [f"steps {cfg.steps}", f"batch {cfg.batch_size}"]
    if cfg.icl_demos:
        parts.append(f"icl_demos {cfg.icl_demos}")
    protocol = enum_value(cfg.task.protocol)
    sampling = f"k={cfg.task.k}" if protocol == "kshot" else f"n={cfg.task.num_train}"
    parts += [f"seed {cfg.seed}", f"data_seed {cfg.data_seed}", f"{protocol} {sampling}"]
    parts += [f"{enum_value(cfg.dtype)} on {device}"]
    if cfg.threads:
        parts.append(f"{cfg.threads} threads")
    name = f"{cfg.task.name} / {cfg.model.name} / {method}"
    return f"{name}: {', '.join(parts)}\n  -> {out_dir} (full config: config.yaml, run.log)"


def to_file_only(handler: logging.Handler | None, logger: logging.Logger, text: str) -> None:
    """Log `text` into run.log (`handler`) and nowhere else: the console gets the header."""
    if handler is not None:
        handler.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, (), None))


def _bars_off() -> bool | None:
    """tqdm's `disable`: None hides a bar without a terminal (logs, sweeps, SLURM); ranks other
    than torchrun's rank 0 show none."""
    return True if os.environ.get("RANK", "0") != "0" else None


def progress(batches: Sequence[Sequence[T]], desc: str = "eval") -> Iterator[Sequence[T]]:
    """`batches` in order, with a bar counting their examples (on a terminal only; it disappears
    when done, so training's bar stays the one left on screen)."""
    from tqdm.auto import tqdm

    total = sum(len(b) for b in batches)
    with tqdm(
        total=total, desc=desc, unit="ex", leave=False, disable=_bars_off(), dynamic_ncols=True
    ) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))

"""The `grid` sweeper (`hydra/sweeper=grid`), shipped as the Hydra plugin `hydra_plugins.zoft_grid`.

An experiment's cells are the union of Cartesian blocks (see zoft.sweep.grid). Cells whose run
directory already holds a complete result of the same data are skipped before launching, so
re-running a table only launches what is missing (on SLURM: no job for a finished cell); so are
cells whose run directory another process is writing (listed at the end). `dry_run=true` lists the
cells and stops. The package also holds zoft's submitit launchers (`launchers.py`:
`hydra/launcher=slurm`, `hydra/launcher=slurm_local`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.zoft_grid.launchers import INTERRUPTED
from omegaconf import DictConfig, OmegaConf, open_dict

from zoft.sweep.grid import Cell, expand_cells, record_failed, record_locked

log = logging.getLogger("zoft.sweep.grid")


class GridSweeper(Sweeper):
    """Launches the cells of an experiment grid that are not finished yet."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        grid: list[dict[str, Any]] | None = None,
        dry_run: bool = False,
        max_batch_size: int | None = None,
    ) -> None:
        self.params = dict(params or {})
        self.grid = [dict(block) for block in grid or []]
        self.dry_run = dry_run
        self.max_batch_size = max_batch_size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins
        from hydra_plugins.zoft_grid.launchers import LAUNCHERS

        for launcher in LAUNCHERS:  # an editable install's plugin scan does not find them
            Plugins.instance().register(launcher)
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _cell_status(self, cell: Cell) -> tuple[str, Path, str]:
        """'done' when the cell's run directory holds a complete run of this very config that
        read the data it would read now (the runner's own skip check); 'locked' when another
        process is writing it; else 'todo' (a complete run of another config too: its launch
        reports the clash). Third: the module that runs the cell (method_module)."""
        from zoft.errors import RunConfigError
        from zoft.run.fingerprint import reusable_result
        from zoft.run.lock import lock_holder
        from zoft.run.rundir import resolve_output_dir

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(cell))
        with open_dict(cfg):
            del cfg["hydra"]
        out_dir = resolve_output_dir(cfg)
        module = method_module(cfg) if self.dry_run else ""  # torch and the methods: listed only
        try:
            reuse = reusable_result(out_dir, cfg)
        except RunConfigError:
            reuse = None
        if reuse is not None and reuse.record is not None:
            if reuse.note:
                log.info("%s: complete (%s)", out_dir, reuse.note)
            return "done", out_dir, module
        holder = lock_holder(out_dir)
        if holder is not None:
            if not self.dry_run:
                record_locked(cell, f"{out_dir} is locked by {holder}")
            return "locked", out_dir, module
        if reuse is not None and reuse.stale is not None:
            log.info("%s: to run again, %s", out_dir, reuse.note)
        return "todo", out_dir, module

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        cells = expand_cells(self.params, self.grid, arguments)
        statuses = [self._cell_status(cell) for cell in cells]
        todo = [
            cell for cell, (status, *_) in zip(cells, statuses, strict=True) if status == "todo"
        ]
        locked = sum(status == "locked" for status, *_ in statuses)
        name = OmegaConf.select(self.config, "experiment.name") or "sweep"
        summary = (
            f"{name}: {len(cells)} cells, {len(cells) - len(todo) - locked} complete, "
            f"{len(todo)} to run"
        )
        if locked:
            summary += f", {locked} locked by another process (not run)"
        if self.dry_run:
            for index, (cell, (status, out_dir, module)) in enumerate(
                zip(cells, statuses, strict=True)
            ):
                print(f"{index:5d} {status}  {' '.join(cell)}  [{module}]  -> {out_dir}")
            print(summary, flush=True)
            return []
        log.info("%s", summary)
        self._check_writable([out_dir for status, out_dir, _ in statuses if status == "todo"])
        size = self.max_batch_size or max(len(todo), 1)
        returns: list[Sequence[JobReturn]] = []
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            launched = self.launcher.launch(batch, initial_job_idx=start)
            for cell, job in zip(batch, launched, strict=True):
                if job.status == JobStatus.COMPLETED and job.return_value == "locked":
                    record_locked(cell, "locked by another process once launched")
                elif _failed(job):
                    record_failed(cell)
                    if job.status == JobStatus.COMPLETED and job.return_value == INTERRUPTED:
                        log.warning(
                            "cell %s: interrupted with a checkpoint; launching the sweep again "
                            "resumes it",
                            " ".join(cell),
                        )
            returns.append(launched)
        return returns

    def _check_writable(self, out_dirs: list[Path]) -> None:
        """Refuse the sweep before any cell runs when a cell's folder, or the sweep's own folder,
        cannot be written (creating none of them)."""
        from zoft.errors import ZoftError
        from zoft.run.rundir import check_writable

        sweep_dir = OmegaConf.select(self.config, "hydra.sweep.dir")
        folders = [*sorted(set(out_dirs)), *([Path(str(sweep_dir))] if sweep_dir else [])]
        for folder in folders:
            try:
                check_writable(folder)
            except ZoftError as err:
                raise SweepRefused(f"zoft-run: {err}") from None


class SweepRefused(CompactHydraException):
    """A sweep that cannot run at all; Hydra prints the message alone (no traceback)."""


def _failed(job: JobReturn) -> bool:
    """A job that raised, whose run recorded a failure (zoft-run returns the run's status), or
    that a signal stopped in a launcher that runs each cell as its own job."""
    if job.status == JobStatus.FAILED:
        return True
    return job.return_value in ("failed", INTERRUPTED)


def method_module(cfg: Any) -> str:
    """The module whose registered class runs the cell's method (zoft.optim.<module>), or the
    runner's evaluation alone for a cell without training steps (zero-shot, ICL)."""
    if not cfg.steps:
        return "zoft.run.runner: evaluation only"
    from zoft.optim import OPTIMIZERS

    return OPTIMIZERS.get(cfg.optimizer.name).__module__

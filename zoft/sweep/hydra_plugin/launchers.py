"""zoft's submitit launchers (`hydra/launcher=slurm` and `hydra/launcher=slurm_local`):
hydra-submitit-launcher's, plus what a zoft run needs to survive a cluster.

- Preemption and time limits: submitit asks a job to stop with its preemption signal
  (`SIGUSR2` by default; SLURM sends it `signal_delay_s` seconds before the time limit, and the
  local executor as well). Left to itself, submitit requeues the job from inside the signal
  handler, in the middle of a training step, so everything since the last checkpoint is lost.
  These launchers answer that signal as zoft answers SIGTERM (finish the step, write a
  checkpoint, stop) and only then let submitit requeue the job, which resumes from that
  checkpoint.
- A job that ends without a result (killed, out of memory, requeued too often) is a failed cell
  in the sweep's report, not a traceback that loses the report of every other cell.
- Mistakes a cluster would only reveal later are refused before anything is submitted.

Imported by Hydra's plugin scan, so it must import without hydra-submitit-launcher installed
(then it defines no launcher).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from hydra.core.utils import JobReturn, JobStatus

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _submitit
except ImportError:  # the slurm extra is not installed: no submitit launchers
    _submitit = None

log = logging.getLogger("zoft.sweep.launcher")

# a job's return value when its run stopped on a signal with a checkpoint and was not requeued
INTERRUPTED = "interrupted"
LAUNCHERS: tuple[type, ...] = ()


def preempt_signal() -> signal.Signals:
    """The signal submitit stops a job with (SUBMITIT_PREEMPT_SIGNAL, default USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        _refuse(
            f"SUBMITIT_PREEMPT_SIGNAL={name} is not a signal name; unset it (submitit uses USR2)"
        )


def _refuse(message: str) -> NoReturn:
    """Stop the sweep before anything is submitted, with the message and no traceback."""
    print(f"zoft-run: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def check_before_submitting(executor: str) -> None:
    """What would only go wrong on the cluster, hours later, refused now."""
    if preempt_signal() == signal.SIGUSR1:
        _refuse(
            "SUBMITIT_PREEMPT_SIGNAL=USR1 is zoft's 'checkpoint and go on' signal, so a time limit "
            "would not requeue the job; unset SUBMITIT_PREEMPT_SIGNAL (submitit then uses USR2)"
        )
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if executor == "slurm" and missing:
        _refuse(
            f"hydra/launcher=slurm submits with sbatch and srun; {' and '.join(missing)} not on "
            "PATH here: launch the sweep from the cluster's login node, or run the same jobs on "
            "this machine with hydra/launcher=slurm_local"
        )


def _interrupted(overrides: Sequence[str]) -> JobReturn:
    return JobReturn(
        overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=INTERRUPTED
    )


class _PreemptAsStop:
    """While installed, submitit's preemption signal stops the run as SIGTERM does (after the
    step, with a checkpoint); `requeue` then hands the job back to submitit's own handler."""

    def __init__(self) -> None:
        self.signum = preempt_signal()
        self.submitit_handler: Any = None
        self.received = False

    def __enter__(self) -> _PreemptAsStop:
        self.submitit_handler = signal.signal(self.signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(self.signum, self.submitit_handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            log.warning(
                "%s from submitit (time limit or preemption): stopping as on SIGTERM, after this "
                "step with a checkpoint; the job is then requeued and resumes from it",
                signal.Signals(signum).name,
            )
        self.received = True
        stop = signal.getsignal(signal.SIGTERM)  # the run's handler while a run is going on
        if callable(stop):
            stop(signal.SIGTERM, frame)

    def requeue(self) -> None:
        """Submitit's checkpoint-and-requeue: exits the process when the job is requeued."""
        handler: Callable[[int, FrameType | None], None] | Any = self.submitit_handler
        if not callable(handler):
            log.warning("not requeued: no submitit handler for %s here", self.signum.name)
            return
        try:
            handler(self.signum, None)
        except Exception as err:  # submitit's "timed out too many times", a failed scontrol
            log.error(
                "not requeued (%s); the run keeps its checkpoint: launching the sweep again "
                "resumes it (raise hydra.launcher.max_num_timeout to requeue more often)",
                err,
            )


if _submitit is not None:

    class _ZoftSubmitit(_submitit.BaseSubmititLauncher):
        """Runs each cell as a submitit job that a preemption stops cleanly and requeues."""

        def __call__(
            self,
            sweep_overrides: list[str],
            job_dir_key: str,
            job_num: int,
            job_id: str,
            singleton_state: dict[type, Any],
        ) -> JobReturn:
            """The job itself (in the job's process)."""
            from hydra.core.utils import configure_log

            if not logging.getLogger().handlers and self.config is not None:
                # the job's log (<job id>_0_log.err) gets zoft's lines, as a terminal would
                configure_log(self.config.hydra.hydra_logging)
                logging.getLogger("submitit").propagate = False  # it has its own handler
            with _PreemptAsStop() as preempt:
                try:
                    job = super().__call__(
                        sweep_overrides, job_dir_key, job_num, job_id, singleton_state
                    )
                except BaseException as err:
                    if isinstance(err, Exception):
                        raise
                    # SystemExit & co: the run stopped on a signal, its checkpoint written
                    if preempt.received:
                        preempt.requeue()  # exits on success
                    return _interrupted(sweep_overrides)
                stopped = job.status == JobStatus.COMPLETED and job.return_value == INTERRUPTED
                if preempt.received and stopped:
                    preempt.requeue()
                return job

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            """hydra-submitit-launcher's launch, with the checks first, no sweep folder made
            (zoft's runs write their own directories), and a job that ends without a result
            reported as a failed cell."""
            import submitit
            from hydra.core.singleton import Singleton
            from hydra.core.utils import filter_overrides
            from omegaconf import OmegaConf

            check_before_submitting(self._EXECUTOR)
            assert self.config is not None and job_overrides
            init_keys = {"submitit_folder", "max_num_timeout"}
            init = {"folder": self.params["submitit_folder"]}
            if "max_num_timeout" in self.params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            shared = set(OmegaConf.structured(_submitit.BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    key if key in shared else f"{self._EXECUTOR}_{key}": value
                    for key, value in self.params.items()
                    if key not in init_keys
                }
            )
            log.info(
                "submitit '%s' jobs; their logs: %s",
                self._EXECUTOR,
                Path(str(self.params["submitit_folder"])).parent,
            )
            arguments = []
            for offset, overrides in enumerate(job_overrides):
                index = initial_job_idx + offset
                log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
                arguments.append(
                    (
                        list(overrides),
                        "hydra.sweep.dir",
                        index,
                        f"job_id_for_{index}",
                        Singleton.get_state(),
                    )
                )
            jobs = executor.map_array(self, *zip(*arguments, strict=True))
            returns = [
                _result(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)
            ]
            _remove_placeholder(Path(str(self.params["submitit_folder"])))
            return returns

    def _result(job: Any, overrides: Sequence[str]) -> JobReturn:
        """The job's return, or a failed one naming its log when it ended without a result."""
        from submitit.core.utils import UncompletedJobError

        try:
            return job.results()[0]
        except Exception as err:
            if isinstance(err, UncompletedJobError):
                why = "its process died: killed, out of memory or its node lost"
            else:  # the job raised: submitit's message ends with the job's exception
                lines = [line for line in str(err).strip().splitlines() if line.strip()]
                why = lines[-1] if lines else type(err).__name__
            log.error(
                "cell %s: job %s ended without a result (%s); its log: %s",
                " ".join(overrides),
                job.job_id,
                why,
                job.paths.stderr,
            )
            return JobReturn(
                overrides=list(overrides),
                status=JobStatus.FAILED,
                _return_value=RuntimeError(f"job {job.job_id} ended without a result: {why}"),
            )

    def _remove_placeholder(folder: Path) -> None:
        """submitit also makes the job folder's pattern itself (`.submitit/%j`), left empty."""
        if "%" in folder.name and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    class ZoftLocalLauncher(_ZoftSubmitit, _submitit.LocalLauncher):
        """`hydra/launcher=slurm_local`: the cells as submitit jobs on this machine."""

    class ZoftSlurmLauncher(_ZoftSubmitit, _submitit.SlurmLauncher):
        """`hydra/launcher=slurm`: one SLURM job per cell."""

    LAUNCHERS = (ZoftLocalLauncher, ZoftSlurmLauncher)

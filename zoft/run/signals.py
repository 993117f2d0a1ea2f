"""Signals a run answers with a checkpoint: SIGTERM / SIGINT stop after the current step,
SIGUSR1 checkpoints and goes on (a cluster's "time is nearly up" warning, e.g. SLURM's
`--signal=USR1@120`). A second SIGINT interrupts at once, as Ctrl-C usually does."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from zoft.errors import ZoftError

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHECKPOINT_SIGNALS = (signal.SIGUSR1,)


class Interrupted(ZoftError):
    """Training stopped on a signal after writing a checkpoint; re-running resumes it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class SignalFlags:
    """What the signals received so far ask for. Inside the training loop (`deferred`) a stop
    waits for the end of the step, which the loop checkpoints; anywhere else (loading, evaluation)
    it stops the run at once: there is nothing to checkpoint yet, or nothing left to."""

    def __init__(self) -> None:
        self.stop: int | None = None  # the signal number asking to stop
        self.checkpoint = False  # a checkpoint was asked for (SIGUSR1)
        self.deferring = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals wait for the current step to end while the block runs."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in CHECKPOINT_SIGNALS:
            if self.deferring:
                self.checkpoint = True
                log.warning("%s: a checkpoint will be written after this step", _name(signum))
            return
        if not self.deferring:
            raise Interrupted(
                f"stopped by {_name(signum)} outside training (nothing to checkpoint); re-run the "
                "same command to run it again",
                signum,
            )
        if self.stop == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = signum
        log.warning(
            "%s: stopping after this step with a checkpoint (re-run the same command to resume)",
            _name(signum),
        )

    def take_checkpoint_request(self) -> bool:
        asked, self.checkpoint = self.checkpoint, False
        return asked


def _name(signum: int) -> str:
    return signal.Signals(signum).name


@contextmanager
def signal_flags() -> Iterator[SignalFlags]:
    """Install the handlers for the duration of a run (only the main thread may; elsewhere the
    flags simply stay unset)."""
    flags = SignalFlags()
    if threading.current_thread() is not threading.main_thread():
        yield flags
        return
    previous = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, *CHECKPOINT_SIGNALS)}
    for s in previous:
        signal.signal(s, flags._handle)
    try:
        yield flags
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

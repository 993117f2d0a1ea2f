"""Signals a run answers with a checkpoint: SIGTERM / SIGINT stop after the current step,
SIGUSR1 checkpoints and goes on (a cluster's "time is nearly up" warning, e.g. SLURM's
`--signal=USR1@120`). A second SIGINT interrupts at once, as Ctrl-C usually does.

`Interrupted` is a KeyboardInterrupt (so a BaseException): a stop must end the run (and the sweep)
wherever it lands, and library code that retries or rewraps on `except Exception` (the hub
loaders do), or that re-raises only KeyboardInterrupt from a bare `except:` (tqdm's logging
handler does), must not swallow it."""

from __future__ import annotations

import enum
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHECKPOINT_SIGNALS = (signal.SIGUSR1,)


class Interrupted(KeyboardInterrupt):  # noqa: N818 (the name says what happened)
    """The run stopped on a signal; its message says what was kept and how to go on. `at_once`:
    a second Ctrl-C stopped it without waiting for the step (or checkpoint) in progress."""

    def __init__(self, message: str, signum: int, at_once: bool = False) -> None:
        super().__init__(message)
        self.signum = signum
        self.at_once = at_once

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class Mode(enum.Enum):
    """What a stop signal does in the code being run."""

    AT_ONCE = "at once"  # loading, setup, evaluation: stop now
    DEFERRED = "deferred"  # the training loop: stop after the step, with a checkpoint
    SHIELDED = "shielded"  # writing the run's records or a final checkpoint: never cut short


class SignalFlags:
    """What the signals received so far ask for. Inside the training loop (`deferred`) a stop
    waits for the end of the step, which the loop checkpoints; while the run's records are
    written (`shielded`) it waits for them; anywhere else (loading, evaluation) it stops the run
    at once, and the runner keeps what was trained (see runner.py)."""

    def __init__(self) -> None:
        self.stop: int | None = None  # the signal number asking to stop
        self.checkpoint = False  # a checkpoint was asked for (SIGUSR1)
        self.mode = Mode.AT_ONCE

    @property
    def deferring(self) -> bool:
        return self.mode is Mode.DEFERRED

    @contextmanager
    def _in(self, mode: Mode) -> Iterator[None]:
        previous, self.mode = self.mode, mode
        try:
            yield
        finally:
            self.mode = previous

    def deferred(self) -> AbstractContextManager[None]:
        """Signals wait for the current step to end while the block runs (a second Ctrl-C
        does not)."""
        return self._in(Mode.DEFERRED)

    def shielded(self) -> AbstractContextManager[None]:
        """Stop signals are noted, never raised, while the block runs: what it writes (a
        result.json, the trained state) is worth the second it takes. The caller checks `stop`."""
        return self._in(Mode.SHIELDED)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in CHECKPOINT_SIGNALS:
            if self.deferring:
                self.checkpoint = True
                log.warning("%s: a checkpoint will be written after this step", _name(signum))
            return
        if self.mode is Mode.SHIELDED:
            self.stop = self.stop or signum
            log.warning("%s: stopping once the run's records are written", _name(signum))
            return
        if self.mode is Mode.AT_ONCE:
            self.stop = signum
            raise Interrupted(
                f"stopped by {_name(signum)} outside training (nothing to checkpoint); re-run the "
                "same command to run it again",
                signum,
            )
        if self.stop == signal.SIGINT and signum == signal.SIGINT:
            raise Interrupted(
                "stopped at once by a second Ctrl-C (SIGINT), without waiting for the step",
                signum,
                at_once=True,
            )
        self.stop = signum
        log.warning(
            "%s: stopping after this step with a checkpoint (re-run the same command to resume; "
            "press Ctrl-C again to stop at once)",
            _name(signum),
        )

    def take_checkpoint_request(self) -> bool:
        asked, self.checkpoint = self.checkpoint, False
        return asked


def signal_name(signum: int) -> str:
    """SIGTERM, SIGINT, ... for a signal number."""
    return signal.Signals(signum).name


_name = signal_name


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

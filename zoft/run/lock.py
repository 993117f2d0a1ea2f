"""One writer per run directory: an exclusive fcntl.flock on <run dir>/run.lock, taken before
anything is written there. The kernel releases it when the process ends, however it ends
(kill -9 included), so a lock is never stale; the file stays and names its last holder. On NFS,
Linux maps flock onto NFS locks, which the server releases once a crashed client's lease expires.
No torch here: the sweeper checks cells with lock_holder before launching them."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from zoft.errors import RunConfigError
from zoft.run.rundir import LOCK_FILE

# zoft-run's exit code when its run folder is locked by another process (EX_TEMPFAIL: try again
# once that process is done); a sweep with locked cells and no failed ones exits with it too
LOCKED_EXIT = 75


class RunLocked(RunConfigError):
    """The run directory is being written by another live process."""

    def __init__(self, out_dir: Path, holder: str) -> None:
        self.out_dir, self.holder = out_dir, holder
        super().__init__(
            f"{out_dir} is locked by another zoft-run ({holder}): two processes writing one run "
            "folder would interleave its files. Wait for that run to finish (then this command "
            "skips or resumes it) or stop it; the lock goes with its process, so it is never stale"
        )


def _describe(text: str) -> str:
    """The holder as a phrase: "pid 1234 on host node7 since 2025-01-01T10:00:00+00:00"."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "pid and host unknown: its lock file is empty"


def _read_holder(fd: int) -> str:
    """The holder's own words, waiting briefly for a holder that has just taken the lock."""
    text = ""
    for _ in range(20):
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if text.strip():
            break
        time.sleep(0.05)
    return _describe(text)


class RunLock:
    """The exclusive lock of one run directory, held until release() or the process's end."""

    def __init__(self, out_dir: Path, fd: int) -> None:
        self.out_dir, self.path, self._fd = out_dir, out_dir / LOCK_FILE, fd

    @classmethod
    def acquire(cls, out_dir: Path) -> RunLock:
        """Create the run directory if needed and lock it; RunLocked names the live holder."""
        out_dir = Path(out_dir)
        path = out_dir / LOCK_FILE
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise RunConfigError(
                f"cannot create the lock file {path} ({err.strerror}); the run folder must be "
                "writable: fix its permissions or choose another results_dir / output_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(out_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        since = datetime.now(UTC).isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return cls(out_dir, fd)

    def release(self) -> None:
        """Unlock (closing the file releases the flock); the file stays, so that a process that
        opened it meanwhile never locks an unlinked file while a third locks a new one."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def lock_holder(out_dir: Path) -> str | None:
    """Who holds the run directory's lock ("pid … on host …"), or None when no live process does.
    Only reads: a finished folder on read-only storage is checked without writing to it."""
    try:
        fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file: never run here (an unopenable one: acquire() will tell)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    finally:
        os.close(fd)
    return None

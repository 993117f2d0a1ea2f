"""Peak memory per phase: CUDA allocated / peak allocated / peak reserved per device, peak RSS on
the host (zoft.run.record.MemoryRecord is its schema and the one way to read a peak).

Host peaks are exact per phase on Linux: writing 5 to /proc/self/clear_refs resets VmHWM, the
kernel's own high-water mark, so no sampling thread is needed.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from zoft.run.record import MemoryRecord

T = TypeVar("T")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MIB = 2**20


def _vm_hwm_bytes() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_host_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


# Peaks of the current phase read just before peak_during() reset the counters for a window of
# its own, folded back in when the phase is read (so measuring a window never lowers a phase's
# peak). Keys: "host", and ("cuda", index, "allocated" | "reserved").
_carried: dict[object, int] = {}


def peak_during(fn: Callable[[], T], device: torch.device) -> tuple[T, int | None]:
    """fn() and the peak bytes while it ran: allocated on a CUDA device, or the host's resident
    set on a CPU (None where the host peak cannot be reset); the enclosing phase keeps its
    peak."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        _carry(("cuda", index, "allocated"), torch.cuda.max_memory_allocated(index))
        _carry(("cuda", index, "reserved"), torch.cuda.max_memory_reserved(index))
        torch.cuda.reset_peak_memory_stats(index)
        value = fn()
        return value, torch.cuda.max_memory_allocated(index)
    before = _vm_hwm_bytes()
    if before is None or not _reset_host_peak():
        return fn(), None
    _carry("host", before)
    value = fn()
    return value, _vm_hwm_bytes()


def _carry(key: object, peak: int) -> None:
    _carried[key] = max(_carried.get(key, 0), peak)


class MemoryTracker:
    """Records the peaks of each named phase (load, zero_shot, train, eval)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, object]] = {}

    @property
    def record(self) -> MemoryRecord:
        return MemoryRecord.from_json(self.phases)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        exact_host = _reset_host_peak()
        _carried.clear()
        cuda = torch.cuda.is_available()
        if cuda:
            for i in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(i)
        try:
            yield
        finally:
            self.phases[name] = self._read(exact_host, cuda)

    @staticmethod
    def _read(exact_host: bool, cuda: bool) -> dict[str, object]:
        hwm = _vm_hwm_bytes() if exact_host else None
        if hwm is None:  # ru_maxrss is in kB on Linux and covers the whole process lifetime
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        hwm = max(hwm, _carried.get("host", 0))
        record: dict[str, object] = {
            "host_peak_rss_mib": round(hwm / MIB, 1),
            "host_peak_scope": "phase" if exact_host else "process",
        }
        if cuda:
            record["cuda"] = {
                f"cuda:{i}": {
                    "allocated_mib": round(torch.cuda.memory_allocated(i) / MIB, 1),
                    "max_allocated_mib": round(_cuda_peak(i, "allocated") / MIB, 1),
                    "reserved_mib": round(_cuda_peak(i, "reserved") / MIB, 1),
                }
                for i in range(torch.cuda.device_count())
            }
        return record


def _cuda_peak(index: int, kind: str) -> int:
    """A phase's CUDA peak: torch's counter, or what it held before a window reset it."""
    now = (
        torch.cuda.max_memory_allocated if kind == "allocated" else torch.cuda.max_memory_reserved
    )(index)
    return max(now, _carried.get(("cuda", index, kind), 0))

"""Peak memory per phase: CUDA allocated / peak allocated / peak reserved per device, peak RSS on
the host (zoft.run.record.MemoryRecord is its schema and the one way to read a peak).

Host peaks are exact per phase on Linux: writing 5 to /proc/self/clear_refs resets VmHWM, the
kernel's own high-water mark, so no sampling thread is needed.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from zoft.run.record import MemoryRecord

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
        record: dict[str, object] = {
            "host_peak_rss_mib": round(hwm / MIB, 1),
            "host_peak_scope": "phase" if exact_host else "process",
        }
        if cuda:
            record["cuda"] = {
                f"cuda:{i}": {
                    "allocated_mib": round(torch.cuda.memory_allocated(i) / MIB, 1),
                    "max_allocated_mib": round(torch.cuda.max_memory_allocated(i) / MIB, 1),
                    "reserved_mib": round(torch.cuda.max_memory_reserved(i) / MIB, 1),
                }
                for i in range(torch.cuda.device_count())
            }
        return record

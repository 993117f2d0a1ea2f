"""MemoryTracker's records, on the host and (through a fake CUDA stats source) on GPUs."""

from __future__ import annotations

import pytest
import torch

from zoft.run.memory import MIB, MemoryTracker
from zoft.run.record import MemoryRecord


class FakeCuda:
    """The torch.cuda functions MemoryTracker calls, answering from per-device MiB figures; a
    phase's peak is what `load` put there since the last reset."""

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.allocated = [0.0] * devices
        self.peak = [0.0] * devices
        self.reserved = [0.0] * devices
        self.resets = 0

    def load(self, device: int, peak_mib: float, left_mib: float, reserved_mib: float) -> None:
        self.peak[device] = max(self.peak[device], peak_mib)
        self.allocated[device] = left_mib
        self.reserved[device] = max(self.reserved[device], reserved_mib)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.devices)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self._reset)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i: self.allocated[i] * MIB)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i: self.peak[i] * MIB)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda i: self.reserved[i] * MIB)
        return self

    def _reset(self, device: int) -> None:
        self.resets += 1
        self.peak[device] = self.allocated[device]
        self.reserved[device] = self.allocated[device]


def gpu_phase(monkeypatch: pytest.MonkeyPatch, peaks_mib: list[float], phase: str = "train"):
    """The memory section of a result.json whose `phase` peaked at peaks_mib (one per device),
    written by the real MemoryTracker."""
    cuda = FakeCuda(len(peaks_mib)).install(monkeypatch)
    tracker = MemoryTracker()
    with tracker.phase(phase):
        for device, peak in enumerate(peaks_mib):
            cuda.load(device, peak, left_mib=peak / 4, reserved_mib=peak + 64)
    return tracker.phases


def test_a_gpu_phase_records_allocated_peak_and_reserved_per_device(monkeypatch):
    phases = gpu_phase(monkeypatch, [500.0, 700.0])
    cuda = phases["train"]["cuda"]
    assert cuda == {
        "cuda:0": {"allocated_mib": 125.0, "max_allocated_mib": 500.0, "reserved_mib": 564.0},
        "cuda:1": {"allocated_mib": 175.0, "max_allocated_mib": 700.0, "reserved_mib": 764.0},
    }
    assert phases["train"]["host_peak_rss_mib"] > 0


def test_peak_mib_is_the_largest_device_peak_of_a_gpu_phase(monkeypatch):
    record = MemoryRecord.from_json(gpu_phase(monkeypatch, [500.0, 700.0]))
    assert record.peak_mib("train") == 700.0
    assert record.device_peaks_mib("train") == {"cuda:0": 500.0, "cuda:1": 700.0}


def test_each_phase_resets_the_device_peaks(monkeypatch):
    cuda = FakeCuda(1).install(monkeypatch)
    tracker = MemoryTracker()
    with tracker.phase("load"):
        cuda.load(0, 900.0, left_mib=300.0, reserved_mib=1000.0)
    with tracker.phase("eval"):
        cuda.load(0, 400.0, left_mib=300.0, reserved_mib=500.0)
    record = tracker.record
    assert cuda.resets == 2
    assert record.peak_mib("load") == 900.0
    assert record.peak_mib("eval") == 400.0  # not the load phase's 900
    assert record.peak_mib("load", "eval") == 900.0


def test_a_cpu_phase_records_the_host_peak_only():
    tracker = MemoryTracker()
    with tracker.phase("eval"):
        block = bytearray(8 * MIB)
    del block
    phase = tracker.phases["eval"]
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine records its devices too")
    assert set(phase) == {"host_peak_rss_mib", "host_peak_scope"}
    assert tracker.record.peak_mib("eval") == phase["host_peak_rss_mib"]


def test_a_measured_window_never_lowers_its_phase_peak():
    """peak_during resets the host peak for its window; the phase still reports the larger
    peak it had reached before (here a 256 MiB block, touched and freed)."""
    from zoft.run.memory import peak_during

    tracker = MemoryTracker()
    with tracker.phase("train"):
        start = tracker._read(True, False)["host_peak_rss_mib"]
        block = torch.ones(64 * MIB)  # 256 MiB, written
        del block
        value, peak = peak_during(lambda: torch.ones(MIB).sum().item(), torch.device("cpu"))
    assert value == MIB
    if peak is None:
        pytest.skip("this host cannot reset its peak (no /proc/self/clear_refs)")
    assert peak / MIB < start + 128  # the window saw only its own small tensor
    assert tracker.phases["train"]["host_peak_rss_mib"] >= start + 255


@pytest.mark.gpu
def test_a_measured_cuda_window_never_lowers_its_phase_peak():
    from zoft.run.memory import peak_during

    tracker = MemoryTracker()
    device = torch.device("cuda")
    with tracker.phase("train"):
        block = torch.ones(64 * MIB, device=device)
        del block
        _, peak = peak_during(lambda: torch.ones(MIB, device=device), device)
    assert peak < 64 * MIB
    assert tracker.phases["train"]["cuda"]["cuda:0"]["max_allocated_mib"] >= 256


@pytest.mark.gpu
def test_real_cuda_memory_is_recorded_per_phase():
    """The CUDA path against the real allocator (the fake above stands in for it on CPU)."""
    tracker = MemoryTracker()
    with tracker.phase("alloc"):
        held = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")  # 64 MiB
    record = tracker.record
    assert record.peak_mib("alloc") >= 64
    assert record.to_json()["alloc"]["reserved_mib"] >= 64
    del held

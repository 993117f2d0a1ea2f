"""The measurement loop: for each method a fresh model, warm-up steps, then the median of timed
steps (CUDA-synchronised), the parameter sweeps of the timed steps and the peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from zoft.benchmark.methods import BENCH_METHODS, DEFAULT_METHODS, BenchContext, SyntheticScorer
from zoft.benchmark.models import BENCH_MODELS
from zoft.config import check_ranges, ranged
from zoft.errors import ZoftError
from zoft.run.environment import environment
from zoft.run.memory import MemoryTracker


@dataclass
class BenchSettings:
    model: str = "tiny-opt"
    batch: int = ranged(16, ge=1)
    seq_len: int = ranged(64, ge=2)  # tokens per example: the loss needs a next token
    dtype: str = "fp32"
    device: str = "cpu"
    repeats: int = ranged(5, ge=1)
    # a paired run's first step also probes sequentially, to compare
    warmup: int = ranged(2, ge=1)
    methods: tuple[str, ...] = DEFAULT_METHODS
    threads: int | None = ranged(None, ge=1)


def bench_flag(name: str) -> str:
    """The command-line flag of a BenchSettings field (seq_len: --seq-len)."""
    return "--" + name.replace("_", "-")


@dataclass
class MethodResult:
    method: str
    label: str
    step_s: float  # median over the timed steps
    step_times_s: list[float]
    forwards: int
    backwards: int
    passes_per_step: float | None  # parameter sweeps per timed step (None: not counted)
    peak_mib: float  # CUDA allocated on cuda, process peak RSS on the host
    pure_zo: bool


@dataclass
class BenchResult:
    settings: BenchSettings
    parameters: int
    peak_kind: str
    environment: dict[str, Any]
    methods: list[MethodResult] = field(default_factory=list)

    def get(self, method: str) -> MethodResult | None:
        return next((m for m in self.methods if m.method == method), None)


def run_benchmark(settings: BenchSettings) -> BenchResult:
    """Every method of `settings.methods`, each on a fresh copy of the model (same weights)."""
    check_ranges(BenchSettings, settings, spell=bench_flag)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", settings.device):
        raise ZoftError(f"--device {settings.device} is invalid: use cpu, cuda or cuda:N")
    for name in settings.methods:
        BENCH_METHODS.get(name)  # unknown names fail before anything runs
    BENCH_MODELS.get(settings.model)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    cuda = torch.device(settings.device).type == "cuda"
    result = BenchResult(
        settings=settings,
        parameters=0,
        peak_kind="CUDA allocated" if cuda else "process peak RSS",
        environment=environment(),
    )
    for name in settings.methods:
        result.methods.append(_measure(name, settings, result))
    return result


def _measure(name: str, settings: BenchSettings, result: BenchResult) -> MethodResult:
    _release()
    model, model_cfg = BENCH_MODELS.get(settings.model)(settings.dtype, settings.device)
    result.parameters = sum(p.numel() for p in model.parameters())
    scorer = SyntheticScorer(model, settings.batch, settings.seq_len)
    total = settings.warmup + settings.repeats
    ctx = BenchContext(model, model_cfg, scorer, total_steps=total)
    stepper = BENCH_METHODS.get(name)(ctx)
    tracker = MemoryTracker()
    times: list[float] = []
    with tracker.phase(name):
        for index in range(settings.warmup):
            stepper.step(index)
        swept = stepper.sweeps()
        for index in range(settings.warmup, total):
            _synchronize(settings.device)
            start = time.perf_counter()
            forwards, backwards = stepper.step(index)
            _synchronize(settings.device)
            times.append(time.perf_counter() - start)
        after = stepper.sweeps()
    peak = tracker.record.peak_mib(name)
    meta = BENCH_METHODS.meta(name)
    del stepper, ctx, model, scorer
    return MethodResult(
        method=name,
        label=meta["label"],
        step_s=statistics.median(times),
        step_times_s=times,
        forwards=forwards,
        backwards=backwards,
        passes_per_step=None if swept is None else (after - swept) / settings.repeats,
        peak_mib=float(peak),
        pure_zo=meta.get("pure_zo", False),
    )


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _release() -> None:
    """Free the previous method's model before the next peak is measured: Python's garbage,
    the CUDA cache, and glibc's free lists (so the host's resident set drops)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)

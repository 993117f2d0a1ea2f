"""The measurement loop: for each method a fresh model, warm-up steps, then the median of timed
steps (CUDA-synchronised), the parameter sweeps of the timed steps and the peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import re
import statistics
import time
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from zoft.benchmark.methods import BENCH_METHODS, DEFAULT_METHODS, BenchContext, SyntheticScorer
from zoft.benchmark.models import BENCH_MODELS
from zoft.config import check_ranges, ranged
from zoft.errors import ZoftError
from zoft.optim import OPTIMIZERS
from zoft.optim.directions import NORMALS
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
    # the directions' generators to time each ZO step with (optimizer.rng): both, to compare
    rngs: tuple[str, ...] = ("torch",)


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
    rng: str | None = None  # the directions' generator (None: the step draws none)


@dataclass
class GeneratorResult:
    """Normals per second of one generator, or one fp32 memory pass (the physical floor: a
    fused kernel reads θ and writes θ ± εz), over the model's largest parameter."""

    what: str
    elements: int
    seconds: float  # median of GENERATOR_REPEATS
    per_s: float  # normals (or elements) per second
    gb_per_s: float | None = None  # memory traffic of the pass


@dataclass
class BenchResult:
    settings: BenchSettings
    parameters: int
    peak_kind: str
    environment: dict[str, Any]
    methods: list[MethodResult] = field(default_factory=list)
    generators: list[GeneratorResult] = field(default_factory=list)

    def get(self, method: str) -> MethodResult | None:
        """The first row of a bench method (with the first generator of --rng)."""
        return next((m for m in self.methods if m.method == method), None)

    def rows(self, method: str) -> list[MethodResult]:
        """Every row of a bench method: one per generator of --rng for a ZO step."""
        return [m for m in self.methods if m.method == method]


def run_benchmark(settings: BenchSettings) -> BenchResult:
    """Every method of `settings.methods`, each on a fresh copy of the model (same weights)."""
    check_ranges(BenchSettings, settings, spell=bench_flag)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", settings.device):
        raise ZoftError(f"--device {settings.device} is invalid: use cpu, cuda or cuda:N")
    for name in settings.methods:
        BENCH_METHODS.get(name)  # unknown names fail before anything runs
    for rng in settings.rngs:
        if rng not in NORMALS:
            raise ZoftError(f"--rng {rng} is invalid: use {', '.join(NORMALS.names())}")
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
    for rng in settings.rngs:  # compile (numba) before any peak is measured: every row alike
        NORMALS.get(rng)().matrix((16,), 0, torch.device(settings.device))
    for name in settings.methods:
        for rng in _generators(name, settings):
            result.methods.append(_measure(name, settings, result, rng))
    result.generators = measure_generators(settings)
    return result


def _generators(name: str, settings: BenchSettings) -> tuple[str | None, ...]:
    """The generators a bench method is timed with: each of --rng for a step that draws
    directions through optimizer.rng, none otherwise."""
    optimizer = BENCH_METHODS.meta(name).get("optimizer")
    if optimizer is None or "rng" not in {f.name for f in fields(OPTIMIZERS.config(optimizer))}:
        return (None,)
    return settings.rngs


GENERATOR_REPEATS = 3


def measure_generators(settings: BenchSettings) -> list[GeneratorResult]:
    """Each generator of --rng, and one fp32 axpy pass, over as many elements as the model's
    largest parameter (the numbers a fused perturbation is bounded by)."""
    model, _ = BENCH_MODELS.get(settings.model)(settings.dtype, settings.device)
    n = max(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    del model
    _release()
    out = []
    for rng in settings.rngs:
        draw = functools.partial(NORMALS.get(rng)().matrix, (n,), 12345, device)
        seconds = _median_time(draw, settings.device)
        out.append(GeneratorResult(f"{rng} normals", n, seconds, n / seconds))
    a = torch.zeros(n, device=device)
    b = torch.ones(n, device=device)
    seconds = _median_time(lambda: a.add_(b, alpha=0.5), settings.device)
    out.append(GeneratorResult("fp32 axpy pass", n, seconds, n / seconds, 12 * n / seconds / 1e9))
    return out


def _median_time(work: Any, device: str) -> float:
    work()  # warm-up (numba compiles on its first call)
    times = []
    for _ in range(GENERATOR_REPEATS):
        _synchronize(device)
        start = time.perf_counter()
        work()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(
    name: str, settings: BenchSettings, result: BenchResult, rng: str | None = None
) -> MethodResult:
    _release()
    model, model_cfg = BENCH_MODELS.get(settings.model)(settings.dtype, settings.device)
    result.parameters = sum(p.numel() for p in model.parameters())
    scorer = SyntheticScorer(model, settings.batch, settings.seq_len)
    total = settings.warmup + settings.repeats
    ctx = BenchContext(model, model_cfg, scorer, total_steps=total, rng=rng)
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
        label=meta["label"] + (f", {rng} directions" if len(settings.rngs) > 1 and rng else ""),
        step_s=statistics.median(times),
        step_times_s=times,
        forwards=forwards,
        backwards=backwards,
        passes_per_step=None if swept is None else (after - swept) / settings.repeats,
        peak_mib=float(peak),
        pure_zo=meta.get("pure_zo", False),
        rng=rng,
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

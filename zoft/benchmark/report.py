"""A benchmark run as markdown (the committed results/bench/*.md) and json, with DESIGN §8's
targets checked against the ratios measured in that same run."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from zoft.benchmark.methods import BENCH_METHODS
from zoft.benchmark.run import BenchResult, MethodResult
from zoft.optim import OPTIMIZERS
from zoft.run.rundir import atomic_write

MIB = 2**20


@dataclass(frozen=True)
class Target:
    """A goal of DESIGN §8: the ratio it bounds, for which method(s), and on which device."""

    text: str
    bound: float
    measure: Callable[[BenchResult], list[tuple[str, float]]]  # (what, ratio) per method
    device: str | None = None  # "cuda": a GPU goal, printed for information elsewhere


def _step_ratio(method: str) -> Callable[[BenchResult], list[tuple[str, float]]]:
    def measure(result: BenchResult) -> list[tuple[str, float]]:
        forward = result.get("forward")
        if forward is None:
            return []
        return [(row.label, row.step_s / forward.step_s) for row in result.rows(method)]

    return measure


def _against_reference(result: BenchResult) -> list[tuple[str, float]]:
    reference = result.get("mezo-reference")
    if reference is None:
        return []
    return [(m.label, m.step_s / reference.step_s) for m in result.methods if _is_zoft_zo_step(m)]


def _is_zoft_zo_step(m: MethodResult) -> bool:
    """A zoft zeroth-order step on the full weights, the steps the reference pattern compares to."""
    name = BENCH_METHODS.meta(m.method).get("optimizer") if m.method in BENCH_METHODS else None
    if name is None:
        return False
    facts = OPTIMIZERS.facts(name)
    return facts.zeroth_order and not facts.lora


def _peak_ratios(result: BenchResult) -> list[tuple[str, float]]:
    forward = result.get("forward")
    if forward is None:
        return []
    return [
        (m.label, m.peak_mib / forward.peak_mib)
        for m in result.methods
        if m.pure_zo and m.method != "mezo-reference"
    ]


TARGETS = (
    Target("MeZO step ≤ 2.2 × one forward", 2.2, _step_ratio("mezo-paired")),
    Target("MeZO step ≤ 2.2 × one forward", 2.2, _step_ratio("mezo-sequential")),
    Target("LOZO step (paired) ≤ 1.3 × one forward", 1.3, _step_ratio("lozo-paired"), "cuda"),
    Target("zoft step < the reference MeZO pattern's", 1.0, _against_reference),
    Target("ZO peak memory ≤ 1.05 × inference peak", 1.05, _peak_ratios),
)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def perturbation_share(m: MethodResult, forward: MethodResult | None) -> float | None:
    """The share of a ZO step that is not its forwards: (step − forwards × one forward) / step,
    i.e. drawing z, forming θ ± εz, restoring and updating (paired probes: one forward at 2B
    counted as 2)."""
    if forward is None or not m.pure_zo or m.method == "forward":
        return None
    return max(0.0, m.step_s - m.forwards * forward.step_s) / m.step_s


def _generator_lines(result: BenchResult) -> list[str]:
    if not result.generators:
        return []
    n = result.generators[0].elements
    lines = [
        "",
        f"## Generators against one memory pass ({n / 1e6:.1f}M elements: the largest parameter)",
        "",
        "| what | time (ms) | per second | memory traffic |",
        "|---|---:|---:|---:|",
    ]
    for g in result.generators:
        traffic = "—" if g.gb_per_s is None else f"{g.gb_per_s:.1f} GB/s"
        lines.append(f"| {g.what} | {g.seconds * 1e3:.1f} | {g.per_s / 1e6:.0f} M | {traffic} |")
    lines += [
        "",
        "A fused perturbation reads θ and writes θ ± εz: one axpy pass is its floor, so a",
        "generator slower than the pass bounds the perturbation's time.",
    ]
    return lines


def _replay_lines(result: BenchResult) -> list[str]:
    """What rebuilding a step from the trajectory costs (zoft-replay, a trajectory checkpoint's
    resume) against training that step: each replay row over its method's paired (else
    sequential) step of this run."""
    rows = []
    for m in result.methods:
        meta = BENCH_METHODS.meta(m.method) if m.method in BENCH_METHODS else {}
        if not meta.get("replay"):
            continue
        name = meta["optimizer"]
        trained = result.get(f"{name}-paired") or result.get(f"{name}-sequential")
        if trained is not None:
            ratio = m.step_s / trained.step_s
            rows.append(
                f"| {OPTIMIZERS.facts(name).display} | {m.step_s * 1e3:.1f} | "
                f"{trained.label} | {trained.step_s * 1e3:.1f} | {ratio:.2f}× |"
            )
    if not rows:
        return []
    return [
        "",
        "## Replay (zoft-replay, trajectory checkpoints)",
        "",
        "| method | replay of a step (ms) | training step | (ms) | replay / step |",
        "|---|---:|---|---:|---:|",
        *rows,
    ]


def markdown(result: BenchResult) -> str:
    s, env = result.settings, result.environment
    forward, reference = result.get("forward"), result.get("mezo-reference")
    versions = env.get("packages", {})
    lines = [
        f"# zoft-bench: {s.model}, {s.dtype}, {s.device}",
        "",
        "| setting | value |",
        "|---|---|",
        f"| model | {s.model} ({result.parameters / 1e6:.1f}M parameters) |",
        f"| batch × sequence length | {s.batch} × {s.seq_len} tokens |",
        f"| device | {env.get('device_name')} |",
        f"| timing | median of {s.repeats} steps after {s.warmup} warm-up step(s) |",
        f"| peak memory | {result.peak_kind}, per method on a fresh model |",
        f"| torch / transformers | {versions.get('torch')} / {versions.get('transformers')} |",
        f"| zoft commit | {env.get('git_commit')} |",
        f"| measured | {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} |",
        "",
        "| method | step (ms) | step / forward | step / reference MeZO | perturbation share"
        " | parameter passes / step | forwards + backwards | peak (MiB) | peak / inference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result.methods:
        share = perturbation_share(m, forward)
        lines.append(
            f"| {m.label} | {m.step_s * 1e3:.1f} "
            f"| {_fmt(m.step_s / forward.step_s if forward else None)} "
            f"| {_fmt(m.step_s / reference.step_s if reference else None)} "
            f"| {'—' if share is None else f'{share:.0%}'} "
            f"| {_fmt(m.passes_per_step)} | {m.forwards} + {m.backwards} "
            f"| {m.peak_mib:.0f} | {_fmt(m.peak_mib / forward.peak_mib if forward else None)} |"
        )
    lines += [
        "",
        "Paired probes run both probes as one forward at batch 2B (counted as 2 forwards); the",
        "first step of a paired run also probes sequentially to check the pairing (a warm-up step).",
        "Parameter passes: sweeps per step that form or write a θ-sized tensor (z, a transient",
        "θ ± εz, the update); the reference pattern makes 4. Perturbation share: the step's time",
        "less its forwards' (forwards × one forward), over the step: drawing z, θ ± εz, restore,",
        "update.",
        *_generator_lines(result),
        *_replay_lines(result),
        "",
        "## Targets (DESIGN §8), from the ratios above",
        "",
        "| target | method | measured | verdict |",
        "|---|---|---:|---|",
    ]
    on_cuda = s.device.startswith("cuda")
    for target in TARGETS:
        for what, ratio in target.measure(result):
            if target.device == "cuda" and not on_cuda:
                verdict = "GPU target; for information"
            else:
                verdict = "met" if ratio <= target.bound else "missed"
            lines.append(f"| {target.text} | {what} | {ratio:.2f}× | {verdict} |")
    return "\n".join(lines) + "\n"


def write_report(result: BenchResult, stem: Path) -> list[Path]:
    """stem.md and stem.json (every timed step, the settings and the environment)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    atomic_write(md, markdown(result))
    atomic_write(js, json.dumps(dataclasses.asdict(result), indent=1, default=str) + "\n")
    return [md, js]

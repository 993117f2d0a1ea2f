"""zoft-bench: the command line of the benchmark."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from zoft.benchmark.methods import BENCH_METHODS, DEFAULT_METHODS
from zoft.benchmark.models import BENCH_MODELS
from zoft.benchmark.report import markdown, write_report
from zoft.benchmark.run import BenchSettings, run_benchmark
from zoft.cli import quiet_libraries
from zoft.errors import ZoftError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoft-bench",
        description="Time one forward and one step of each method on the same model, batch and "
        "sequence length, in one process; print step/forward ratios, parameter passes per step "
        "and peak memory against inference (DESIGN §8).",
    )
    parser.add_argument("--model", default="tiny-opt", help=f"one of {', '.join(BENCH_MODELS)}")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per example")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (the median is kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, of {', '.join(BENCH_METHODS)}",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--rng",
        default="torch",
        help="the directions' generator(s) of the ZO steps (optimizer.rng), comma-separated: "
        "torch, philox or torch,philox to compare both in one run",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write OUT.md and OUT.json (e.g. results/bench/x)"
    )
    return parser


def bench_main(argv: list[str] | None = None) -> None:
    """zoft-bench: see --help."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    settings = BenchSettings(
        model=args.model,
        batch=args.batch,
        seq_len=args.seq_len,
        dtype=args.dtype,
        device=args.device,
        repeats=args.repeats,
        warmup=args.warmup,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        threads=args.threads,
        rngs=tuple(r.strip() for r in args.rng.split(",") if r.strip()),
    )
    try:
        result = run_benchmark(settings)
    except ZoftError as exc:
        raise SystemExit(f"zoft-bench: {exc}") from None
    print(markdown(result), end="")
    if args.out is not None:
        for path in write_report(result, args.out):
            print(f"wrote {path}")

"""`make gpu-check`: every CUDA path zoft has, in one prepared run of under ten minutes, written
under one results folder. No CUDA path had run on a GPU when this was written, so it is the first
thing to run on a GPU machine: the `gpu`-marked tests (CUDA memory records, bf16/fp16 restore
under both generators, paired fp16 probes on an OPT-1.3B shape, the Philox stream on CUDA,
device_map=auto on one device), then short zoft-bench runs at the OPT-1.3B and OPT-13B shapes.

Without CUDA it still runs: the tests skip (saying why), the benches are left out, and the summary
says so; that is how CI checks it.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from zoft.run.rundir import atomic_write

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchCase:
    """One short zoft-bench run of the check."""

    model: str
    seq_len: int
    methods: tuple[str, ...]
    rngs: tuple[str, ...]
    repeats: int = 3


# short: the paper's shapes (MeZO Table 23: batch 16), bf16, the ZO steps the papers time
BENCHES = (
    BenchCase(
        "opt-1.3b-random",
        400,
        ("forward", "mezo-reference", "mezo-sequential", "mezo-paired", "lozo-paired"),
        ("torch", "philox"),
    ),
    BenchCase("opt-13b-random", 64, ("forward", "mezo-sequential", "mezo-paired"), ("torch",), 2),
)


def device_facts() -> dict[str, object]:
    """What the check ran on."""
    facts: dict[str, object] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            devices=torch.cuda.device_count(),
        )
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    return facts


def run_gpu_tests(out: Path) -> tuple[int, str]:
    """pytest -m gpu over the test suite; (exit code, its summary line)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs",
           f"--junitxml={out / 'gpu-tests.xml'}", str(REPO / "tests")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    (out / "gpu-tests.txt").write_text(done.stdout + done.stderr)
    lines = [x for x in done.stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped)", x)]
    return done.returncode, (lines[-1].strip("= ") if lines else "no summary line")


def run_benches(out: Path) -> list[str]:
    """The short benches, each written as out/bench_<model>_t<seq>.{md,json}."""
    from zoft.benchmark.report import write_report
    from zoft.benchmark.run import BenchSettings, run_benchmark

    written = []
    for case in BENCHES:
        settings = BenchSettings(
            model=case.model,
            batch=16,
            seq_len=case.seq_len,
            dtype="bf16",
            device="cuda",
            repeats=case.repeats,
            warmup=1,
            methods=case.methods,
            rngs=case.rngs,
        )
        stem = out / f"bench_{case.model.removesuffix('-random')}_b16_t{case.seq_len}"
        written += [str(p) for p in write_report(run_benchmark(settings), stem)]
        torch.cuda.empty_cache()
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the check into --out; 1 when a GPU test failed."""
    parser = argparse.ArgumentParser(prog="python -m zoft.benchmark.gpu_check")
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    parser.add_argument("--no-bench", action="store_true", help="the gpu tests only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    facts = device_facts()
    atomic_write(args.out / "device.json", json.dumps(facts, indent=1) + "\n")
    code, tests = run_gpu_tests(args.out)
    if not facts["cuda_available"]:
        benches = ["not run: torch sees no CUDA device"]
    elif args.no_bench:
        benches = ["not run: --no-bench"]
    else:
        benches = run_benches(args.out)
    summary = [
        "# zoft gpu-check",
        "",
        f"- device: {facts.get('device', 'none (no CUDA)')}, torch {facts['torch']}, "
        f"CUDA {facts['cuda_version']}, triton {facts['triton']}",
        f"- gpu tests: {tests} (exit {code}; gpu-tests.txt, gpu-tests.xml)",
        *[f"- bench: {b}" for b in benches],
        f"- took {time.time() - began:.0f} s",
    ]
    atomic_write(args.out / "summary.md", "\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0 if code in (0, 5) else 1  # 5: no test collected


if __name__ == "__main__":
    raise SystemExit(main())

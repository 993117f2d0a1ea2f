"""Copy the small files of complete runs (result.json, config.yaml, metrics.jsonl, and a ZO run's
trajectory.jsonl) into a folder that can be committed, so a table and its plots can be rebuilt
without the run directories (and a ZO run's weights with zoft-replay).

    python -m zoft.report.summaries runs/mini results/tables/mini/runs/smollm2
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from zoft.run.rundir import RESULT_FILE, TRAJECTORY_FILE, read_run

# a pure ZO run's trajectory too: with the base model it rebuilds the weights (zoft-replay)
SUMMARY_FILES = (RESULT_FILE, "config.yaml", "metrics.jsonl", TRAJECTORY_FILE)


def copy_summaries(source: Path, target: Path) -> int:
    """Copies every complete run under source to the same relative path under target; returns how
    many runs were copied. Failed or unfinished runs are left out."""
    copied = 0
    for result_path in sorted(Path(source).rglob(RESULT_FILE)):
        run_dir = result_path.parent
        record = read_run(run_dir)
        if record is None or not record.complete:
            continue
        destination = Path(target) / run_dir.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in SUMMARY_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, destination / name)
        copied += 1
    return copied


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m zoft.report.summaries RUNS_DIR TARGET_DIR")
    source, target = map(Path, args)
    if not source.is_dir():
        sys.exit(f"zoft.report.summaries: {source} is not a folder of runs")
    print(f"copied {copy_summaries(source, target)} run summaries from {source} to {target}")


if __name__ == "__main__":
    main()

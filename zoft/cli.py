"""Thin entry points: zoft-run (Hydra) and zoft-table."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from tabulate import tabulate

from zoft.config import register_configs
from zoft.errors import ZoftError

log = logging.getLogger("zoft")

register_configs()


def _register_grid_sweeper() -> None:
    """Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install of
    zoft does not extend; registering the class directly works for every kind of install."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.zoft_grid import GridSweeper

    Plugins.instance().register(GridSweeper)


def _method(result: dict) -> str:
    """The optimizer of a fine-tuning run, else the evaluation-only mode (zero-shot, icl)."""
    mode = result.get("mode", "fine-tune")
    return result["optimizer"] if mode == "fine-tune" else mode


def summary_table(result: dict) -> str:
    """A small human table of one run's outcome."""
    rows = [
        ("run", f"{result['task']} / {result['model']} / {_method(result)}"),
        (
            "status",
            result["status"] + (" (skipped: already complete)" if result.get("skipped") else ""),
        ),
    ]
    for key in ("zero_shot", "dev", "test"):
        if result.get(key):
            rows.append((key, ", ".join(f"{m} {v:.4f}" for m, v in result[key].items())))
    for key in (
        "steps",
        "forward_passes",
        "backward_passes",
        "train_loss_first",
        "train_loss_last",
        "wall_time_s",
        "output_dir",
    ):
        value = result.get(key)
        if value is not None:
            rows.append((key, round(value, 4) if isinstance(value, float) else value))
    peaks = {p: m["host_peak_rss_mib"] for p, m in (result.get("memory") or {}).items()}
    if peaks:
        rows.append(("peak RSS MiB", ", ".join(f"{p} {v:.0f}" for p, v in peaks.items())))
    return tabulate(rows, tablefmt="simple")


@hydra.main(version_base="1.3", config_path="pkg://zoft.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> None:
    from zoft.runner import run

    try:
        result = run(cfg)
    except ZoftError as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return  # the cell's result.json records the failure; the sweep goes on
        sys.exit(1)
    except Exception:
        log.exception("the run failed (result.json records the reason)")
        raise
    print(summary_table(result), flush=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_main() -> None:
    """zoft-run: one experiment, or a sweep with -m."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _quiet_libraries()
    _register_grid_sweeper()
    if "--dry-run" in sys.argv:
        sys.argv = [arg for arg in sys.argv if arg != "--dry-run"] + ["hydra.sweeper.dry_run=true"]
    _hydra_entry()


def table_main(argv: list[str] | None = None) -> None:
    """zoft-table: the complete runs under a folder as a markdown table (stdout or --out)."""
    from zoft.outputs import atomic_write
    from zoft.tables import collect_results, markdown_table, methods_table

    parser = argparse.ArgumentParser(prog="zoft-table", description=table_main.__doc__)
    parser.add_argument("runs", type=Path, help="folder searched for result.json files")
    parser.add_argument("--out", type=Path, help="write the table to this file")
    parser.add_argument("--title", help="a heading above the table")
    parser.add_argument(
        "--by",
        choices=("task", "run"),
        default="task",
        help="task: test metric per task × method (mean over seeds); run: one row per run with "
        "its training loss, time and peak memory (method comparisons)",
    )
    args = parser.parse_args(argv)
    results = collect_results(args.runs)
    if not results:
        parser.exit(1, f"zoft-table: no complete runs under {args.runs}\n")
    render = methods_table if args.by == "run" else markdown_table
    table = render(results, args.title)
    if args.out:
        atomic_write(args.out, table)
        print(f"wrote {args.out} ({len(results)} runs)")
    else:
        print(table, end="")

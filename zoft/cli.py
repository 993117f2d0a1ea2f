"""Thin entry points: zoft-run (Hydra) and zoft-table.

Imports are deferred into the functions that need them: `zoft-run --help` and a bad override must
answer in well under a second and a half, so importing this module loads no torch, transformers,
tabulate or Hydra (tests/faults/test_console.py checks it).
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from zoft.errors import ZoftError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from zoft.run.record import RunResult

log = logging.getLogger("zoft")

HELP_FLAGS = ("-h", "--help")  # zoft's own help; --hydra-help is Hydra's


def _register_grid_sweeper() -> None:
    """Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install of
    zoft does not extend; registering the class directly works for every kind of install."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.zoft_grid import GridSweeper

    Plugins.instance().register(GridSweeper)


def summary_table(result: dict) -> str:
    """A small human table of one run's outcome."""
    from tabulate import tabulate

    from zoft.run.record import RunResult

    record = RunResult.from_json(result)
    method = record.method_record.name  # the optimizer, else the evaluation-only mode
    rows = [
        ("run", f"{record.task} / {record.model} / {method}"),
        (
            "status",
            record.status + (" (skipped: already complete)" if result.get("skipped") else ""),
        ),
    ]
    for key in ("zero_shot", "dev", "test"):
        if result.get(key):
            rows.append((key, ", ".join(f"{m} {v:.4f}" for m, v in result[key].items())))
    gains = [
        f"{m} {before:.4f} -> {result['test'][m]:.4f} ({100 * (result['test'][m] - before):+.1f} points)"
        for m, before in (result.get("zero_shot") or {}).items()
        if m in (result.get("test") or {})
    ]
    if gains:  # what training added to the model's own zero-shot score on the same test set
        rows.append(("zero-shot -> test", ", ".join(gains)))
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
    peaks = record.memory_record.host_peaks_mib()
    if peaks:
        rows.append(("peak RSS MiB", ", ".join(f"{p} {v:.0f}" for p, v in peaks.items())))
    train, inference = (
        record.memory_record.peak_mib("train"),
        record.memory_record.peak_mib("zero_shot", "eval"),
    )
    if train > 0 and inference > 0:  # NaN (a phase that did not run) fails both tests
        rows.append(
            ("train vs inference", f"{train:.0f} / {inference:.0f} MiB = {train / inference:.2f}x")
        )
    return tabulate(rows, tablefmt="simple")


def summary_line(result: dict) -> str:
    """One line of a run's outcome (a sweep prints one per cell)."""
    from zoft.run.record import RunResult

    record = RunResult.from_json(result)
    scores = ", ".join(f"{m} {v:.4f}" for m, v in (record.test or {}).items())
    name = f"{record.task} / {record.model} / {record.method_record.name}"
    return f"{name}: {record.status}, test {scores or '-'} -> {record.output_dir}"


def _one_run(cfg: DictConfig) -> str:
    """One run; returns its status. In a sweep a failed cell is recorded in its result.json and
    the sweep goes on; a stop signal ends the whole sweep (its cell keeps a checkpoint). Log lines
    are written above the progress bars (tqdm.contrib.logging)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from tqdm.contrib.logging import logging_redirect_tqdm

    from zoft.run import distributed
    from zoft.run.lock import LOCKED_EXIT, RunLocked
    from zoft.run.runner import run
    from zoft.run.signals import Interrupted

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    if os.environ.get("RANK", "0") != "0":  # torchrun: ranks other than 0 log warnings only
        logging.getLogger().setLevel(logging.WARNING)
    try:
        with logging_redirect_tqdm():
            result = run(cfg)
    except Interrupted as err:  # not an Exception: a stop ends the sweep too
        log.warning("%s", err)
        sys.exit(err.exit_code)
    except RunLocked as err:  # another process runs this very cell: not a failure of it
        log.error("%s", err)
        if sweeping:
            return "locked"
        sys.exit(LOCKED_EXIT)
    except ZoftError as err:
        log.error("%s", err)
        if sweeping:
            return "failed"
        sys.exit(1)
    except Exception:
        # the traceback once, here (and in run.log); re-raising would make Hydra print it again
        log.exception("the run failed")
        if sweeping:
            return "failed"
        sys.exit(1)
    if distributed.is_main():  # a sweep's cell: one line, not a table per cell
        print(summary_line(result) if sweeping else summary_table(result), flush=True)
    return result["status"]


def _hydra_entry() -> None:
    """Hydra's main on _one_run (decorated here, not at import, so importing zoft.cli stays
    light; the task function stays a module-level one that launchers can pickle)."""
    import hydra

    hydra.main(version_base="1.3", config_path="pkg://zoft.conf", config_name="config")(_one_run)()


def quiet_libraries() -> None:
    """No transformers progress bars or warnings in a command's output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _help(args: list[str]) -> None:
    """zoft-run [overrides] --help: generated from the schemas, at the effective values."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from zoft.run.usage import run_help

    overrides = [a for a in args if not a.startswith("-")]
    try:
        text = run_help(overrides)
    except (HydraException, OmegaConfBaseException) as err:  # what check_overrides lets pass
        print(f"zoft-run: {str(err).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    print(text, end="")


def _hydra_help() -> None:
    """Hydra's own help. Hydra composes only its own config for it (no app overrides, no
    optimizer), so the methods (torch) are not imported."""
    from zoft.run.schemas import register_base_configs

    register_base_configs()
    sys.argv = [sys.argv[0], "--hydra-help"]  # Hydra refuses app overrides here
    _hydra_entry()


def run_main() -> None:
    """zoft-run: one experiment, or a sweep with -m. The command line is checked (and --help
    answered) before torch, transformers or the methods are imported."""
    from zoft.run.overrides import check_overrides

    args = sys.argv[1:]
    try:
        check_overrides(args)
    except ZoftError as err:
        print(f"zoft-run: {err}", file=sys.stderr)
        sys.exit(2)
    if set(HELP_FLAGS) & set(args):
        _help(args)
        return
    if "--hydra-help" in args:
        _hydra_help()
        return
    if "--dry-run" in args:  # list the cells (of a sweep, or the one run) and run nothing
        args = [arg for arg in args if arg != "--dry-run"]
        multirun = [] if {"-m", "--multirun"} & set(args) else ["-m"]
        sys.argv = [sys.argv[0], *multirun, *args, "hydra.sweeper.dry_run=true"]
    from zoft.run import distributed
    from zoft.run.schemas import register_configs
    from zoft.sweep.grid import sweep_failures, sweep_locked

    register_configs()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_libraries()
    _register_grid_sweeper()
    try:
        _hydra_entry()
    except KeyboardInterrupt as err:  # Ctrl-C before a run's handlers were installed or after
        from zoft.run.signals import Interrupted

        said = str(err) if isinstance(err, Interrupted) else "interrupted (Ctrl-C)"
        print(f"zoft-run: {said}; re-run the same command to go on", file=sys.stderr)
        sys.exit(err.exit_code if isinstance(err, Interrupted) else 130)
    finally:
        distributed.teardown()
    locked, failed = sweep_locked(), sweep_failures()
    if locked:
        log.warning(
            "%d cell(s) of the sweep skipped: another process is writing their run folder "
            "(re-run the same command once it is done):\n  %s",
            len(locked),
            "\n  ".join(locked),
        )
    if failed:
        log.error(
            "%d cell(s) of the sweep failed; each records why in its result.json (re-running "
            "the same command runs only what is not complete):\n  %s",
            len(failed),
            "\n  ".join(failed),
        )
        sys.exit(1)
    if locked:
        from zoft.run.lock import LOCKED_EXIT

        sys.exit(LOCKED_EXIT)


def _experiment_info(name: str) -> DictConfig:
    """The composed config of an experiment (its paper reference and results_dir)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import MissingConfigException

    from zoft.run.schemas import register_base_configs

    register_base_configs()  # no methods: their schemas would import torch
    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        try:
            # no optimizer: its schema would import the methods (torch); a table needs none
            overrides = [f"+experiment={name}", "~optimizer"]
            return compose(config_name="config", overrides=overrides)
        except MissingConfigException:
            conf = importlib.resources.files("zoft.conf") / "experiment"
            known = sorted(
                p.name[: -len(".yaml")] for p in conf.iterdir() if p.name.endswith(".yaml")
            )
            raise SystemExit(
                f"zoft-table: unknown experiment '{name}'; choose one of: {', '.join(known)}"
            ) from None


def _table_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoft-table", description=table_main.__doc__)
    parser.add_argument(
        "runs",
        type=Path,
        nargs="?",
        help="folder searched for result.json files (default: the experiment's results_dir)",
    )
    parser.add_argument(
        "--experiment",
        help="an experiment name (conf/experiment/): its paper table is printed "
        "beside ours, with the difference",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write <out>.md, .csv and .tex and the PNG plots <out>_*.png "
        "(--by run: the markdown file only)",
    )
    parser.add_argument("--title", help="a heading above the table")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 (writing no table) when any result.json is skipped: damaged (truncated, "
        "unreadable, wrong schema) or incomplete (failed, interrupted, still running)",
    )
    parser.add_argument(
        "--paper-csv",
        type=Path,
        help="the published numbers (long format; default: results/paper/paper_results.csv as "
        "installed with zoft; paper_memory.csv and paper_speed.csv are read beside it)",
    )
    parser.add_argument(
        "--by", choices=("task", "run"), default="task",
        help="task: per method and task, the best-dev grid point per seed, mean / std / 95%% CI "
        "over seeds (and the paper's numbers); run: one row per run with its training loss, time "
        "and peak memory (method comparisons)",
    )  # fmt: skip
    return parser


def _published(path: Path) -> Path:
    """A published-number table that must exist (a message, not pandas' FileNotFoundError)."""
    if not path.is_file():
        raise SystemExit(
            f"zoft-table: the published numbers {path} are missing; give --paper-csv "
            "pointing at a copy of results/paper/paper_results.csv (its siblings beside it)"
        )
    return path


def _cost_table(args: argparse.Namespace, info: DictConfig, results: list[RunResult]) -> None:
    """A memory or speed experiment: our peaks / seconds per step beside the paper's."""
    from zoft.report import costs
    from zoft.report import select as aggregate
    from zoft.report.collect import provenance

    exp = info.experiment
    build = costs.memory_table if exp.measure == "memory" else costs.speed_table
    reference = _published(args.paper_csv.with_name(f"paper_{exp.measure}.csv"))
    table = build(aggregate.runs_frame(results), reference, exp.paper, exp.table)
    title = args.title or f"{args.experiment}: ours vs {exp.paper} {exp.table}"
    line = provenance(results, "see below")
    if args.out:
        written = costs.write_cost_reports(table, args.out, title, line, exp.measure)
        print(f"wrote {', '.join(map(str, written))} ({len(results)} runs)")
    else:
        print(costs.cost_markdown(table, title, line, exp.measure), end="")


def table_main(argv: list[str] | None = None) -> None:
    """zoft-table: complete runs -> tables (markdown, csv, LaTeX) and plots, ours beside the paper."""
    from zoft.report import plots
    from zoft.report import render as reports
    from zoft.report import select as aggregate
    from zoft.report.collect import collect, methods_table, provenance
    from zoft.run.rundir import atomic_write

    parser = _table_parser()
    args = parser.parse_args(argv)
    args.paper_csv = args.paper_csv or aggregate.paper_csv()
    info = _experiment_info(args.experiment) if args.experiment else None
    runs = args.runs or (Path(info.results_dir) if info else None)
    if runs is None:
        parser.error("give a runs folder or --experiment")
    found = collect(runs)
    for skipped in found.skipped:
        print(f"zoft-table: skipped {skipped}", file=sys.stderr)
    if found.skipped:
        kinds = Counter(s.why for s in found.skipped)
        print(
            f"zoft-table: {len(found.skipped)} of {len(found.skipped) + len(found.results)} "
            f"result.json files under {runs} skipped ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"
            + ("" if args.strict else "; --strict makes this an error"),
            file=sys.stderr,
        )
        if args.strict:
            parser.exit(1, "zoft-table: --strict: no table written while runs are skipped\n")
    results = found.results
    if not results:
        parser.exit(1, f"zoft-table: no complete runs under {runs}\n")
    if args.by == "run":
        table = methods_table(results, args.title)
        if args.out:
            atomic_write(args.out, table)
            print(f"wrote {args.out} ({len(results)} runs)")
        else:
            print(table, end="")
        return
    if info is not None and info.experiment.measure in ("memory", "speed"):
        _cost_table(args, info, results)
        return
    reference, paper = None, "paper"
    if info is not None and info.experiment.paper:
        exp = info.experiment
        reference = aggregate.load_reference(
            _published(args.paper_csv), exp.paper, exp.table, exp.model, exp.setting
        )
        paper = f"{exp.paper} {exp.table} ({exp.model}{', ' + exp.setting if exp.setting else ''})"
    selected = aggregate.select_best_dev(aggregate.runs_frame(results))
    table = aggregate.beside_paper(aggregate.summarize(selected), reference)
    title = args.title or (f"{args.experiment}: ours vs {paper}" if info else str(runs))
    line = provenance(results, "see below")
    notes = aggregate.data_notes(results)
    if not args.out:
        print(reports.markdown_report(table, title, line, paper, notes), end="")
        return
    written = reports.write_reports(table, args.out, title, line, paper, notes)
    if not args.no_plots:
        written += plots.write_plots(selected, table, args.out.with_suffix(""), title)
    print(f"wrote {', '.join(map(str, written))} ({len(results)} runs)")

"""Every shipped experiment (conf/experiment/): its cell count, its blocks' configs, its paper
reference; and the SLURM / local launcher configs."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tests.conftest import REPO, compose
from zoft.report.select import load_reference
from zoft.run.checks import validate
from zoft.run.rundir import resolve_output_dir
from zoft.sweep.grid import expand_cells

EXPERIMENTS = REPO / "conf" / "experiment"
PAPER = REPO / "results" / "paper"

EXPECTED_CELLS = {
    "bf16_rounding_smollm2": 6,
    "convergence_smollm2": 20,
    "convergence_smollm2_pilot": 9,
    "lmao_memory_table3": 12,
    "lmao_opt1.3b_table2": 225,
    "lmao_opt1.3b_table10": 100,
    "lmao_opt2.7b_table8": 150,
    "lmao_opt6.7b_table9": 90,
    "lmao_roberta_k16": 270,
    "lmao_roberta_k512": 270,
    "lozo_memory_opt13b": 12,
    "lozo_memory_roberta": 5,
    "lozo_opt13b": 231,
    "lozo_opt_large": 144,
    "lozo_roberta_k16": 450,
    "mezo_memory_table22": 30,
    "mezo_opt13b_table1": 132,
    "mezo_opt_table20": 72,
    "mezo_roberta_k16": 726,
    "mezo_roberta_k512": 726,
    "mezo_speed_table23": 15,
    "mini_minilm_k16": 168,
    "mini_smollm2_table1": 126,
}
NAMES = sorted(EXPECTED_CELLS)
# zoft's own studies: no paper table to print beside them
STUDIES = {"bf16_rounding_smollm2", "convergence_smollm2", "convergence_smollm2_pilot"}
# experiments that are one run, not a sweep (the demo, tests/test_demo.py)
SINGLE_RUNS = ["demo"]
PAPER_TABLES = [name for name in NAMES if name not in STUDIES]


def _compose_with_hydra(overrides: list[str]) -> DictConfig:
    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


@functools.cache
def _sweep(name: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The experiment's sweeper params, grid blocks and sweeper target, as plain containers."""
    cfg = _compose_with_hydra([f"+experiment={name}"])
    assert cfg.hydra.mode == RunMode.MULTIRUN, name
    sweeper = cfg.hydra.sweeper
    params = OmegaConf.to_container(sweeper.params, resolve=True)
    grid = OmegaConf.to_container(sweeper.grid, resolve=True)
    return params, grid, sweeper._target_


@functools.cache
def _base(name: str) -> DictConfig:
    return compose([f"+experiment={name}"])


def _cells(name: str) -> list[list[str]]:
    params, grid, _ = _sweep(name)
    return expand_cells(params, grid)


def _value(cell: list[str], key: str) -> str | None:
    for override in cell:
        k, v = override.split("=", 1)
        if k.lstrip("+") == key:
            return v
    return None


def test_the_expected_counts_cover_exactly_the_shipped_experiments():
    assert sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")) == sorted(NAMES + SINGLE_RUNS)


@pytest.mark.parametrize("name", NAMES)
def test_cell_count(name):
    _, grid, target = _sweep(name)
    assert target == "hydra_plugins.zoft_grid.GridSweeper"
    assert grid, "an experiment lists its method blocks"
    cells = _cells(name)
    assert len(cells) == EXPECTED_CELLS[name]
    # no cell is the same set of overrides as another (written in another order)
    assert len({frozenset(cell) for cell in cells}) == len(cells)


@pytest.mark.parametrize("name", NAMES)
def test_header_comment_states_the_cell_count(name):
    header = (EXPERIMENTS / f"{name}.yaml").read_text()
    stated = re.findall(r"^# Cells: .*= (\d+)\.?\s*$", header, flags=re.MULTILINE)
    assert stated == [str(EXPECTED_CELLS[name])]


@pytest.mark.parametrize("name", NAMES)
def test_experiment_metadata(name):
    cfg = _base(name)
    exp = cfg.experiment
    assert exp.name == name
    if name in STUDIES:
        assert not exp.paper and not exp.table
        assert cfg.results_dir.startswith("runs/")
        return
    assert exp.paper and exp.table
    assert exp.measure in ("accuracy", "memory", "speed")
    assert name in cfg.results_dir or "mini" in cfg.results_dir
    assert cfg.results_dir.startswith("runs/")


def _blocks() -> list[Any]:
    """(experiment, block index) for every block of every experiment."""
    cases = []
    for name in NAMES:
        for index in range(len(_sweep(name)[1])):
            cases.append(pytest.param(name, index, id=f"{name}-block{index}"))
    return cases


@pytest.mark.parametrize(("name", "index"), _blocks())
def test_every_block_composes_and_validates(name, index):
    """The first cell of the block (of each model the block sweeps) is a valid run config."""
    params, grid, _ = _sweep(name)
    firsts: dict[str | None, list[str]] = {}
    for cell in expand_cells(params, [grid[index]]):
        firsts.setdefault(_value(cell, "model"), cell)
    assert firsts
    for cell in firsts.values():
        where = " ".join(cell)
        cfg = compose([f"+experiment={name}", *cell])
        validate(cfg)
        assert cfg.experiment.name == name, where
        for group in ("model", "task", "optimizer"):
            chosen = _value(cell, group)
            if chosen is not None:
                assert cfg[group].name == chosen, where
        out_dir = resolve_output_dir(cfg)
        assert out_dir.is_relative_to(Path(cfg.results_dir)), where
        if name in PAPER_TABLES and "rounding" in cfg.optimizer and cfg.dtype != "fp32":
            # the official code adds a ZO update to its fp16 weights with plain torch ops:
            # round to nearest, not zoft's default (auto: stochastic) (docs/fidelity.md)
            assert cfg.optimizer.rounding == "nearest", where


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_paper_reference_rows_exist(name):
    exp = _base(name).experiment
    if exp.measure == "accuracy":
        reference = load_reference(
            PAPER / "paper_results.csv", exp.paper, exp.table, exp.model, exp.setting
        )
        assert len(reference) >= 1
        assert {"method", "task", "paper"} <= set(reference.columns)
        assert reference["paper"].notna().any()  # a cell the paper did not report is NaN
        return
    rows = pd.read_csv(PAPER / f"paper_{exp.measure}.csv")
    rows = rows[(rows["paper"] == exp.paper) & (rows["table"] == exp.table)]
    assert len(rows) >= 1
    # the cost tables compare per model: we sweep exactly the paper's models
    default_model = _base(name).model.name
    ours = {_value(cell, "model") or default_model for cell in _cells(name)}
    assert ours == set(rows["model"])


def test_slurm_launcher_config():
    cfg = _compose_with_hydra(
        ["+experiment=mezo_opt13b_table1", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    )
    launcher = cfg.hydra.launcher
    # zoft's subclass of hydra-submitit-launcher's: a preempted cell checkpoints, then is requeued
    assert launcher._target_ == "hydra_plugins.zoft_grid.launchers.ZoftSlurmLauncher"
    assert launcher.max_num_timeout == 3 and launcher.signal_delay_s == 300
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.partition == "gpu"
    assert launcher.submitit_folder == "runs/mezo_opt13b_table1/.submitit/%j"
    # the launcher does not replace the experiment's grid sweeper
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.zoft_grid.GridSweeper"


def test_local_launcher_config():
    cfg = _compose_with_hydra(["hydra/launcher=local"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2
    cfg = _compose_with_hydra(["hydra/launcher=local", "hydra.launcher.n_jobs=4", "threads=1"])
    assert cfg.hydra.launcher.n_jobs == 4 and cfg.threads == 1


def test_a_task_on_the_command_line_selects_that_task_in_every_block():
    params, grid, _ = _sweep("lmao_opt1.3b_table2")
    cells = expand_cells(params, grid, ["task=cb"])
    assert all("task=cb" in cell for cell in cells)
    # 5 data seeds × (zero-shot, ICL, MeZO, FT-LoRA, LMAO): the other tasks' blocks drop out
    assert len(cells) == 25


def test_a_task_only_some_blocks_sweep_selects_just_those_blocks():
    """`task=boolq` on the mini grid runs its BoolQ cells (batch 4), not BoolQ at the shared batch."""
    params, grid, _ = _sweep("mini_smollm2_table1")
    cells = expand_cells(params, grid, ["task=boolq", "seed=2"])
    assert len(cells) == 6
    assert all({"task=boolq", "seed=2", "batch_size=4"} <= set(cell) for cell in cells)

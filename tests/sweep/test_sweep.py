"""The grid sweeper: expand_cells (union of Cartesian blocks) and zoft-run -m end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import compose
from zoft.cli import table_main
from zoft.sweep.grid import expand_cells

# --------------------------------------------------------------------------- expand_cells


def test_no_grid_is_one_cartesian_product_of_the_params():
    cells = expand_cells({"model": "a,b", "task": "sst2,rte", "seed": 3}, [])
    assert cells == [
        ["model=a", "task=sst2", "seed=3"],
        ["model=a", "task=rte", "seed=3"],
        ["model=b", "task=sst2", "seed=3"],
        ["model=b", "task=rte", "seed=3"],
    ]


def test_no_params_and_no_grid_is_one_empty_cell():
    assert expand_cells({}, []) == [[]]


def test_blocks_form_a_union_each_swept_with_the_shared_params():
    grid = [{"optimizer": "mezo", "optimizer.lr": "1e-6,1e-7"}, {"optimizer": "ft"}]
    cells = expand_cells({"seed": "0,1"}, grid)
    # Hydra's sweep parser normalizes the floats it iterates (1e-6 -> 1e-06)
    assert cells == [
        ["seed=0", "optimizer=mezo", "optimizer.lr=1e-06"],
        ["seed=0", "optimizer=mezo", "optimizer.lr=1e-07"],
        ["seed=1", "optimizer=mezo", "optimizer.lr=1e-06"],
        ["seed=1", "optimizer=mezo", "optimizer.lr=1e-07"],
        ["seed=0", "optimizer=ft"],
        ["seed=1", "optimizer=ft"],
    ]


def test_yaml_typed_values_become_hydra_overrides():
    """Blocks read from YAML hold floats, ints and booleans, not strings."""
    cells = expand_cells({"seed": 0}, [{"optimizer.lr": 3e-4, "zero_shot": True, "steps": 0}])
    assert cells == [["seed=0", "optimizer.lr=0.0003", "zero_shot=True", "steps=0"]]
    cfg = compose(["optimizer=mezo", *cells[0]])
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.zero_shot is True and cfg.steps == 0


def test_sweep_functions_expand():
    assert expand_cells({"seed": "range(0,3)", "task": "choice(cb,rte)"}, []) == [
        ["seed=0", "task=cb"],
        ["seed=0", "task=rte"],
        ["seed=1", "task=cb"],
        ["seed=1", "task=rte"],
        ["seed=2", "task=cb"],
        ["seed=2", "task=rte"],
    ]


def test_a_command_line_argument_replaces_the_shared_param_of_the_same_key():
    params = {"seed": "0,1,2", "task": "sst2,rte"}
    assert expand_cells(params, [], ["seed=5"]) == [
        ["seed=5", "task=sst2"],
        ["seed=5", "task=rte"],
    ]
    # a swept argument stays a sweep, and a new key joins every cell
    assert expand_cells(params, [{"optimizer": "ft"}], ["task=cb", "steps=2,3"]) == [
        ["seed=0", "task=cb", "steps=2", "optimizer=ft"],
        ["seed=0", "task=cb", "steps=3", "optimizer=ft"],
        ["seed=1", "task=cb", "steps=2", "optimizer=ft"],
        ["seed=1", "task=cb", "steps=3", "optimizer=ft"],
        ["seed=2", "task=cb", "steps=2", "optimizer=ft"],
        ["seed=2", "task=cb", "steps=3", "optimizer=ft"],
    ]


def test_a_block_key_replaces_the_shared_param_and_an_argument_selects_within_it():
    grid = [{"optimizer": "mezo"}, {"task": "cb,wic", "optimizer": "ft"}]
    assert expand_cells({"task": "sst2,rte"}, grid) == [
        ["task=sst2", "optimizer=mezo"],
        ["task=rte", "optimizer=mezo"],
        ["task=cb", "optimizer=ft"],
        ["task=wic", "optimizer=ft"],
    ]
    # on the command line a value the grid sweeps selects the grid's cells that have it: the
    # shared params and the blocks keep only the values both name, a block left with none is dropped
    assert expand_cells({"task": "sst2,rte"}, grid, ["task=wic"]) == [
        ["task=wic", "optimizer=ft"],
    ]
    assert expand_cells({"task": "sst2,rte"}, grid, ["task=rte"]) == [
        ["task=rte", "optimizer=mezo"],
    ]
    assert expand_cells({"task": "sst2,rte"}, grid, ["task=rte,cb"]) == [
        ["task=rte", "optimizer=mezo"],
        ["task=cb", "optimizer=ft"],
    ]
    # a value the grid lacks replaces the shared param and still selects within the blocks
    assert expand_cells({"task": "sst2,rte"}, grid, ["task=mnli,cb"]) == [
        ["task=mnli", "optimizer=mezo"],
        ["task=cb", "optimizer=mezo"],
        ["task=cb", "optimizer=ft"],
    ]


def test_duplicate_cells_are_kept_once_in_first_seen_order():
    grid = [
        {"optimizer": "mezo"},
        {"optimizer": "ft,mezo"},  # mezo again
        {"seed": 1, "optimizer": "mezo"},  # a subset of the first block
    ]
    assert expand_cells({"seed": "0,1"}, grid) == [
        ["seed=0", "optimizer=mezo"],
        ["seed=1", "optimizer=mezo"],
        ["seed=0", "optimizer=ft"],
        ["seed=1", "optimizer=ft"],
    ]


def test_plus_prefixed_keys_keep_their_prefix_and_match_the_plain_key():
    assert expand_cells({"+experiment": "x", "+extra": "1,2"}, []) == [
        ["+experiment=x", "+extra=1"],
        ["+experiment=x", "+extra=2"],
    ]
    # `+extra` and `extra` are the same key: the argument and the block replace it
    assert expand_cells({"+extra": "1,2"}, [], ["extra=3"]) == [["extra=3"]]
    assert expand_cells({"extra": "1,2"}, [{"+extra": 4}]) == [["+extra=4"]]
    # non-sweep command-line arguments ride along in every cell, prefix kept
    assert expand_cells({"task": "cb,rte"}, [], ["+experiment=e", "steps=2"]) == [
        ["task=cb", "+experiment=e", "steps=2"],
        ["task=rte", "+experiment=e", "steps=2"],
    ]


def test_a_null_block_value_composes_to_none():
    (cell,) = expand_cells({}, [{"output_dir": None}])
    assert compose(cell).output_dir is None


def test_the_same_cell_with_keys_in_another_order_is_kept_once():
    assert len(expand_cells({}, [{"a": 1, "b": 2}, {"b": 2, "a": 1}])) == 1


# --------------------------------------------------------------------------- zoft-run -m

TINY = [
    "model=tiny-opt",
    "task=sst2",
    "task.protocol=kshot",
    "task.k=16",
    "task.kshot_test_cap=32",
    "data_seed=13",
    "steps=2",
    "batch_size=4",
    "eval_batch_size=16",
]


def _zoft_run(args: list[str], data_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOFT_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from zoft.cli import run_main; run_main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _results(root: Path) -> dict[str, tuple[Path, dict]]:
    """optimizer -> (result.json path, result) of every run under root."""
    found = {}
    for path in sorted(root.rglob("result.json")):
        result = json.loads(path.read_text())
        assert result["optimizer"] not in found, f"two runs of {result['optimizer']}"
        found[result["optimizer"]] = (path, result)
    return found


def _mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("result.json")}


@pytest.fixture(scope="module")
def basic_multirun(data_dir, tmp_path_factory):
    """Hydra's basic sweeper: optimizer=mezo,ft on the tiny OPT, two cells."""
    root = tmp_path_factory.mktemp("multirun")
    runs = root / "runs"
    proc = _zoft_run(["-m", *TINY, "optimizer=mezo,ft", f"results_dir={runs}"], data_dir, root)
    return root, runs, _ok(proc)


def test_multirun_writes_one_complete_run_directory_per_cell(basic_multirun):
    _, runs, output = basic_multirun
    found = _results(runs)
    assert set(found) == {"mezo", "ft"}
    for optimizer, (path, result) in found.items():
        assert result["status"] == "complete"
        assert path.parent.parent == runs / "sst2" / "tiny-opt" / optimizer
        assert result["steps"] == 2 and result["num_test"] == 32
        assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert found["mezo"][1]["backward_passes"] == 0
    assert found["ft"][1]["backward_passes"] == 2
    assert "Launching 2 jobs locally" in output
    assert not (runs / "multirun").exists()  # Hydra's sweep folder is results_dir itself
    # the console: per cell one header and one result line, no resolved config, no table
    assert output.count("(full config: config.yaml, run.log)") == 2
    assert "resolved config" not in output and "peak RSS MiB" not in output
    assert output.count(": complete, test accuracy ") == 2


def test_zoft_table_writes_md_csv_tex_with_both_methods(basic_multirun, capsys):
    root, runs, _ = basic_multirun
    out = root / "tables" / "sst2"
    table_main([str(runs), "--out", str(out), "--no-plots"])
    assert "(2 runs)" in capsys.readouterr().out
    for suffix in (".md", ".csv", ".tex"):
        text = out.with_suffix(suffix).read_text()
        assert "MeZO" in text and "FT" in text, suffix
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert sorted(frame["method"]) == ["FT", "MeZO"]
    assert set(frame["task"]) == {"SST-2"} and list(frame["n"]) == [1, 1]
    assert not list(out.parent.glob("*.png"))  # --no-plots


def test_grid_sweeper_skips_the_cells_the_basic_sweeper_finished(basic_multirun, data_dir):
    """Same cells through `hydra/sweeper=grid`: both found complete, nothing launched."""
    root, runs, _ = basic_multirun
    before = _mtimes(runs)
    assert len(before) == 2
    args = ["-m", "hydra/sweeper=grid", *TINY, "optimizer=mezo,ft", f"results_dir={runs}"]
    output = _ok(_zoft_run(args, data_dir, root))
    assert "sweep: 2 cells, 2 complete, 0 to run" in output
    assert "Launching" not in output
    assert _mtimes(runs) == before


def test_grid_sweeper_runs_only_the_missing_cells(data_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["-m", "hydra/sweeper=grid", *TINY, "optimizer=mezo,ft", f"results_dir={runs}"]

    output = _ok(_zoft_run(args, data_dir, tmp_path))
    assert "sweep: 2 cells, 0 complete, 2 to run" in output
    found = _results(runs)
    assert {o: r["status"] for o, (_, r) in found.items()} == {"mezo": "complete", "ft": "complete"}

    before = _mtimes(runs)
    output = _ok(_zoft_run(args, data_dir, tmp_path))
    assert "sweep: 2 cells, 2 complete, 0 to run" in output
    assert _mtimes(runs) == before

    # a failed cell is run again, the complete one is left alone
    mezo_path, mezo = found["mezo"]
    ft_path = found["ft"][0]
    mezo_path.write_text(json.dumps({**mezo, "status": "failed"}))
    ft_mtime = ft_path.stat().st_mtime_ns
    output = _ok(_zoft_run(args, data_dir, tmp_path))
    assert "sweep: 2 cells, 1 complete, 1 to run" in output
    assert json.loads(mezo_path.read_text())["status"] == "complete"
    assert ft_path.stat().st_mtime_ns == ft_mtime

    # --dry-run lists both cells as done with their run directories
    listed = _ok(_zoft_run([*args, "--dry-run"], data_dir, tmp_path))
    assert "sweep: 2 cells, 2 complete, 0 to run" in listed
    lines = [line for line in listed.splitlines() if " done  " in line]
    assert len(lines) == 2
    assert {line.rsplit("-> ", 1)[1] for line in lines} == {
        str(mezo_path.parent),
        str(ft_path.parent),
    }


def test_dry_run_of_a_shipped_experiment_lists_its_cells_and_launches_nothing(data_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["+experiment=lmao_memory_table3", f"results_dir={runs}", "--dry-run"]
    proc = _zoft_run(args, data_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == "lmao_memory_table3: 12 cells, 0 complete, 12 to run"
    cells = [line for line in lines if re.match(r"^\s*\d+ todo  ", line)]
    assert len(cells) == 12
    assert [int(line.split()[0]) for line in cells] == list(range(12))
    pairs = {
        (re.search(r"task=(\S+)", line)[1], re.search(r"optimizer=(\S+)", line)[1])
        for line in cells
    }
    assert pairs == {
        (t, o) for t in ("sst2", "cb", "boolq", "copa") for o in ("mezo", "ft-lora", "lmao")
    }
    modules = {
        "mezo": "zoft.optim.mezo",
        "ft-lora": "zoft.optim.first_order",
        "lmao": "zoft.optim.lmao",
    }
    for line in cells:  # each cell names the module whose registered class runs it
        method = re.search(r"optimizer=(\S+)", line)[1]
        assert f"  [{modules[method]}]  -> " in line, line
    for line in cells:
        out_dir = Path(line.rsplit("-> ", 1)[1])
        assert out_dir.parent.parent.parent.parent == runs  # runs/task/model/method/leaf
        assert out_dir.parts[-3] == "opt-1.3b"
    assert not runs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_dry_run_of_a_single_run_lists_its_cell_and_runs_nothing(data_dir, tmp_path):
    runs = tmp_path / "runs"
    proc = _zoft_run([*TINY, f"results_dir={runs}", "--dry-run"], data_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep: 1 cells, 0 complete, 1 to run" in proc.stdout
    assert not runs.exists()


def test_joblib_launcher_runs_cells_in_parallel_processes(data_dir, tmp_path):
    runs = tmp_path / "runs"
    args = [
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.n_jobs=2",
        "threads=1",
        *TINY,
        "optimizer=mezo,ft",
        f"results_dir={runs}",
    ]
    output = _ok(_zoft_run(args, data_dir, tmp_path))
    assert "Joblib.Parallel(n_jobs=2" in output
    found = _results(runs)
    assert set(found) == {"mezo", "ft"}
    assert all(result["status"] == "complete" for _, result in found.values())


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(data_dir, tmp_path):
    """A learning rate of 1e30 makes the first cell's loss non-finite: that cell records
    its failure, the next cell still runs, and zoft-run exits 1 naming the failed cell; run
    again, only the failed cell is retried."""
    runs = tmp_path / "runs"
    args = ["-m", *TINY, "optimizer=mezo", "optimizer.lr=1e30,1e-3", f"results_dir={runs}"]
    proc = _zoft_run(args, data_dir, tmp_path)
    assert proc.returncode == 1
    assert "1 cell(s) of the sweep failed" in proc.stderr
    assert "optimizer.lr=1e+30" in proc.stderr.rsplit("failed", 1)[1]
    results = {
        json.loads(p.read_text())["hyperparameters"]["lr"]: json.loads(p.read_text())
        for p in runs.rglob("result.json")
    }
    assert results[0.001]["status"] == "complete"
    (failed,) = [r for lr, r in results.items() if lr != 0.001]
    assert failed["status"] == "failed" and "non-finite" in failed["reason"]
    again = _zoft_run(args, data_dir, tmp_path)
    assert "2 cells, 1 complete, 1 to run" in again.stdout + again.stderr

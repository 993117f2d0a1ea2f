"""Copying the small files of complete runs into a committable folder (zoft.report.summaries)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.report.test_select import REPO, run_result, write_run
from zoft.report.summaries import SUMMARY_FILES, copy_summaries, main


@pytest.fixture
def runs(tmp_path):
    """Two complete runs (one with metrics.jsonl and extra files), one failed, one running, one
    with a half-written result.json."""
    root = tmp_path / "runs"
    trained = write_run(root, run_result("sst2", "mezo", 0, test=0.8, dev=0.7), [1.0, 0.5])
    (trained / "run.log").write_text("log\n")
    (trained / "trajectory.jsonl").write_text(
        '{"step": 1, "g": [0.5], "lr": 1e-05, "skipped": false}\n'
    )
    (trained / "checkpoint.pt").write_bytes(b"\0" * 64)
    write_run(root, run_result("rte", "zero-shot", 1, test=0.6, mode="zero-shot"))
    failed = run_result("cb", "lozo", 0, test=0.1, dev=0.1, status="failed", reason="boom")
    write_run(root, failed, [2.0])
    write_run(root, run_result("copa", "mezo", 2, test=0.5, status="running"))
    broken = root / "wic" / "broken"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text('{"status": "compl')
    return root


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_copy_summaries_copies_complete_runs_only_under_the_same_relative_paths(runs, tmp_path):
    target = tmp_path / "results" / "runs"
    assert copy_summaries(runs, target) == 2
    assert _files(target) == [
        "rte/smollm2-135m/zero-shot/seed1-lr1e-05/config.yaml",
        "rte/smollm2-135m/zero-shot/seed1-lr1e-05/result.json",
        "sst2/smollm2-135m/mezo/seed0-lr1e-05/config.yaml",
        "sst2/smollm2-135m/mezo/seed0-lr1e-05/metrics.jsonl",
        "sst2/smollm2-135m/mezo/seed0-lr1e-05/result.json",
        "sst2/smollm2-135m/mezo/seed0-lr1e-05/trajectory.jsonl",  # a ZO run replays from it
    ]
    for name in SUMMARY_FILES:
        source = runs / "sst2/smollm2-135m/mezo/seed0-lr1e-05" / name
        copy = target / "sst2/smollm2-135m/mezo/seed0-lr1e-05" / name
        assert copy.read_bytes() == source.read_bytes()
    result = json.loads(
        (target / "rte/smollm2-135m/zero-shot/seed1-lr1e-05/result.json").read_text()
    )
    assert (result["status"], result["test"]) == ("complete", {"accuracy": 0.6})


def test_copy_summaries_again_overwrites_and_counts_the_same(runs, tmp_path):
    target = tmp_path / "copy"
    assert copy_summaries(runs, target) == 2
    assert copy_summaries(runs, target) == 2
    assert len(_files(target)) == 6


def test_copy_summaries_of_a_folder_without_runs_copies_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    assert copy_summaries(tmp_path / "empty", tmp_path / "target") == 0
    assert not (tmp_path / "target").exists()


def test_main_prints_the_count(runs, tmp_path, capsys):
    target = tmp_path / "target"
    main([str(runs), str(target)])
    assert capsys.readouterr().out == f"copied 2 run summaries from {runs} to {target}\n"


def test_main_refuses_a_missing_runs_folder(tmp_path):
    with pytest.raises(SystemExit) as error:
        main([str(tmp_path / "nope"), str(tmp_path / "target")])
    assert error.value.code == f"zoft.report.summaries: {tmp_path / 'nope'} is not a folder of runs"


@pytest.mark.parametrize("args", [[], ["a", "b", "c"]])
def test_module_usage_error_on_wrong_arguments(args):
    done = subprocess.run(
        [sys.executable, "-m", "zoft.report.summaries", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "usage: python -m zoft.report.summaries RUNS_DIR TARGET_DIR\n"

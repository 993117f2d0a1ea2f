"""zoft-table and damaged run folders (issue 18, item 6): every result.json it leaves out is listed
with the file and why (truncated, unreadable, wrong schema, incomplete), --strict makes that an
exit 1, and the papers' numbers ship with zoft, so --experiment works from any folder.

Before this change: a truncated result.json was dropped silently (the cell showed n=2), a
malformed one (`memory` a list) raised an AttributeError traceback naming no file, failed runs
were left out without a word, and `zoft-table --experiment X` outside the repository raised a
FileNotFoundError for results/paper/paper_results.csv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.faults.harness import Fault, check_fault
from tests.report.test_collect import bare_result
from zoft.report.collect import collect
from zoft.report.select import paper_dir

RUN_DIR = Path("runs") / "sst2" / "tiny-opt" / "mezo"


# each damaged file, beside two good runs: its folder, its bytes, and what zoft-table must say
DAMAGED = {
    "truncated": (json.dumps(bare_result(2, 0.7))[:40].encode(), "truncated"),
    "binary": (b"\x80\x81\xfe\xff\x00 not text", "unreadable (binary, not UTF-8 text"),
    "a-list": (b"[1, 2]", "wrong schema (a JSON list)"),
    "memory-a-list": (json.dumps(bare_result(3, 0.5, memory=[1, 2])).encode(), "wrong schema"),
    "seed-a-word": (json.dumps({**bare_result(4, 0.5), "seed": "x"}).encode(), "seed is 'x'"),
    "test-a-word": (json.dumps(bare_result(5, "high")).encode(), "wrong schema (test is"),
    "failed": (
        json.dumps(bare_result(6, 0.1, status="failed", reason="RuntimeError: boom")).encode(),
        "incomplete (status failed: RuntimeError: boom)",
    ),
    "no-test": (json.dumps(bare_result(7, 0.5, test=None)).encode(), "complete but no test result"),
}


def _two_good_runs(work: Path) -> None:
    for seed, accuracy in ((0, 0.8), (1, 0.9)):
        folder = work / RUN_DIR / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(bare_result(seed, accuracy)))


def _damaged(work: Path, name: str) -> None:
    folder = work / RUN_DIR / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_bytes(DAMAGED[name][0])


def _with(name: str):
    def setup(work: Path) -> None:
        _two_good_runs(work)
        _damaged(work, name)

    return setup


def _every_damaged(work: Path) -> None:
    _two_good_runs(work)
    for name in DAMAGED:
        _damaged(work, name)


FAULTS = [
    *(
        Fault(
            f"damaged-{name}",
            ("zoft-table", "runs"),
            0,
            (f"skipped {RUN_DIR / name / 'result.json'}: ", words, "n=2", "--strict"),
            intact=("runs",),
            setup=_with(name),
        )
        for name, (_, words) in DAMAGED.items()
    ),
    Fault(
        "strict",
        ("zoft-table", "runs", "--strict"),
        1,
        ("8 of 10 result.json files", "--strict: no table written"),
        intact=("runs",),
        setup=_every_damaged,
    ),
    Fault(
        "experiment-outside-the-repository",  # the work folder is a fresh temporary one
        ("zoft-table", "runs", "--experiment", "mini_smollm2_table1"),
        0,
        ("ours vs MeZO Table 1 (opt-13b)", "n=2"),
        intact=("runs",),
        setup=_two_good_runs,
    ),
    Fault(
        "memory-experiment-outside-the-repository",  # paper_memory.csv, beside it
        ("zoft-table", "runs", "--experiment", "mezo_memory_table22"),
        0,
        ("opt-66b", "2xA100"),
        setup=_two_good_runs,
    ),
    Fault(
        "paper-csv-missing",
        ("zoft-table", "runs", "--experiment", "mini_smollm2_table1", "--paper-csv", "gone.csv"),
        1,
        ("the published numbers gone.csv are missing", "--paper-csv"),
        setup=_two_good_runs,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault(fault: Fault, tmp_path: Path) -> None:
    done = check_fault(fault, tmp_path)
    if fault.name == "strict":
        assert "| MeZO |" not in done.stdout  # no table
        for name in DAMAGED:
            assert str(RUN_DIR / name / "result.json") in done.stderr


def test_collect_says_why_each_file_was_left_out(tmp_path):
    _every_damaged(tmp_path)
    found = collect(tmp_path / "runs")
    assert sorted(r.seed for r in found.results) == [0, 1]
    why = {s.path.parent.name: s.why for s in found.skipped}
    assert why == {
        "truncated": "truncated",
        "binary": "unreadable",
        "a-list": "wrong schema",
        "memory-a-list": "wrong schema",
        "seed-a-word": "wrong schema",
        "test-a-word": "wrong schema",
        "failed": "incomplete",
        "no-test": "incomplete",
    }
    assert len(found.unreadable) == 6  # the damaged ones, not the unfinished


def test_the_paper_csvs_are_read_from_the_package_folder():
    for name in ("paper_results.csv", "paper_memory.csv", "paper_speed.csv"):
        assert (paper_dir() / name).is_file()
    assert paper_dir().resolve() == (REPO / "results" / "paper").resolve()  # the one copy


def test_a_built_wheel_ships_the_paper_csvs(tmp_path):
    """Packaging, not copying: zoft.paper is results/paper/ (pyproject package-dir)."""
    source = tmp_path / "src"
    for part in ("pyproject.toml", "README.md", "zoft", "conf", "results/paper"):
        target = source / part
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / part, target)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert project["package-dir"]["zoft.paper"] == "results/paper"
    argv = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*argv, "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("zoft-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("paper_results.csv", "paper_memory.csv", "paper_speed.csv"):
        assert f"zoft/paper/{name}" in names

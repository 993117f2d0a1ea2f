"""Peak memory and seconds per step beside the papers' memory and speed tables (zoft.report.costs)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.report.test_select import REPO, run_result, write_run
from tests.run.test_memory import gpu_phase
from zoft.cli import table_main
from zoft.report.costs import cost_markdown, memory_table, speed_table, write_cost_reports
from zoft.report.select import runs_frame

MEMORY_CSV = """\
paper,table,model,setting,method,task,memory_gb,gpus,note
MeZO,Table 22,opt-1.3b,"MultiRC, nvidia-smi",zero-shot / MeZO,MultiRC,4,1xA100,
MeZO,Table 22,opt-1.3b,"MultiRC, nvidia-smi",FT,MultiRC,27,1xA100,
MeZO,Table 22,opt-2.7b,"MultiRC, nvidia-smi",zero-shot / MeZO,MultiRC,7,1xA100,
LMAO,Table 3,opt-1.3b,"peak GPU memory",MeZO,MultiRC,99,,
"""

SPEED_CSV = """\
paper,table,model,method,task,seconds_per_step,gpus,note
MeZO,Table 23,opt-1.3b,MeZO (bsz=16),MultiRC,0.8,1xA100-80GB,average over 100 steps
MeZO,Table 23,opt-1.3b,MeZO (bsz=8),MultiRC,0.45,1xA100-80GB,average over 100 steps
MeZO,Table 23,opt-1.3b,FT (bsz=8),MultiRC,0.784,1xA100-80GB,average over 100 steps
MeZO,Table 24,opt-1.3b,FT (bsz=8),MultiRC,99.0,1xA100-80GB,another table
"""


@pytest.fixture
def memory_csv(tmp_path):
    path = tmp_path / "paper_memory.csv"
    path.write_text(MEMORY_CSV)
    return path


@pytest.fixture
def speed_csv(tmp_path):
    path = tmp_path / "paper_speed.csv"
    path.write_text(SPEED_CSV)
    return path


def _memory_runs() -> list[dict]:
    """opt-1.3b on MultiRC: MeZO peaks 2048 and 3072 MiB (train phase), zero-shot 1024 MiB (eval),
    FT (LoRA) 5120 MiB; no FT run and nothing on opt-2.7b."""
    return [
        run_result("multirc", "mezo", 0, test=0.6, dev=0.5, model="opt-1.3b", train_mib=2048.0),
        run_result("multirc", "mezo", 1, test=0.6, dev=0.5, model="opt-1.3b", train_mib=3072.0),
        run_result("multirc", "zero-shot", 0, test=0.5, mode="zero-shot", model="opt-1.3b",
                   eval_mib=1024.0),
        run_result("multirc", "ft-lora", 0, test=0.7, dev=0.6, model="opt-1.3b", train_mib=5120.0),
    ]  # fmt: skip


def _speed_runs() -> list[dict]:
    """opt-1.3b on MultiRC, 100 steps: MeZO at batch 16 in 100 s and 120 s, FT at batch 8 in 200 s,
    and a zero-shot run (no steps, left out)."""
    return [
        run_result("multirc", "mezo", 0, test=0.6, model="opt-1.3b", steps=100, batch_size=16,
                   train_time_s=100.0),
        run_result("multirc", "mezo", 1, test=0.6, model="opt-1.3b", steps=100, batch_size=16,
                   train_time_s=120.0),
        run_result("multirc", "ft", 0, test=0.6, model="opt-1.3b", steps=100, batch_size=8,
                   train_time_s=200.0),
        run_result("multirc", "zero-shot", 0, test=0.5, mode="zero-shot", model="opt-1.3b"),
    ]  # fmt: skip


def _rows(table: pd.DataFrame, value: str) -> list[tuple]:
    return [
        (r.model, r.task, r.method, r.n, None if math.isnan(v) else round(v, 6),
         None if math.isnan(r.ratio) else round(r.ratio, 6))
        for r, v in zip(table.itertuples(), table[value], strict=True)
    ]  # fmt: skip


def test_memory_table_matches_zero_shot_and_mezo_to_their_shared_reference_row(memory_csv):
    table = memory_table(runs_frame(_memory_runs()), memory_csv, "MeZO", "Table 22")
    assert table.columns.tolist()[:4] == ["model", "task", "method", "n"]
    assert _rows(table, "ours_gib") == [
        ("opt-1.3b", "MultiRC", "FT", 0, None, None),  # the paper's row, no run of ours
        ("opt-1.3b", "MultiRC", "FT (LoRA)", 1, 5.0, None),  # ours, not in the paper's table
        ("opt-1.3b", "MultiRC", "MeZO", 2, 3.0, 0.75),  # the largest peak: 3072 MiB / 4 GB
        ("opt-1.3b", "MultiRC", "zero-shot", 1, 1.0, 0.25),  # eval peak: 1024 MiB / 4 GB
        ("opt-2.7b", "MultiRC", "MeZO", 0, None, None),
        ("opt-2.7b", "MultiRC", "zero-shot", 0, None, None),
    ]
    paper = table.set_index(["model", "method"])["paper_gb"]
    assert paper.loc[("opt-1.3b", "MeZO")] == 4.0  # not LMAO's 99: one paper, one table
    assert paper.loc[("opt-1.3b", "zero-shot")] == 4.0
    assert paper.loc[("opt-1.3b", "FT")] == 27.0
    assert paper.loc[("opt-2.7b", "MeZO")] == 7.0
    assert math.isnan(paper.loc[("opt-1.3b", "FT (LoRA)")])
    assert table.set_index(["model", "method"]).loc[("opt-1.3b", "MeZO"), "gpus"] == "1xA100"


def test_speed_table_labels_methods_with_their_batch_size(speed_csv):
    table = speed_table(runs_frame(_speed_runs()), speed_csv, "MeZO", "Table 23")
    assert _rows(table, "ours_s") == [
        ("opt-1.3b", "MultiRC", "FT (bsz=8)", 1, 2.0, round(2.0 / 0.784, 6)),
        ("opt-1.3b", "MultiRC", "MeZO (bsz=16)", 2, 1.1, round(1.1 / 0.8, 6)),  # mean 1.0, 1.2
        ("opt-1.3b", "MultiRC", "MeZO (bsz=8)", 0, None, None),
    ]
    mezo = table.set_index("method").loc["MeZO (bsz=16)"]
    assert mezo["ratio"] == pytest.approx(1.375)
    assert mezo["paper_s"] == 0.8
    assert mezo["gpus"] == "1xA100-80GB"


def test_cost_markdown_memory_rows_and_missing(memory_csv):
    table = memory_table(runs_frame(_memory_runs()), memory_csv, "MeZO", "Table 22")
    text = cost_markdown(table, "Memory", "4 runs.", "memory")
    lines = text.splitlines()
    assert lines[:4] == ["## Memory", "", "4 runs.", ""]
    assert lines[4] == (
        "| model | task | method | n | ours peak GiB | paper GB | paper GPUs | ours / paper |"
    )
    assert lines[6:12] == [
        "| opt-1.3b | MultiRC | FT | 0 | missing | 27.00 | 1xA100 |  |",
        "| opt-1.3b | MultiRC | FT (LoRA) | 1 | 5.00 |  |  |  |",
        "| opt-1.3b | MultiRC | MeZO | 2 | 3.00 | 4.00 | 1xA100 | 0.75 |",
        "| opt-1.3b | MultiRC | zero-shot | 1 | 1.00 | 4.00 | 1xA100 | 0.25 |",
        "| opt-2.7b | MultiRC | MeZO | 0 | missing | 7.00 | 1xA100 |  |",
        "| opt-2.7b | MultiRC | zero-shot | 0 | missing | 7.00 | 1xA100 |  |",
    ]
    assert lines[-1].startswith("Ours: the largest train-phase peak")


def test_cost_markdown_speed(speed_csv):
    table = speed_table(runs_frame(_speed_runs()), speed_csv, "MeZO", "Table 23")
    lines = cost_markdown(table, "Speed", "3 runs.", "speed").splitlines()
    assert lines[4] == (
        "| model | task | method | n | ours s / step | paper s / step | paper GPUs | ours / paper |"
    )
    assert lines[6:9] == [
        "| opt-1.3b | MultiRC | FT (bsz=8) | 1 | 2.00 | 0.78 | 1xA100-80GB | 2.55 |",
        "| opt-1.3b | MultiRC | MeZO (bsz=16) | 2 | 1.10 | 0.80 | 1xA100-80GB | 1.38 |",
        "| opt-1.3b | MultiRC | MeZO (bsz=8) | 0 | missing | 0.45 | 1xA100-80GB |  |",
    ]
    assert lines[-1].startswith("Ours: training wall time / steps")


def test_write_cost_reports_writes_markdown_and_csv(memory_csv, tmp_path):
    table = memory_table(runs_frame(_memory_runs()), memory_csv, "MeZO", "Table 22")
    paths = write_cost_reports(table, tmp_path / "out" / "memory", "Memory", "4 runs.", "memory")
    assert paths == [tmp_path / "out" / "memory.md", tmp_path / "out" / "memory.csv"]
    assert paths[0].read_text() == cost_markdown(table, "Memory", "4 runs.", "memory")
    csv = pd.read_csv(paths[1])
    assert csv["method"].tolist() == ["FT", "FT (LoRA)", "MeZO", "zero-shot", "MeZO", "zero-shot"]
    assert csv["n"].tolist() == [0, 1, 2, 1, 0, 0]
    assert csv["ours_gib"].tolist()[1:4] == [5.0, 3.0, 1.0]
    assert csv["ratio"].tolist()[2:4] == [0.75, 0.25]


def test_table_main_memory_experiment_uses_the_published_memory_table(tmp_path, capsys):
    runs = tmp_path / "runs"
    for result in _memory_runs():
        write_run(runs, result)
    paper_csv = REPO / "results" / "paper" / "paper_results.csv"  # paper_memory.csv beside it
    table_main([str(runs), "--experiment", "mezo_memory_table22", "--paper-csv", str(paper_csv)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "## mezo_memory_table22: ours vs MeZO Table 22"
    assert "| opt-1.3b | MultiRC | MeZO | 2 | 3.00 | 4.00 | 1xA100 | 0.75 |" in lines
    assert "| opt-1.3b | MultiRC | zero-shot | 1 | 1.00 | 4.00 | 1xA100 | 0.25 |" in lines
    assert "| opt-1.3b | MultiRC | FT | 0 | missing | 27.00 | 1xA100 |  |" in lines
    assert "| opt-13b | MultiRC | MeZO | 0 | missing | 26.00 | 1xA100 |  |" in lines
    assert "| opt-66b | MultiRC | FT | 0 | missing |  | 16xA100 |  |" in lines  # not reported


def test_table_main_speed_experiment_writes_out(tmp_path, capsys):
    runs = tmp_path / "runs"
    for result in _speed_runs():
        write_run(runs, result)
    paper_csv = REPO / "results" / "paper" / "paper_results.csv"
    out = tmp_path / "tables" / "speed"
    table_main([str(runs), "--experiment", "mezo_speed_table23", "--paper-csv", str(paper_csv),
                "--out", str(out)])  # fmt: skip
    assert capsys.readouterr().out == (
        f"wrote {out.with_suffix('.md')}, {out.with_suffix('.csv')} (4 runs)\n"
    )
    lines = out.with_suffix(".md").read_text().splitlines()
    # the published 0.815 s at batch 16 on opt-1.3b: 1.1 / 0.815 = 1.35
    assert "| opt-1.3b | MultiRC | MeZO (bsz=16) | 2 | 1.10 | 0.81 | 1xA100-80GB | 1.35 |" in lines
    assert "| opt-1.3b | MultiRC | FT (bsz=8) | 1 | 2.00 | 0.78 | 1xA100-80GB | 2.55 |" in lines


def test_memory_table_of_gpu_runs_shows_their_cuda_peaks(memory_csv, monkeypatch):
    """A run on GPUs, its memory recorded by the real MemoryTracker: the table shows the largest
    device's peak allocated (it showed 0 while the reader looked for a key the tracker did not
    write)."""
    on_gpus = gpu_phase(monkeypatch, [3072.0, 2048.0])
    result = run_result("multirc", "mezo", 0, test=0.6, dev=0.5, model="opt-1.3b", memory=on_gpus)
    table = memory_table(runs_frame([result]), memory_csv, "MeZO", "Table 22")
    mezo = table[(table["model"] == "opt-1.3b") & (table["method"] == "MeZO")].iloc[0]
    assert mezo["ours_gib"] == pytest.approx(3.0)
    assert "| opt-1.3b | MultiRC | MeZO | 1 | 3.00 | 4 | 1xA100 | 0.75 |" in cost_markdown(
        table, "Memory", "1 runs.", "memory"
    )

"""An aggregated comparison as markdown, csv and LaTeX (zoft.report.render)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.report.test_select import MODEL, run_result, three_seed_table1_runs
from zoft.report.render import latex_report, long_table, markdown_report, write_reports
from zoft.report.select import beside_paper, runs_frame, select_best_dev, summarize
from zoft.run.record import RunResult

NAN = math.nan
PAPER = "MeZO Table 1 (opt-13b)"
HALF_3 = 4.303 * 5.0 / math.sqrt(3)  # the 95% half-width of 3 seeds with std 5


def _reference() -> pd.DataFrame:
    """A few of MeZO Table 1's numbers; MeZO COPA and FT SST-2 have no runs of ours."""
    return pd.DataFrame(
        {
            "method": ["zero-shot", "MeZO", "MeZO", "MeZO", "FT"],
            "task": ["SST-2", "SST-2", "RTE", "COPA", "SST-2"],
            "paper": [58.8, 91.4, 66.1, 88.0, 92.0],
            "paper_std": [NAN, NAN, NAN, NAN, 1.5],
        }
    )


@pytest.fixture
def table() -> pd.DataFrame:
    """Ours: zero-shot 55 ± 5, MeZO 85 ± 5, FT (LoRA) 92 ± 2 on SST-2 (n=3); MeZO RTE 60 (n=1)."""
    summary = summarize(select_best_dev(runs_frame(three_seed_table1_runs())))
    return beside_paper(summary, _reference())


def _block(lines: list[str]) -> str:
    return "\n".join(lines)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _every_cell_row(report: str, task: str, method: str) -> list[str]:
    rows = [_cells(line) for line in report.splitlines() if line.startswith(f"| {task} |")]
    (row,) = [r for r in rows if r[2] == method]
    return row


def test_markdown_report_heading_provenance_and_ours_table(table):
    report = markdown_report(table, "Mini Table 1", "12 runs; protocol large.", PAPER)
    assert report.startswith("## Mini Table 1\n\n12 runs; protocol large.\n\n")
    assert report.endswith("Costs are means over the selected runs.\n")
    ours = [
        "| method | SST-2 | RTE | COPA |",
        "|---|---|---|---|",
        "| zero-shot | 55.0 ± 5.0 (n=3) | missing | missing |",
        "| MeZO | 85.0 ± 5.0 (n=3) | 60.0 (n=1) | missing |",
        "| FT (LoRA) | 92.0 ± 2.0 (n=3) | missing | missing |",
        "| FT | missing | missing | missing |",
    ]
    heading = "### Ours: test metric × 100 at the best-dev grid point, mean ± std over seeds"
    assert _block([heading, "", *ours]) in report


def test_markdown_report_paper_and_difference_tables(table):
    report = markdown_report(table, "Mini Table 1", "provenance", PAPER)
    paper = [
        f"### {PAPER}",
        "",
        "| method | SST-2 | RTE | COPA |",
        "|---|---|---|---|",
        "| zero-shot | 58.8 |  |  |",
        "| MeZO | 91.4 | 66.1 | 88.0 |",
        "| FT (LoRA) |  |  |  |",
        "| FT | 92.0 |  |  |",
    ]
    diff = [
        "### Ours − paper (mean difference, points)",
        "",
        "| method | SST-2 | RTE | COPA |",
        "|---|---|---|---|",
        "| zero-shot | -3.8 |  |  |",  # 55.0 − 58.8
        "| MeZO | -6.4 | -6.1 |  |",  # 85.0 − 91.4, 60.0 − 66.1; COPA: no runs, no difference
        "| FT (LoRA) |  |  |  |",
        "| FT |  |  |  |",
    ]
    assert _block(paper) in report
    assert _block(diff) in report
    assert report.index(paper[0]) < report.index(diff[0]) < report.index("### Every cell")


def test_markdown_report_every_cell_table_with_interval_and_costs(table):
    report = markdown_report(table, "Mini Table 1", "provenance", PAPER)
    assert _every_cell_row(report, "SST-2", "MeZO") == [
        "SST-2", MODEL, "MeZO", "accuracy", "3", "85.0", "5.0", "[72.6, 97.4]", "91.4", "-6.4",
        "100", "100", "1800", "1700",
    ]  # fmt: skip
    assert _every_cell_row(report, "SST-2", "zero-shot") == [
        "SST-2", MODEL, "zero-shot", "accuracy", "3", "55.0", "5.0", "[42.6, 67.4]", "58.8",
        "-3.8", "0", "0", "", "1700",
    ]  # fmt: skip
    assert _every_cell_row(report, "SST-2", "FT (LoRA)") == [
        "SST-2", MODEL, "FT (LoRA)", "accuracy", "3", "92.0", "2.0", "[87.0, 97.0]", "", "",
        "50", "50", "2000", "1700",
    ]  # fmt: skip
    assert _every_cell_row(report, "RTE", "MeZO") == [
        "RTE", MODEL, "MeZO", "accuracy", "1", "60.0", "", "", "66.1", "-6.1",
        "100", "100", "1800", "1700",
    ]  # fmt: skip
    missing = _every_cell_row(report, "COPA", "MeZO")
    assert missing[:3] == ["COPA", MODEL, "MeZO"]
    assert missing[4:] == ["0", "missing", "", "", "88.0", "", "", "", "", ""]


def test_markdown_report_paper_only_row_has_an_empty_metric_cell(table):
    report = markdown_report(table, "Mini Table 1", "provenance", PAPER)
    assert _every_cell_row(report, "COPA", "MeZO")[3] == ""


def test_markdown_report_without_paper_numbers_has_no_paper_or_difference_table(table):
    ours_only = beside_paper(table[table["n"] > 0].drop(columns=["paper", "paper_std"]), None)
    report = markdown_report(ours_only, "Ours", "provenance", "paper")
    assert "### paper" not in report
    assert "Ours − paper (mean difference" not in report
    # a method without runs on a task is missing there, even with no paper cell to compare
    assert "| FT (LoRA) | 92.0 ± 2.0 (n=3) | missing |" in report.splitlines()
    assert "| MeZO | 85.0 ± 5.0 (n=3) | 60.0 (n=1) |" in report.splitlines()
    assert _every_cell_row(report, "SST-2", "MeZO")[8:10] == ["", ""]


def test_several_models_get_one_row_per_model_and_method():
    runs = [
        run_result("sst2", "mezo", 0, test=0.9, dev=0.5, model="opt-30b"),
        run_result("sst2", "mezo", 0, test=0.8, dev=0.5, model="opt-1.3b"),
    ]
    table = beside_paper(summarize(select_best_dev(runs_frame(runs))), None)
    report = markdown_report(table, "Models", "provenance", "paper")
    assert "| opt-1.3b MeZO | 80.0 (n=1) |" in report.splitlines()
    assert "| opt-30b MeZO | 90.0 (n=1) |" in report.splitlines()
    assert report.index("| opt-1.3b MeZO |") < report.index("| opt-30b MeZO |")


def test_long_table_orders_tasks_and_methods_as_the_papers_do(table):
    scrambled = table.sample(frac=1.0, random_state=3)
    ordered = long_table(scrambled)
    assert list(zip(ordered["task"], ordered["method"], strict=True)) == [
        ("SST-2", "zero-shot"),
        ("SST-2", "MeZO"),
        ("SST-2", "FT (LoRA)"),
        ("SST-2", "FT"),
        ("RTE", "MeZO"),
        ("COPA", "MeZO"),
    ]
    assert ordered.index.tolist() == list(range(6))


def test_long_table_puts_unknown_methods_and_tasks_last():
    frame = pd.DataFrame(
        {
            "task": ["my-task", "RTE", "SST-2", "SST-2", "SST-2"],
            "model": ["m"] * 5,
            "method": ["MeZO", "MeZO", "sgd", "FT", "zero-shot"],
        }
    )
    # each row's rank as runs_frame gives it, from the run's (version 1) record
    runs = [("mezo", "fine-tune"), ("mezo", "fine-tune"), ("sgd", "fine-tune"), ("ft", "fine-tune")]
    runs.append(("ft", "zero-shot"))
    records = [RunResult.from_json({"optimizer": o, "mode": m}) for o, m in runs]
    frame["method_rank"] = [r.method_record.rank for r in records]
    ordered = long_table(frame)
    assert list(zip(ordered["task"], ordered["method"], strict=True)) == [
        ("SST-2", "zero-shot"),
        ("SST-2", "FT"),
        ("SST-2", "sgd"),
        ("RTE", "MeZO"),
        ("my-task", "MeZO"),
    ]


def test_latex_report_is_a_tabular_with_ours_std_and_paper_in_brackets(table):
    tex = latex_report(table, "MeZO 100% on sst_2 & co #1")
    assert tex.splitlines() == [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{lccc}",
        r"\toprule",
        r"method & SST-2 & RTE & COPA \\",
        r"\midrule",
        r"zero-shot & 55.0 (5.0) [58.8] &  &  \\",
        r"MeZO & 85.0 (5.0) [91.4] & 60.0 [66.1] & -- \\",
        r"FT (LoRA) & 92.0 (2.0) &  &  \\",
        r"FT & -- &  &  \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{MeZO 100\% on sst\_2 \& co \#1}",
        r"\end{table}",
    ]


def test_write_reports_writes_markdown_csv_and_latex(table, tmp_path):
    out = tmp_path / "tables" / "mini_table1"
    title = "mini_table1: 100% of MeZO Table 1"
    paths = write_reports(table, out, title, "provenance", PAPER)
    assert paths == [out.with_suffix(".md"), out.with_suffix(".csv"), out.with_suffix(".tex")]
    assert paths[0].read_text() == markdown_report(table, title, "provenance", PAPER)

    csv = pd.read_csv(paths[1])
    for column in ("task", "model", "method", "metric", "n", "mean", "std", "ci95_low",
                   "ci95_high", "paper", "paper_std", "diff", "forward_passes", "train_time_s",
                   "peak_train_mib", "peak_eval_mib"):  # fmt: skip
        assert column in csv.columns
    assert list(zip(csv["task"], csv["method"], strict=True))[:2] == [
        ("SST-2", "zero-shot"),
        ("SST-2", "MeZO"),
    ]
    mezo = csv.set_index(["task", "method"]).loc[("SST-2", "MeZO")]
    assert mezo["n"] == 3
    assert mezo["mean"] == pytest.approx(85.0)
    assert mezo["std"] == pytest.approx(5.0)
    assert mezo["ci95_low"] == pytest.approx(85.0 - HALF_3)
    assert mezo["ci95_high"] == pytest.approx(85.0 + HALF_3)
    assert mezo["paper"] == 91.4
    assert mezo["diff"] == pytest.approx(-6.4)
    rte = csv.set_index(["task", "method"]).loc[("RTE", "MeZO")]
    assert (rte["n"], rte["mean"], rte["paper"]) == (1, pytest.approx(60.0), 66.1)
    assert math.isnan(rte["std"]) and math.isnan(rte["ci95_low"])
    copa = csv.set_index(["task", "method"]).loc[("COPA", "MeZO")]
    assert copa["n"] == 0 and copa["paper"] == 88.0
    assert math.isnan(copa["mean"]) and math.isnan(copa["diff"])
    ft = csv.set_index(["task", "method"]).loc[("SST-2", "FT")]
    assert (ft["n"], ft["paper"], ft["paper_std"]) == (0, 92.0, 1.5)
    assert csv["n"].tolist() == [3, 3, 3, 0, 1, 0]

    tex = paths[2].read_text()
    assert r"\begin{tabular}{lccc}" in tex
    assert r"MeZO & 85.0 (5.0) [91.4] & 60.0 [66.1] & -- \\" in tex
    assert (
        r"\caption{mini\_table1: 100\% of MeZO Table 1. Ours: mean (std) over seeds; [paper].}"
        in tex
    )
    assert "mini_table1" not in tex.replace(r"mini\_table1", "")

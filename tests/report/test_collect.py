"""Result tables: complete runs collected from run directories, means ± std over seeds, zoft-table."""

import dataclasses
import json
import math

import pandas as pd
import pytest

from tests.report.test_select import PAPER_CSV, run_result, three_seed_table1_runs, write_run
from zoft.cli import table_main
from zoft.optim import OPTIMIZERS
from zoft.report.collect import collect_results, column_of, methods_table
from zoft.run.record import MethodRecord

NOTE = "local SST-2 is the sentence-level version"
PROVENANCE = (
    "2 runs; protocol kshot; data_seed 13; seed 0, 1; zoft 0.1.0 at commit abc123. "
    "Cells: see below."
)


def bare_result(seed: int, accuracy: float, status: str = "complete", **extra) -> dict:
    """A minimal result.json (no memory, no hyperparameters): what zoft-table needs of a run."""
    return {
        "status": status,
        "task": "sst2",
        "model": "tiny-opt",
        "optimizer": "mezo",
        "mode": "fine-tune",
        "seed": seed,
        "data_seed": 13,
        "protocol": "kshot",
        "test": {"accuracy": accuracy},
        "num_test": 872,
        "data_notes": [NOTE],
        "zoft_version": "0.1.0",
        "git_commit": "abc123",
        **extra,
    }


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    cells = {
        "seed0": bare_result(0, 0.80),
        "seed1": bare_result(1, 0.90),
        "seed2": bare_result(2, 0.10, status="failed", reason="RuntimeError: boom"),
    }
    for leaf, result in cells.items():
        folder = root / "sst2" / "tiny-opt" / "mezo" / leaf
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(result))
    (root / "sst2" / "broken").mkdir(parents=True)
    (root / "sst2" / "broken" / "result.json").write_text('{"status": "compl')  # half written
    return root


def test_collect_results_keeps_only_complete_runs(runs):
    results = collect_results(runs)
    assert sorted(r.seed for r in results) == [0, 1]
    assert all(r.status == "complete" for r in results)


def test_collect_results_records_where_each_run_is_now(runs):
    dirs = sorted(r.run_dir for r in collect_results(runs))
    assert dirs == [str(runs / "sst2" / "tiny-opt" / "mezo" / f"seed{s}") for s in (0, 1)]


def test_column_of_names_evaluation_only_modes_and_optimizers():
    assert column_of(bare_result(0, 0.5, mode="icl")) == "tiny-opt ICL"
    assert column_of(bare_result(0, 0.5, mode="zero-shot")) == "tiny-opt zero-shot"
    assert column_of(bare_result(0, 0.625, optimizer="ft")) == "tiny-opt FT"


def test_table_main_prints_the_markdown_report_without_out(runs, capsys):
    table_main([str(runs)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:3] == [f"## {runs}", "", PROVENANCE]
    assert lines[6:9] == ["| method | SST-2 |", "|---|---|", "| MeZO | 85.0 ± 7.1 (n=2) |"]
    # mean 85, sample std √50 = 7.07, 95% interval 85 ± 12.706 · √50 / √2 = 85 ± 63.53
    assert (
        "| SST-2 | tiny-opt | MeZO | accuracy | 2 | 85.0 | 7.1 | [21.5, 148.5] |  |  "
        "| 0 | 0 |  |  |"
    ) in lines
    assert "### paper" not in out and "Ours − paper" not in out  # no --experiment: no paper
    assert "10.0" not in out  # the failed run is not averaged in
    assert "Costs are means over the selected runs.\n" in out
    assert out.endswith("- **SST-2**: local SST-2 is the sentence-level version\n")


def test_table_main_title_and_evaluation_only_methods_in_the_papers_order(tmp_path, capsys):
    cells = {
        "ft": bare_result(0, 0.625, optimizer="ft"),
        "icl": bare_result(0, 0.5, mode="icl"),
        "zero-shot": bare_result(0, 0.25, mode="zero-shot"),
    }
    for leaf, result in cells.items():
        (tmp_path / leaf).mkdir()
        (tmp_path / leaf / "result.json").write_text(json.dumps(result))
    table_main([str(tmp_path), "--title", "SST-2 methods"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "## SST-2 methods"
    assert lines[6:11] == [
        "| method | SST-2 |",
        "|---|---|",
        "| zero-shot | 25.0 (n=1) |",
        "| ICL | 50.0 (n=1) |",
        "| FT | 62.5 (n=1) |",
    ]


def _table1_runs(root):
    """zero-shot / MeZO / FT (LoRA) on SST-2 over 3 seeds and MeZO on RTE, with loss logs."""
    for result in three_seed_table1_runs():
        write_run(root, result, [1.0, 0.8, 0.6, 0.5] if result["steps"] else None)
    return root


def test_table_main_writes_markdown_csv_latex_and_plots_to_out(tmp_path, capsys):
    runs = _table1_runs(tmp_path / "runs")
    table_main([str(runs)])
    printed = capsys.readouterr().out
    out = tmp_path / "tables" / "mini"
    table_main([str(runs), "--out", str(out)])
    written = [out.with_suffix(s) for s in (".md", ".csv", ".tex")]
    written += [
        tmp_path / "tables" / f"mini_{p}.png" for p in ("loss", "memory", "forwards", "time")
    ]
    assert capsys.readouterr().out == f"wrote {', '.join(map(str, written))} (13 runs)\n"
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        p.name for p in written
    )
    assert written[0].read_text() == printed  # the file is what would have been printed
    assert "| MeZO | 85.0 ± 5.0 (n=3) | 60.0 (n=1) |" in printed.splitlines()
    csv = pd.read_csv(written[1])
    assert list(zip(csv["task"], csv["method"], csv["n"], strict=True)) == [
        ("SST-2", "zero-shot", 3),
        ("SST-2", "MeZO", 3),
        ("SST-2", "FT (LoRA)", 3),
        ("RTE", "MeZO", 1),
    ]
    assert csv["mean"].round(6).tolist() == [55.0, 85.0, 92.0, 60.0]
    assert csv["std"].round(6).tolist()[:3] == [5.0, 5.0, 2.0]
    assert csv["paper"].isna().all()
    tex = written[2].read_text()
    assert r"MeZO & 85.0 (5.0) & 60.0 \\" in tex.splitlines()
    assert r"FT (LoRA) & 92.0 (2.0) &  \\" in tex.splitlines()
    for png in written[3:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_main_no_plots_writes_only_the_reports(tmp_path, capsys):
    runs = _table1_runs(tmp_path / "runs")
    out = tmp_path / "tables" / "mini"
    table_main([str(runs), "--out", str(out), "--no-plots", "--title", "Mini"])
    written = [out.with_suffix(s) for s in (".md", ".csv", ".tex")]
    assert capsys.readouterr().out == f"wrote {', '.join(map(str, written))} (13 runs)\n"
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "mini.csv",
        "mini.md",
        "mini.tex",
    ]
    assert written[0].read_text().startswith("## Mini\n")
    assert r"\caption{Mini. Ours: mean (std) over seeds; [paper].}" in written[2].read_text()


def test_table_main_experiment_puts_the_papers_numbers_beside_ours(tmp_path, capsys):
    runs = _table1_runs(tmp_path / "runs")
    table_main([str(runs), "--experiment", "mini_smollm2_table1", "--paper-csv", str(PAPER_CSV)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "## mini_smollm2_table1: ours vs MeZO Table 1 (opt-13b)"
    assert lines[2].startswith("13 runs; protocol large; data_seed 0, 1, 2; seed 0, 1, 2;")
    header = (
        "| method | SST-2 | RTE | CB | BoolQ | WSC | WiC | MultiRC | COPA | ReCoRD | SQuAD | DROP |"
    )
    assert lines.count(header) == 3  # ours, the paper's, the difference
    missing = " | ".join(["missing"] * 9)
    assert f"| MeZO | 85.0 ± 5.0 (n=3) | 60.0 (n=1) | {missing} |" in lines
    assert f"| FT | missing | missing | {missing} |" in lines  # a paper row without runs
    assert (
        "| FT (LoRA) | 92.0 ± 2.0 (n=3) |" + " missing |" * 10 in lines
    )  # no runs on the other tasks
    paper = out.split("### MeZO Table 1 (opt-13b)")[1].split("###")[0].splitlines()
    assert (
        "| MeZO | 91.4 | 66.1 | 67.9 | 67.6 | 63.5 | 61.1 | 60.1 | 88.0 | 81.7 | 84.7 | 30.9 |"
    ) in paper
    assert (
        "| zero-shot | 58.8 | 59.6 | 46.4 | 59.0 | 38.5 | 55.0 | 46.9 | 80.0 | 81.2 | 46.2 | 14.6 |"
    ) in paper
    diff = out.split("### Ours − paper (mean difference, points)")[1].split("###")[0]
    assert "| MeZO | -6.4 | -6.1 |" + "  |" * 9 in diff.splitlines()  # 85.0 − 91.4, 60.0 − 66.1
    assert "| zero-shot | -3.8 |" + "  |" * 10 in diff.splitlines()  # 55.0 − 58.8


def test_table_main_experiment_out_csv_has_the_paper_and_difference(tmp_path, capsys):
    runs = _table1_runs(tmp_path / "runs")
    out = tmp_path / "mini"
    table_main([str(runs), "--experiment", "mini_smollm2_table1", "--paper-csv", str(PAPER_CSV),
                "--out", str(out), "--no-plots"])  # fmt: skip
    assert capsys.readouterr().out.endswith("mini.tex (13 runs)\n")
    csv = pd.read_csv(out.with_suffix(".csv")).set_index(["task", "method"])
    assert len(csv) == 77 + 1  # Table 1's 7 methods × 11 tasks, and our FT (LoRA) SST-2
    mezo = csv.loc[("SST-2", "MeZO")]
    assert (mezo["n"], mezo["paper"]) == (3, 91.4)
    assert mezo["diff"] == pytest.approx(85.0 - 91.4)
    assert mezo["ci95_low"] == pytest.approx(85.0 - 4.303 * 5.0 / 3**0.5)
    drop = csv.loc[("DROP", "MeZO")]
    assert (drop["n"], drop["paper"]) == (0, 30.9)
    assert math.isnan(drop["mean"]) and math.isnan(drop["diff"])
    tex = out.with_suffix(".tex").read_text()
    assert r"\caption{mini\_smollm2\_table1: ours vs MeZO Table 1 (opt-13b)." in tex


def test_table_main_without_a_runs_folder_or_experiment_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        table_main([])
    assert exit_info.value.code == 2
    assert "give a runs folder or --experiment" in capsys.readouterr().err


def test_table_main_on_a_folder_without_runs_exits_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        table_main([str(tmp_path)])
    assert exit_info.value.code == 1
    assert "no complete runs" in capsys.readouterr().err


def _trained(tmp_path, optimizer: str, losses: list[float], **extra) -> dict:
    extra.setdefault("hyperparameters", {"lr": 1e-5, "eps": 1e-3})
    folder = tmp_path / optimizer
    folder.mkdir()
    lines = [json.dumps({"step": i + 1, "loss": loss}) for i, loss in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return bare_result(
        0,
        0.75,
        optimizer=optimizer,
        output_dir=str(folder),
        steps=len(losses),
        train_time_s=50.0,
        forward_passes=2 * len(losses),
        backward_passes=0,
        trainable_parameters=1234567,
        best_step=15,
        memory={"train": {"host_peak_rss_mib": 1940.4}, "eval": {"host_peak_rss_mib": 1650.0}},
        **extra,
    )


def test_methods_table_has_one_row_per_run_with_loss_windows_time_and_memory(tmp_path):
    losses = [1.0] * 2 + [0.5] * 16 + [0.25] * 2  # 20 steps: windows of 2 at each end
    results = [
        _trained(tmp_path, "mezo", losses),
        bare_result(
            0, 0.5, mode="zero-shot", steps=0, memory={"zero_shot": {"host_peak_rss_mib": 941}}
        ),
    ]
    rows = methods_table(results).splitlines()
    assert rows[0].startswith("2 runs;") and "one run per row" in rows[0]
    zero_shot = next(r for r in rows if "zero-shot" in r)
    mezo = next(r for r in rows if "tiny-opt MeZO" in r)
    assert rows.index(zero_shot) < rows.index(mezo)  # the papers' method order, not alphabetical
    cells = [c.strip() for c in mezo.strip("|").split("|")]
    assert cells == [
        "sst2", "tiny-opt MeZO", "lr 1e-05, eps 0.001", "1,234,567", "20", "1.000 → 0.250",
        "75.0 (15)", "40 / 0", "50", "2.50", "1940", "1650",
    ]  # fmt: skip
    assert zero_shot.rstrip(" |").endswith("941")


def test_table_main_by_run(tmp_path, capsys):
    result = _trained(tmp_path, "lozo", [1.0, 0.5])
    (tmp_path / "lozo" / "result.json").write_text(json.dumps(result))
    table_main([str(tmp_path), "--by", "run"])
    assert "| sst2 | tiny-opt LOZO | lr 1e-05, eps 0.001 |" in capsys.readouterr().out


def test_table_main_by_run_writes_the_markdown_file_only(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    result = _trained(runs, "mezo", [1.0, 0.5])
    (runs / "mezo" / "result.json").write_text(json.dumps(result))
    out = tmp_path / "tables" / "methods.md"
    table_main([str(runs), "--by", "run", "--out", str(out), "--title", "Methods"])
    assert capsys.readouterr().out == f"wrote {out} (1 runs)\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["methods.md"]
    (collected,) = collect_results(runs)
    assert out.read_text() == methods_table([collected], "Methods")
    assert out.read_text().startswith("## Methods\n\n1 runs; protocol kshot;")


def test_methods_table_accepts_a_generator():
    results = [bare_result(0, 0.8), bare_result(1, 0.9)]
    rows = methods_table(r for r in results).splitlines()
    assert rows[0].startswith("2 runs;")
    assert [r.split("|")[7].strip() for r in rows if r.startswith("| sst2 |")] == ["80.0", "90.0"]


def test_a_method_run_on_adapters_it_does_not_default_to_is_labelled():
    on_lora = bare_result(0, 0.6, optimizer="lozo", hyperparameters={"adapter": "lora"})
    own = bare_result(0, 0.6, optimizer="mezo-lora", hyperparameters={"adapter": "lora"})
    plain = bare_result(0, 0.6, optimizer="lozo", hyperparameters={"adapter": "none"})
    assert column_of(on_lora) == "tiny-opt LOZO (lora)"
    assert column_of(own) == "tiny-opt MeZO (LoRA)"
    assert column_of(plain) == "tiny-opt LOZO"


def test_settings_show_rates_and_what_differs_from_the_method_defaults(tmp_path):
    hyper = {"lr": 1e-5, "zo_lr": 1e-6, "eps": 1e-3, "gradient_checkpointing": True}
    hyper |= {"rank": 2, "lora": {"r": 4, "alpha": 16}, "steps": 5, "name": "lmao"}
    method = MethodRecord.of_facts(
        "lmao",
        OPTIMIZERS.facts("lmao").as_record(),
        dataclasses.asdict(OPTIMIZERS.config("lmao")()),
    )  # as the runner records it: the method's defaults travel with the run
    result = _trained(
        tmp_path, "lmao", [1.0], hyperparameters=hyper, method=method.to_json(), schema_version=2
    )
    row = next(r for r in methods_table([result]).splitlines() if "tiny-opt LMAO" in r)
    settings = row.split("|")[3].strip()
    assert settings == "lr 1e-05, zo_lr 1e-06, eps 0.001, gradient_checkpointing True, lora.r 4"


def test_an_unknown_experiment_names_the_known_ones():
    with pytest.raises(SystemExit, match="unknown experiment 'nope'; choose one of: .*mezo_opt13b"):
        table_main(["--experiment", "nope"])


def test_data_notes_of_the_runs_are_listed_under_the_table(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    note = "wsc: only 54 train examples (asked for 1000)"
    for seed in range(2):
        result = run_result("wsc", "mezo", seed, test=0.6, dev=0.5)
        result["data_notes"] = [note]
        write_run(root, result)
    table_main([str(root)])
    out = capsys.readouterr().out
    assert out.count(note) == 1
    assert f"- **WSC**: {note}" in out

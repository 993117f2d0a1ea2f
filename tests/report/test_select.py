"""Run results -> best-dev selection per seed, mean / std / 95% interval over seeds, the paper's
numbers beside ours (zoft.report.select). The helpers at the top write run directories the way the
runner does and are shared with the report, cost, plot, summary and table tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.run.test_memory import gpu_phase
from zoft.report.collect import collect_results
from zoft.report.select import (
    PAPER_TASK_NAMES,
    beside_paper,
    load_reference,
    method_label,
    runs_frame,
    select_best_dev,
    summarize,
    t975,
)

REPO = Path(__file__).resolve().parents[2]
PAPER_CSV = REPO / "results" / "paper" / "paper_results.csv"
MODEL = "smollm2-135m"
ADAPTERS = {"ft-lora": "lora", "mezo-lora": "lora", "lmao": "lora"}  # the methods' own adapters


def run_result(
    task: str = "sst2",
    optimizer: str = "mezo",
    seed: int = 0,
    *,
    test: float,
    dev: float | None = None,
    lr: float = 1e-5,
    mode: str = "fine-tune",
    model: str = MODEL,
    adapter: str | None = None,
    steps: int = 50,
    batch_size: int = 8,
    forward_passes: int | None = None,
    train_time_s: float = 100.0,
    train_mib: float = 1800.0,
    eval_mib: float = 1700.0,
    **extra,
) -> dict:
    """A result.json as the runner writes it: evaluation-only modes run the `ft` config for 0 steps
    and record their memory in the zero_shot / eval phases."""
    if mode != "fine-tune":
        optimizer, steps, dev, train_time_s = "ft", 0, None, 0.0
    metric = "f1" if task == "squad" else "accuracy"
    hyper = {
        "name": optimizer,
        "lr": lr,
        "adapter": adapter or ADAPTERS.get(optimizer, "none"),
        "steps": steps,
        "batch_size": batch_size,
        "eval_every": 25,
        "dtype": "fp32",
    }
    memory = {"load": {"host_peak_rss_mib": 1000.0}, "eval": {"host_peak_rss_mib": eval_mib}}
    if steps:
        memory["train"] = {"host_peak_rss_mib": train_mib}
    else:
        memory["zero_shot"] = {"host_peak_rss_mib": eval_mib}
    result = {
        "status": "complete",
        "task": task,
        "model": model,
        "optimizer": optimizer,
        "seed": seed,
        "data_seed": seed,
        "protocol": "large",
        "mode": mode,
        "hyperparameters": hyper,
        "test": {metric: test},
        "dev": {metric: dev} if dev is not None else None,
        "best_step": steps // 2,
        "steps": steps,
        "batch_size": batch_size,
        "forward_passes": 2 * steps if forward_passes is None else forward_passes,
        "backward_passes": 0,
        "train_time_s": train_time_s,
        "wall_time_s": train_time_s + 8.0,
        "memory": memory,
        "output_dir": f"runs/x/{task}/{model}/{optimizer}/seed{seed}-lr{lr:g}",
        "zoft_version": "0.1.0",
        "git_commit": "abc123",
    }
    return result | extra


def write_run(root: Path, result: dict, losses: list[float] | None = None) -> Path:
    """<root>/<task>/<model>/<method>/seed<seed>-lr<lr>/ with result.json, config.yaml and (for
    trained runs) metrics.jsonl; returns the run directory."""
    method = result["optimizer"] if result["mode"] == "fine-tune" else result["mode"]
    leaf = f"seed{result['seed']}-lr{result['hyperparameters']['lr']:g}"
    folder = Path(root) / result["task"] / result["model"] / method / leaf
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    (folder / "config.yaml").write_text(
        f"task:\n  name: {result['task']}\nseed: {result['seed']}\n"
    )
    if losses is not None:
        lines = [json.dumps({"step": i + 1, "loss": loss}) for i, loss in enumerate(losses)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def three_seed_table1_runs() -> list[dict]:
    """zero-shot, MeZO (best of two rates per seed) and FT (LoRA) on SST-2 and RTE, seeds 0-2.

    MeZO SST-2 keeps test 80 / 85 / 90 (mean 85, std 5); FT (LoRA) SST-2 keeps 90 / 92 / 94
    (mean 92, std 2); zero-shot SST-2 is 50 / 55 / 60; on RTE only MeZO seed 0 ran (60)."""
    runs = []
    for seed, (kept, other) in enumerate([(0.80, 0.99), (0.85, 0.10), (0.90, 0.95)]):
        runs.append(run_result("sst2", "mezo", seed, test=kept, dev=0.75, lr=1e-5))
        runs.append(run_result("sst2", "mezo", seed, test=other, dev=0.70, lr=1e-6))
        runs.append(
            run_result("sst2", "zero-shot", seed, test=0.50 + 0.05 * seed, mode="zero-shot")
        )
        runs.append(
            run_result("sst2", "ft-lora", seed, test=0.90 + 0.02 * seed, dev=0.9, lr=1e-4,
                       forward_passes=50, train_time_s=40.0 + 10 * seed, train_mib=2000.0)
        )  # fmt: skip
    runs.append(run_result("rte", "mezo", 0, test=0.60, dev=0.55))
    return runs


# --- t975 ----------------------------------------------------------------------------------------


def test_t975_is_the_two_sided_95_percent_student_t_quantile():
    assert t975(1) == 12.706
    assert t975(2) == 4.303
    assert t975(4) == 2.776
    assert t975(30) == 2.042
    assert t975(31) == 1.96
    assert t975(1000) == 1.96
    assert math.isnan(t975(0))


# --- method_label --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "mode", "adapter", "label"),
    [
        ("mezo", "fine-tune", "none", "MeZO"),
        ("mezo-lora", "fine-tune", "lora", "MeZO (LoRA)"),
        ("ft-lora", "fine-tune", "lora", "FT (LoRA)"),
        ("ft", "fine-tune", "none", "FT"),
        ("ft", "zero-shot", "none", "zero-shot"),
        ("ft", "icl", "none", "ICL"),
        ("lozo", "fine-tune", "lora", "LOZO (lora)"),
        ("lozo", "fine-tune", "none", "LOZO"),
        ("lozo-m", "fine-tune", None, "LOZO-M"),
        ("lmao", "fine-tune", "lora", "LMAO"),
        ("sgd", "fine-tune", "none", "sgd"),  # not registered: its own name
    ],
)
def test_method_label_uses_the_papers_names(optimizer, mode, adapter, label):
    result = {"optimizer": optimizer, "mode": mode, "hyperparameters": {"adapter": adapter}}
    assert method_label(result) == label


def test_method_label_without_mode_or_hyperparameters_is_a_fine_tune_run():
    assert method_label({"optimizer": "mezo"}) == "MeZO"


# --- runs_frame ----------------------------------------------------------------------------------


def test_runs_frame_has_one_row_per_run_with_metrics_times_100_and_peaks(monkeypatch):
    on_gpus = gpu_phase(monkeypatch, [500.0, 700.0])  # what MemoryTracker writes on 2 GPUs
    results = [
        run_result("sst2", "mezo", 1, test=0.8, dev=0.75, forward_passes=100, train_time_s=12.5),
        run_result("rte", "zero-shot", 0, test=0.5, mode="zero-shot", eval_mib=1600.0),
        run_result("squad", "ft-lora", 2, test=0.25, dev=0.5, memory=on_gpus),
    ]
    frame = runs_frame(results)
    assert frame["task"].tolist() == ["SST-2", "RTE", "SQuAD"]
    assert frame["method"].tolist() == ["MeZO", "zero-shot", "FT (LoRA)"]
    assert frame["metric"].tolist() == ["accuracy", "accuracy", "f1"]
    assert frame["seed"].tolist() == [1, 0, 2]
    assert frame["test"].tolist() == pytest.approx([80.0, 50.0, 25.0])
    assert frame["dev"].iloc[0] == pytest.approx(75.0)
    assert math.isnan(frame["dev"].iloc[1])  # evaluation-only: no dev
    assert frame["dev"].iloc[2] == pytest.approx(50.0)
    assert frame["steps"].tolist() == [50, 0, 50]
    assert frame["batch_size"].tolist() == [8, 8, 8]
    assert frame["forward_passes"].tolist() == [100, 0, 100]
    assert frame["train_time_s"].tolist() == [12.5, 0.0, 100.0]
    assert frame["peak_train_mib"].iloc[0] == 1800.0
    assert math.isnan(frame["peak_train_mib"].iloc[1])  # 0 steps: no train phase
    assert frame["peak_train_mib"].iloc[2] == 700.0  # the largest CUDA device peak

    assert frame["peak_eval_mib"].tolist()[:2] == [1700.0, 1600.0]
    assert frame["run_dir"].iloc[0] == "runs/x/sst2/smollm2-135m/mezo/seed1-lr1e-05"


def test_a_version_1_gpu_record_reads_its_allocated_peak():
    """Version 1 wrote the peak allocated as `allocated_mib` (no max_allocated_mib)."""
    cuda = {"cuda:0": {"allocated_mib": 900.0, "reserved_mib": 1024.0}}
    result = run_result("sst2", "mezo", 0, test=0.8, dev=0.7, memory={"train": {"cuda": cuda}})
    assert runs_frame([result])["peak_train_mib"].iloc[0] == 900.0


def test_runs_frame_prefers_where_the_run_is_now_over_where_it_ran(tmp_path):
    folder = write_run(tmp_path, run_result(test=0.5, dev=0.5))
    (frame_run,) = collect_results(tmp_path)
    assert runs_frame([frame_run])["run_dir"].tolist() == [str(folder)]


def test_paper_task_names_cover_the_papers_spelling():
    assert PAPER_TASK_NAMES["sst2"] == "SST-2"
    assert PAPER_TASK_NAMES["record"] == "ReCoRD"
    assert PAPER_TASK_NAMES["multirc"] == "MultiRC"
    assert PAPER_TASK_NAMES["sst5"] == "SST-5"


# --- select_best_dev -----------------------------------------------------------------------------


def _selected_tests(selected: pd.DataFrame) -> dict:
    return {(r.task, r.method, r.seed): round(r.test, 6) for r in selected.itertuples()}


def test_best_dev_grid_point_is_kept_with_its_own_test_even_when_another_tests_higher():
    runs = runs_frame(
        [
            run_result("sst2", "mezo", 0, test=0.80, dev=0.70, lr=1e-5),
            run_result("sst2", "mezo", 0, test=0.60, dev=0.75, lr=1e-6),  # best dev
            run_result("sst2", "mezo", 0, test=0.95, dev=0.60, lr=1e-7),  # best test: ignored
            run_result("sst2", "mezo", 1, test=0.70, dev=0.50, lr=1e-5),
            run_result("sst2", "mezo", 1, test=0.72, dev=0.65, lr=1e-7),  # best dev
            run_result("rte", "mezo", 0, test=0.55, dev=0.40, lr=1e-5),
            run_result("rte", "mezo", 0, test=0.65, dev=0.45, lr=1e-6),  # best dev
            run_result("sst2", "ft-lora", 0, test=0.91, dev=0.88, lr=1e-4),  # best dev
            run_result("sst2", "ft-lora", 0, test=0.99, dev=0.87, lr=5e-5),
        ]
    )
    selected = select_best_dev(runs)
    assert len(selected) == 4  # one row per (task, method, seed)
    assert _selected_tests(selected) == {
        ("RTE", "MeZO", 0): 65.0,
        ("SST-2", "FT (LoRA)", 0): 91.0,
        ("SST-2", "MeZO", 0): 60.0,
        ("SST-2", "MeZO", 1): 72.0,
    }
    chosen = selected.set_index(["task", "method", "seed"])["dev"]
    assert chosen.loc[("SST-2", "MeZO", 0)] == pytest.approx(75.0)
    lrs = {
        key: json.loads(point)["hyperparameters"]["lr"]
        for key, point in selected.set_index(["task", "method", "seed"])["grid_point"].items()
    }
    assert lrs == {
        ("RTE", "MeZO", 0): 1e-6,
        ("SST-2", "FT (LoRA)", 0): 1e-4,
        ("SST-2", "MeZO", 0): 1e-6,
        ("SST-2", "MeZO", 1): 1e-7,
    }


def test_a_dev_tie_goes_to_the_first_grid_point_in_sorted_order_whatever_the_input_order():
    first = run_result("sst2", "mezo", 0, test=0.82, dev=0.70, lr=1e-5)
    second = run_result("sst2", "mezo", 0, test=0.90, dev=0.70, lr=1e-6)
    # sorted grid points compare the JSON text: "lr": 1e-05 sorts before "lr": 1e-06
    points = runs_frame([first, second])["grid_point"].tolist()
    assert points[0] < points[1]
    for order in ([first, second], [second, first]):
        selected = select_best_dev(runs_frame(order))
        assert selected["test"].tolist() == pytest.approx([82.0])
        assert selected["grid_point"].tolist() == [points[0]]


def test_groups_without_dev_pick_the_first_grid_point_in_sorted_order_not_the_best_test():
    low = run_result("sst2", "mezo", 0, test=0.40, lr=1e-5)  # no dev: "dev": null
    high = run_result("sst2", "mezo", 0, test=0.90, lr=1e-6)
    for order in ([low, high], [high, low]):
        selected = select_best_dev(runs_frame(order))
        assert len(selected) == 1
        assert selected["test"].iloc[0] == pytest.approx(40.0)
        assert math.isnan(selected["dev"].iloc[0])


def test_a_grid_point_with_dev_beats_one_without():
    without = run_result("sst2", "mezo", 0, test=0.90, lr=1e-5)
    with_dev = run_result("sst2", "mezo", 0, test=0.30, dev=0.01, lr=1e-6)
    selected = select_best_dev(runs_frame([without, with_dev]))
    assert selected["test"].tolist() == pytest.approx([30.0])


def test_seeds_and_data_seeds_are_separate_groups():
    runs = [
        run_result("sst2", "mezo", 0, test=0.5, dev=0.5),
        run_result("sst2", "mezo", 0, test=0.6, dev=0.5, data_seed=13),
        run_result("sst2", "mezo", 1, test=0.7, dev=0.5),
    ]
    selected = select_best_dev(runs_frame(runs))
    assert sorted(selected["test"].round(6).tolist()) == [50.0, 60.0, 70.0]


def test_select_best_dev_of_no_runs_is_empty():
    assert select_best_dev(runs_frame([])).empty


# --- summarize -----------------------------------------------------------------------------------


def test_summarize_mean_sample_std_and_t_interval_over_three_seeds():
    selected = select_best_dev(runs_frame(three_seed_table1_runs()))
    summary = summarize(selected).set_index(["task", "method"])
    assert summary.loc[("SST-2", "MeZO"), "n"] == 3
    mezo = summary.loc[("SST-2", "MeZO")]
    half = 4.303 * 5.0 / math.sqrt(3)  # t(0.975, 2) · std / √n = 12.4217...
    assert mezo["mean"] == pytest.approx(85.0)
    assert mezo["std"] == pytest.approx(5.0)  # sample std (ddof=1) of 80, 85, 90
    assert mezo["ci95_low"] == pytest.approx(85.0 - half)
    assert mezo["ci95_high"] == pytest.approx(85.0 + half)
    assert mezo["ci95_low"] == pytest.approx(72.5783, abs=1e-4)
    assert mezo["metric"] == "accuracy"
    assert mezo["model"] == MODEL
    ft = summary.loc[("SST-2", "FT (LoRA)")]
    assert (ft["n"], ft["mean"], ft["std"]) == (3, pytest.approx(92.0), pytest.approx(2.0))
    assert ft["forward_passes"] == 50.0
    assert ft["train_time_s"] == pytest.approx(50.0)  # mean of 40, 50, 60
    assert ft["peak_train_mib"] == 2000.0
    zero = summary.loc[("SST-2", "zero-shot")]
    assert zero["mean"] == pytest.approx(55.0)
    assert zero["std"] == pytest.approx(5.0)
    assert math.isnan(zero["peak_train_mib"])
    assert zero["peak_eval_mib"] == 1700.0


def test_summarize_single_run_has_no_std_or_interval():
    summary = summarize(select_best_dev(runs_frame([run_result("rte", test=0.6, dev=0.5)])))
    row = summary.iloc[0]
    assert (row["task"], row["method"], row["n"]) == ("RTE", "MeZO", 1)
    assert row["mean"] == pytest.approx(60.0)
    assert math.isnan(row["std"])
    assert math.isnan(row["ci95_low"]) and math.isnan(row["ci95_high"])


def test_summarize_two_seeds_uses_t_with_one_degree_of_freedom():
    runs = [run_result("sst2", seed=s, test=t, dev=0.5) for s, t in [(0, 0.8), (1, 0.9)]]
    row = summarize(select_best_dev(runs_frame(runs))).iloc[0]
    std = math.sqrt(50.0)  # 80 and 90
    assert row["std"] == pytest.approx(std)
    # 12.706 · √50 / √2 = 12.706 · 5
    assert row["ci95_low"] == pytest.approx(85.0 - 63.53)
    assert row["ci95_high"] == pytest.approx(85.0 + 63.53)


def test_summarize_thirty_one_seeds_uses_df_30():
    runs = [run_result("sst2", seed=s, test=(0.5 if s % 2 else 0.7), dev=0.5) for s in range(31)]
    row = summarize(select_best_dev(runs_frame(runs))).iloc[0]
    values = [50.0 if s % 2 else 70.0 for s in range(31)]
    mean = sum(values) / 31
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 30)
    assert row["n"] == 31
    assert row["mean"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(std)
    assert row["ci95_high"] - row["mean"] == pytest.approx(2.042 * std / math.sqrt(31))


# --- load_reference ------------------------------------------------------------------------------


def test_load_reference_mezo_table1_opt13b():
    ref = load_reference(PAPER_CSV, "MeZO", "Table 1", "opt-13b")
    assert ref.columns.tolist() == ["method", "task", "paper", "paper_std"]
    cell = ref[(ref["method"] == "MeZO") & (ref["task"] == "SST-2")]
    assert cell["paper"].tolist() == [91.4]
    assert ref[(ref["method"] == "zero-shot") & (ref["task"] == "RTE")]["paper"].tolist() == [59.6]
    assert ref[(ref["method"] == "MeZO") & (ref["task"] == "SQuAD")]["paper"].tolist() == [84.7]
    assert len(ref) == 77  # 7 methods × 11 tasks
    assert not ref.duplicated(["method", "task"]).any()


def test_load_reference_picks_one_setting_of_table18_with_any_of_several_substrings():
    ref = load_reference(PAPER_CSV, "MeZO", "Table 18", "roberta-large", "k=16|zero-shot")
    assert len(ref) == 54  # zero-shot 6 tasks + 8 methods × 6 tasks at k=16
    mezo = ref[(ref["method"] == "MeZO") & (ref["task"] == "SST-2")]
    assert mezo[["paper", "paper_std"]].values.tolist() == [[90.5, 1.2]]
    zero = ref[(ref["method"] == "zero-shot") & (ref["task"] == "SST-2")]
    assert zero["paper"].tolist() == [79.0]
    k512 = load_reference(PAPER_CSV, "MeZO", "Table 18", "roberta-large", "k=512")
    assert k512[(k512["method"] == "MeZO") & (k512["task"] == "SST-2")]["paper"].tolist() == [93.3]


def test_load_reference_without_a_setting_refuses_several_rows_per_cell():
    with pytest.raises(ValueError, match="several rows per method, task") as error:
        load_reference(PAPER_CSV, "MeZO", "Table 18", "roberta-large")
    assert "k=16, mean (std) over data seeds" in str(error.value)
    assert "k=512, mean (std) over data seeds" in str(error.value)


def test_load_reference_without_a_model_keeps_the_model_column():
    ref = load_reference(PAPER_CSV, "MeZO", "Table 20")
    assert ref.columns.tolist() == ["model", "method", "task", "paper", "paper_std"]
    assert sorted(ref["model"].unique()) == ["opt-30b", "opt-66b"]
    by_cell = ref.set_index(["model", "method", "task"])["paper"]
    assert by_cell.loc[("opt-30b", "MeZO", "SST-2")] == 90.6
    assert by_cell.loc[("opt-66b", "MeZO", "SST-2")] == 91.2
    assert math.isnan(by_cell.loc[("opt-66b", "MeZO", "SQuAD")])  # not reported


def test_load_reference_of_an_unknown_table_is_empty():
    assert load_reference(PAPER_CSV, "MeZO", "Table 99", "opt-13b").empty


# --- beside_paper --------------------------------------------------------------------------------


def test_beside_paper_diff_missing_cells_and_cells_without_a_paper_number():
    runs = three_seed_table1_runs() + [run_result("sst2", "lozo", 0, test=0.7, dev=0.6)]
    summary = summarize(select_best_dev(runs_frame(runs)))
    reference = load_reference(PAPER_CSV, "MeZO", "Table 1", "opt-13b")
    table = beside_paper(summary, reference).set_index(["method", "task"])
    assert len(table) == 77 + 2  # every paper cell plus our FT (LoRA) and LOZO cells
    mezo = table.loc[("MeZO", "SST-2")]
    assert (mezo["n"], mezo["paper"]) == (3, 91.4)
    assert mezo["diff"] == pytest.approx(85.0 - 91.4)
    assert mezo["diff"] == mezo["mean"] - mezo["paper"]  # exactly ours − paper
    zero = table.loc[("zero-shot", "SST-2")]
    assert zero["diff"] == pytest.approx(55.0 - 58.8)
    rte = table.loc[("MeZO", "RTE")]
    assert (rte["n"], rte["mean"], rte["paper"]) == (1, pytest.approx(60.0), 66.1)
    # a paper cell without our runs: n 0, no mean (missing, never filled in)
    copa = table.loc[("MeZO", "COPA")]
    assert copa["n"] == 0
    assert math.isnan(copa["mean"]) and math.isnan(copa["std"]) and math.isnan(copa["diff"])
    assert copa["paper"] == 88.0
    assert copa["model"] == MODEL  # the reference had no model column: ours is filled in
    assert (table["n"] == 0).sum() == 77 - 3  # our 3 cells with a paper number
    # our cells without a paper number (Table 1 has no FT (LoRA) row)
    assert math.isnan(table.loc[("FT (LoRA)", "SST-2"), "paper"])
    lozo = table.loc[("LOZO", "SST-2")]
    assert (lozo["n"], lozo["mean"]) == (1, pytest.approx(70.0))
    assert math.isnan(lozo["paper"]) and math.isnan(lozo["diff"])
    assert table["n"].dtype.kind == "i"


def test_beside_paper_without_a_reference_keeps_our_cells_and_empty_paper_columns():
    summary = summarize(select_best_dev(runs_frame(three_seed_table1_runs())))
    for reference in (None, pd.DataFrame(columns=["method", "task", "paper", "paper_std"])):
        table = beside_paper(summary, reference)
        assert len(table) == 4
        assert table["n"].tolist() == summary["n"].tolist()
        assert table["paper"].isna().all() and table["paper_std"].isna().all()
        assert table["diff"].isna().all()


def test_beside_paper_matches_by_model_when_the_reference_keeps_it():
    runs = [
        run_result("sst2", "mezo", s, test=t, dev=0.5, model="opt-30b")
        for s, t in [(0, 0.9), (1, 0.92)]
    ]
    summary = summarize(select_best_dev(runs_frame(runs)))
    table = beside_paper(summary, load_reference(PAPER_CSV, "MeZO", "Table 20"))
    table = table.set_index(["model", "method", "task"])
    ours = table.loc[("opt-30b", "MeZO", "SST-2")]
    assert (ours["n"], ours["paper"]) == (2, 90.6)
    assert ours["mean"] == pytest.approx(91.0)
    assert ours["diff"] == pytest.approx(91.0 - 90.6)
    other = table.loc[("opt-66b", "MeZO", "SST-2")]
    assert (other["n"], other["paper"]) == (0, 91.2)
    assert math.isnan(other["mean"])
    assert len(table) == 48

"""The half-precision study's report: cells found in order, weight change measured against θ_0
and against the fp32 cell's update, the table's numbers, the plot written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoft.report import rounding


def _cell(
    root: Path,
    name: str,
    dtype: str,
    rounding_rule: str,
    weights: torch.Tensor,
    initial: torch.Tensor,
    lr: float = 1e-5,
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    result = {
        "status": "complete",
        "model": "tiny",
        "task": "sst2",
        "optimizer": "mezo",
        "seed": 0,
        "num_train": 8,
        "num_dev": 4,
        "num_test": 4,
        "steps": 4,
        "best_step": 4,
        "steps_below_resolution": 0 if dtype == "fp32" else 4,
        "zero_shot": {"accuracy": 0.5},
        "test": {"accuracy": 0.75},
        "hyperparameters": {
            "dtype": dtype,
            "rounding": rounding_rule,
            "lr": lr,
            "eps": 1e-3,
            "batch_size": 2,
            "steps": 4,
            "eval_every": 2,
        },
    }
    (run / "result.json").write_text(json.dumps(result))
    lines = [{"step": s, "loss": 1.0 - 0.1 * s} for s in range(1, 5)]
    lines[1]["dev_accuracy"], lines[3]["dev_accuracy"] = 0.5, 0.75
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "config.yaml").write_text("model: {}\n")
    save_file({"w": weights}, str(run / "final.safetensors"))
    save_file({"w": initial.to(weights.dtype)}, str(run / "base.safetensors"))
    return run


@pytest.fixture
def study(tmp_path):
    start = torch.tensor([1.0, 2.0, 3.0, 4.0])
    runs = tmp_path / "runs"
    moved = torch.tensor([1.0, 2.0, 3.0, 4.0 + 2**-5]).bfloat16()
    _cell(runs, "c", "bf16", "stochastic", moved, start)
    _cell(runs, "b", "bf16", "nearest", start.bfloat16(), start)
    _cell(runs, "a", "fp32", "nearest", torch.tensor([1.0, 2.0, 3.0 + 0.03, 4.0 + 0.04]), start)
    return runs


def test_safetensors_are_read_without_torch_bit_for_bit(tmp_path):
    values = torch.tensor([1.5, -2.25, 3.0e-3, 7.0])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        path = tmp_path / f"{dtype}.safetensors"
        save_file({"x": values.to(dtype).reshape(2, 2)}, str(path))
        bits, read = rounding.read_safetensors(path)["x"]
        assert read.tolist() == values.to(dtype).double().tolist()
        assert bits.itemsize == values.to(dtype).element_size()


def test_a_cell_without_its_base_weights_is_left_unmeasured(study, capsys):
    (study / "b" / "base.safetensors").unlink()
    rounding.measure_weights(rounding.find_cells(study))
    assert not (study / "b" / rounding.WEIGHT_CHANGE_FILE).exists()
    assert "zoft-replay" in capsys.readouterr().err


def test_cells_come_in_the_study_order(study):
    labels = [c.label for c in rounding.find_cells(study)]
    assert labels == ["fp32", "bf16 nearest", "bf16 stochastic"]


@pytest.fixture
def two_rates(study):
    """The study plus a lower learning rate, whose fp32 run moved half as far (0.025)."""
    start = torch.tensor([1.0, 2.0, 3.0, 4.0])
    moved = torch.tensor([1.0, 2.0, 3.0, 4.0 + 2**-5]).bfloat16()
    _cell(study, "f", "bf16", "stochastic", moved, start, lr=1e-6)
    _cell(study, "e", "bf16", "nearest", start.bfloat16(), start, lr=1e-6)
    near = torch.tensor([1.0, 2.0, 3.0 + 0.015, 4.0 + 0.02])
    _cell(study, "d", "fp32", "nearest", near, start, lr=1e-6)
    return study


def test_cells_come_by_learning_rate_then_in_the_study_order(two_rates):
    cells = rounding.find_cells(two_rates)
    assert [(c.lr, c.label) for c in cells] == [
        (1e-5, "fp32"),
        (1e-5, "bf16 nearest"),
        (1e-5, "bf16 stochastic"),
        (1e-6, "fp32"),
        (1e-6, "bf16 nearest"),
        (1e-6, "bf16 stochastic"),
    ]


def test_each_cell_is_compared_with_the_fp32_cell_of_its_learning_rate(two_rates, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    markdown, png = rounding.write_report(two_rates, out)
    assert png.stat().st_size > 0
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| 1e-0")]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| 1e-05", "fp32"],
        ["| 1e-05", "bf16 nearest"],
        ["| 1e-05", "bf16 stochastic"],
        ["| 1e-06", "fp32"],
        ["| 1e-06", "bf16 nearest"],
        ["| 1e-06", "bf16 stochastic"],
    ]
    assert rows[2].endswith("| 25.00% | 0.625 | 0.500 |")  # 2^-5 / 0.05; 2^-5 · 0.04 / 0.05²
    assert rows[5].endswith("| 25.00% | 1.250 | 1.000 |")  # 2^-5 / 0.025; 2^-5 · 0.02 / 0.025²
    assert rows[3].endswith("| 50.00% | 1.000 | 1.000 |")


def test_weight_change_counts_moved_elements_and_the_distance(study):
    rounding.measure_weights(rounding.find_cells(study))
    fp32 = json.loads((study / "a" / rounding.WEIGHT_CHANGE_FILE).read_text())
    nearest = json.loads((study / "b" / rounding.WEIGHT_CHANGE_FILE).read_text())
    stochastic = json.loads((study / "c" / rounding.WEIGHT_CHANGE_FILE).read_text())
    assert fp32["changed_fraction"] == 0.5 and fp32["step"] == 4
    assert fp32["distance"] == pytest.approx(0.05, rel=1e-5)  # float32's 3.03 and 4.04
    assert fp32["along_fp32"] == 1.0
    assert nearest == {"step": 4, "changed_fraction": 0.0, "distance": 0.0, "along_fp32": 0.0}
    assert stochastic["changed_fraction"] == 0.25
    assert stochastic["distance"] == 2**-5
    # the share of the fp32 update kept: ⟨(0, 0, 0, 2^-5), (0, 0, 0.03, 0.04)⟩ / 0.05²
    assert stochastic["along_fp32"] == pytest.approx(0.5, rel=1e-5)


def test_report_writes_the_table_the_summaries_and_the_plot(study, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    markdown, png = rounding.write_report(study, out)
    assert png.stat().st_size > 0
    text = markdown.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1e-05")]
    assert [r.split(" | ")[1] for r in rows] == ["fp32", "bf16 nearest", "bf16 stochastic"]
    assert rows[1].endswith("| 0.00% | 0.000 | 0.000 |")  # nothing moved under round-to-nearest
    assert rows[2].endswith("| 25.00% | 0.625 | 0.500 |")  # 2^-5 / 0.05
    assert "2: 0.500 · 4: 0.750" in rows[0]
    assert "4 of 4" in rows[2] and "0 of 4" in rows[0]
    # the summaries carry the weight measurements: the table rebuilds from them alone
    again = rounding.table(rounding.find_cells(out / "runs"))
    assert again.splitlines()[2:] == rows

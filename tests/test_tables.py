"""Result tables: complete runs collected from run directories, means ± std over seeds, zoft-table."""

import json

import pytest

from zoft.cli import table_main
from zoft.tables import collect_results, column_of, markdown_table, methods_table

NOTE = "local SST-2 is the sentence-level version"


def _result(seed: int, accuracy: float, status: str = "complete", **extra) -> dict:
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
        "seed0": _result(0, 0.80),
        "seed1": _result(1, 0.90),
        "seed2": _result(2, 0.10, status="failed", reason="RuntimeError: boom"),
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
    assert sorted(r["seed"] for r in results) == [0, 1]
    assert all(r["status"] == "complete" for r in results)


def test_markdown_table_shows_mean_std_size_and_notes(runs):
    table = markdown_table(collect_results(runs), "SST-2")
    assert table.startswith("## SST-2\n")
    assert "2 runs; protocol kshot; data_seed 13; seed 0, 1" in table
    assert "| task | metric | test examples | tiny-opt mezo |" in table.splitlines()
    assert "| sst2 | accuracy | 872 | 85.0 ± 7.1 (n=2) |" in table.splitlines()
    assert f"- **sst2**: {NOTE}" in table.splitlines()
    assert "10.0" not in table  # the failed run is not averaged in


def test_single_run_cells_and_evaluation_only_columns():
    results = [_result(0, 0.5, mode="icl"), _result(0, 0.625, optimizer="ft")]
    assert column_of(results[0]) == "tiny-opt icl"
    assert column_of(results[1]) == "tiny-opt ft"
    table = markdown_table(results)
    assert "| sst2 | accuracy | 872 | 62.5 | 50.0 |" in table.splitlines()  # columns sorted


def test_markdown_table_accepts_a_generator():
    results = [_result(0, 0.8), _result(1, 0.9)]
    assert "2 runs;" in markdown_table(r for r in results)


def test_table_main_writes_the_table_to_out(runs, tmp_path, capsys):
    out = tmp_path / "tables" / "sst2.md"
    table_main([str(runs), "--out", str(out), "--title", "SST-2"])
    assert out.read_text() == markdown_table(collect_results(runs), "SST-2")
    assert f"wrote {out} (2 runs)" in capsys.readouterr().out


def test_table_main_prints_to_stdout_without_out(runs, capsys):
    table_main([str(runs)])
    assert capsys.readouterr().out == markdown_table(collect_results(runs))


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
    return _result(
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
        _result(
            0, 0.5, mode="zero-shot", steps=0, memory={"zero_shot": {"host_peak_rss_mib": 941}}
        ),
    ]
    rows = methods_table(results).splitlines()
    assert rows[0].startswith("2 runs;") and "one run per row" in rows[0]
    zero_shot = next(r for r in rows if "zero-shot" in r)
    mezo = next(r for r in rows if "tiny-opt mezo" in r)
    assert rows.index(zero_shot) < rows.index(mezo)  # the papers' method order, not alphabetical
    cells = [c.strip() for c in mezo.strip("|").split("|")]
    assert cells == [
        "sst2", "tiny-opt mezo", "lr 1e-05, eps 0.001", "1,234,567", "20", "1.000 → 0.250",
        "75.0 (15)", "40 / 0", "50", "2.50", "1940", "1650",
    ]  # fmt: skip
    assert zero_shot.rstrip(" |").endswith("941")


def test_table_main_by_run(tmp_path, capsys):
    result = _trained(tmp_path, "lozo", [1.0, 0.5])
    (tmp_path / "lozo" / "result.json").write_text(json.dumps(result))
    table_main([str(tmp_path), "--by", "run"])
    assert "| sst2 | tiny-opt lozo | lr 1e-05, eps 0.001 |" in capsys.readouterr().out


def test_a_method_run_on_adapters_it_does_not_default_to_is_labelled():
    on_lora = _result(0, 0.6, optimizer="lozo", hyperparameters={"adapter": "lora"})
    own = _result(0, 0.6, optimizer="mezo-lora", hyperparameters={"adapter": "lora"})
    plain = _result(0, 0.6, optimizer="lozo", hyperparameters={"adapter": "none"})
    assert column_of(on_lora) == "tiny-opt lozo (lora)"
    assert column_of(own) == "tiny-opt mezo-lora"
    assert column_of(plain) == "tiny-opt lozo"


def test_settings_show_rates_and_what_differs_from_the_method_defaults(tmp_path):
    hyper = {"lr": 1e-5, "zo_lr": 1e-6, "eps": 1e-3, "gradient_checkpointing": True}
    hyper |= {"rank": 2, "lora": {"r": 4, "alpha": 16}, "steps": 5, "name": "lmao"}
    result = _trained(tmp_path, "lmao", [1.0], hyperparameters=hyper)
    row = next(r for r in methods_table([result]).splitlines() if "tiny-opt lmao" in r)
    settings = row.split("|")[3].strip()
    assert settings == "lr 1e-05, zo_lr 1e-06, eps 0.001, gradient_checkpointing True, lora.r 4"

"""Issue 18, part D: a real `zoft-run --help`, a start-up that imports no torch before it must,
and a quiet console (one header per run, no WARNING for normal events, the real thread count)."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, compose
from tests.faults.harness import Fault, check_fault, run_command
from zoft.config import GuardConfig, OptimizerConfig, ZoftConfig
from zoft.models.loading import gguf_note
from zoft.optim.configs import MezoConfig
from zoft.run.rundir import config_digest
from zoft.run.usage import field_docs, run_help, run_keys
from zoft.tasks.base import Example
from zoft.tasks.sampling import DataWarning, large_model_split

# Each case fails on the code before issue 18: `--help` printed Hydra's boilerplate (the config
# as YAML, schema/* groups, no flags, no descriptions, no per-option keys).
FAULTS = [
    Fault(
        "help-lists-groups-keys-flags-and-examples",
        ("zoft-run", "--help"),
        0,
        (
            "--dry-run",
            "--hydra-help",
            "hydra/launcher",
            "submitit_slurm",
            "steps=40",
            "noise / training-order seed",
            "smollm2-135m*",
            "Examples:",
        ),
    ),  # fmt: skip
    Fault(
        "help-shows-the-values-of-the-overrides-given",
        ("zoft-run", "model=tiny-opt", "steps=3", "--help"),
        0,
        ("steps=3", "Keys of model=tiny-opt", "model.tiny.hidden_size=64", "model.max_length=256"),
    ),
    Fault(
        "help-of-a-sweep-shows-its-first-cell",
        ("zoft-run", "-m", "seed=3,4", "--help"),
        0,
        ("seed=3 ", "Values below are those of: seed=3,4"),
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault(fault: Fault, tmp_path: Path) -> None:
    check_fault(fault, tmp_path)


def test_help_hides_the_schema_groups_and_keeps_hydras_own(tmp_path: Path) -> None:
    ours = check_fault(Fault("help", ("zoft-run", "--help"), 0, ()), tmp_path)
    assert "schema/" not in ours.stdout and "Powered by Hydra" not in ours.stdout
    hydra = check_fault(
        Fault("hydra-help", ("zoft-run", "--hydra-help"), 0, ("Hydra (",)), tmp_path
    )
    assert "--cfg" in hydra.stdout


def test_every_run_level_key_is_in_the_help_with_its_effective_default_and_a_description():
    """Generated from the schema: a key added to ZoftConfig or GuardConfig shows up (and must be
    documented by a comment); the value is the composed one (steps=40), not the schema's (100)."""
    cfg = compose([])
    text = run_help([])
    nested = {"guard": GuardConfig}
    skipped = {"model", "task", "optimizer", "logger", "experiment"}
    expected = []
    for f in dataclasses.fields(ZoftConfig):
        if f.name in skipped:
            continue
        if f.name in nested:
            expected += [f"{f.name}.{g.name}" for g in dataclasses.fields(nested[f.name])]
        else:
            expected.append(f.name)
    keys = {k.key: k for k in run_keys(cfg)}
    assert sorted(keys) == sorted(expected)
    for name in expected:
        assert f"  {name}={keys[name].value}" in text, name
        assert keys[name].description, f"{name} has no comment in zoft/config.py"
    assert keys["steps"].value == "40" and keys["data_seed"].value == "13"  # conf/config.yaml's
    assert keys["output_dir"].value == "null" and keys["zero_shot"].value == "true"
    assert "(one of fp32, bf16, fp16)" in keys["dtype"].description


def test_descriptions_come_from_the_schemas_comments_and_are_inherited():
    docs = field_docs(OptimizerConfig)
    assert docs["adapter"].startswith('what is trained: "none" = the model\'s own parameters')
    assert docs["lr"] == "learning rate η"
    mezo = field_docs(MezoConfig)  # redefines lr and eps without a comment: the base's words
    assert mezo["lr"] == "learning rate η" and mezo["eps"].startswith("ε:")
    assert "(one of auto, paired, sequential)" in mezo["probes"]


def test_help_in_process_matches_the_composed_config():
    text = run_help(["task=rte", "batch_size=4"])
    assert "  batch_size=4 " in text and "rte*" in text and "Keys of task=rte" in text
    assert "task.num_train=1000" in text


def test_help_with_an_optimizer_lists_its_keys_from_its_schema():
    """In process (torch is loaded here anyway): naming the optimizer composes its schema."""
    text = run_help(["optimizer=lozo"])
    assert "Keys of optimizer=lozo:" in text and "lozo*" in text
    assert "optimizer.rank=2" in text and "columns of U and V" in text
    assert "optimizer.eps=0.001" in text and "optimizer.lora.r=8" in text


IMPORT_CHECK = """
import sys
{code}
heavy = sorted(m for m in ("torch", "transformers", "tabulate", "pandas") if m in sys.modules)
print("HEAVY", heavy)
"""


def _heavy_modules(code: str, tmp_path: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(code=code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("HEAVY")]
    return json.loads(line.removeprefix("HEAVY ").replace("'", '"'))


def test_importing_zoft_cli_loads_no_torch_transformers_tabulate_or_hydra(tmp_path: Path):
    assert _heavy_modules("import zoft.cli\nassert 'hydra' not in sys.modules", tmp_path) == []


@pytest.mark.parametrize("argv", [["--help"], ["stpes=3"], ["optimizer=mezzo"]])
def test_help_and_a_bad_override_answer_before_torch_is_imported(argv, tmp_path: Path):
    code = (
        "from zoft.cli import run_main\n"
        f"sys.argv = ['zoft-run', *{argv!r}]\n"
        "try:\n    run_main()\nexcept SystemExit as exit:\n    assert exit.code == 2, exit.code"
    )
    assert _heavy_modules(code, tmp_path) == []


def test_a_bad_override_exits_2_naming_the_key(tmp_path: Path):
    done = run_command(["zoft-run", "stpes=3"], tmp_path)
    assert done.returncode == 2 and "Did you mean 'steps'" in done.stderr


def test_a_run_shows_one_header_not_its_config_and_records_its_threads(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before issue 18: ~90 lines of resolved config on the console, 'ready LM-BFF split' as a
    WARNING, and the thread count read before `threads` took effect (2 for threads=1)."""
    from zoft.run.runner import run

    cfg = compose(
        ["model=tiny-opt", "optimizer=mezo", "steps=2", "threads=1", "task.kshot_test_cap=16",
         "eval_batch_size=16", f"task.data_dir={data_dir}", f"results_dir={tmp_path}"]
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as torch starts on this 2-core machine without OMP_NUM_THREADS
    try:
        with caplog.at_level(logging.INFO):
            result = run(cfg)
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "complete"
    console = [r.getMessage() for r in caplog.records]
    assert not any("resolved config" in m for m in console)
    (header,) = [m for m in console if m.startswith("sst2 / tiny-opt / mezo: ")]
    assert "lr 1e-06, eps 0.001" in header and "steps 2, batch 8" in header
    assert f"-> {result['output_dir']}" in header
    assert len(header.splitlines()) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    run_log = (Path(result["output_dir"]) / "run.log").read_text()
    assert "resolved config:\nmodel:\n  name: tiny-opt" in run_log and "optimizer:" in run_log
    assert result["torch_threads"] == 1 and "1 torch threads" in result["device_name"]
    written = json.loads((Path(result["output_dir"]) / "result.json").read_text())
    assert written["torch_threads"] == 1


def test_only_notes_that_ask_for_action_are_warnings(caplog: pytest.LogCaptureFixture):
    from zoft.tasks import get_task
    from zoft.tasks.sampling import _log_notes

    pool = [Example(fields={"i": i}, label=0) for i in range(60)]
    *_, notes = large_model_split(pool, pool[:10], 54, 500, 1000, seed=0)  # WSC-like
    assert any(isinstance(n, DataWarning) for n in notes)  # too few train: lower task.num_dev
    with caplog.at_level(logging.INFO, logger="zoft.tasks.sampling"):
        _log_notes(get_task("sst2"), [*notes, "ready LM-BFF split k-shot/SST-2/16-13"])
    levels = {r.getMessage().split(": ", 1)[1][:20]: r.levelname for r in caplog.records}
    assert levels["ready LM-BFF split k"] == "INFO"
    assert levels["test capped by the v"] == "INFO"  # the protocol's usual cap
    assert "WARNING" in levels.values()


def test_the_packaged_gguf_is_disclosed_as_a_quantisation_in_model_notes(monkeypatch):
    monkeypatch.setenv("ZOFT_DATA", "/data")  # the digest's data origin: local, as the demo's
    note = gguf_note("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "Q4_1 GGUF quantisation" in note and "dequantised" in note
    assert "quantisation" not in gguf_note("model.gguf")
    # model_notes come from the loader, not the config: the demo's pinned digest is unchanged
    assert config_digest(compose([])) == "7795f2a5fe"

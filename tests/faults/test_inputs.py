"""Bad inputs (issue 18, items 4 and 5): every numeric key has a range, checked before anything
is loaded, and every expected failure is a message naming the key or file, never a traceback.

Before this change: optimizer.lr=-1 trained to a loss of 17391 and ended "complete"; LOZO's
rank=100000 ran 350x slower without a word; model.max_length=0 was ignored; a binary data file
raised a UnicodeDecodeError naming no file; `zoft-bench --batch 0` a RuntimeError; model.path at
a text file gave hub advice, at an empty folder "need sentencepiece"; `optimizer=ft
optimizer.rank=4` got Hydra's "use +optimizer.rank", after which the key was accepted and
ignored; `hydra/launcher=slrum` suggested nothing; messages quoted schema defaults (steps=100
where the default run has 40); and an unexpected failure printed its traceback twice.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, REPO, compose, tiny
from tests.faults.harness import Fault, check_fault
from zoft.config import (
    GuardConfig,
    LoraConfig,
    ModelConfig,
    TaskConfig,
    TinyConfig,
    ZoftConfig,
    field_range,
)
from zoft.errors import RunConfigError
from zoft.optim import OPTIMIZERS
from zoft.run import runner
from zoft.run.checks import check_ranks, validate
from zoft.run.overrides import OverrideError, check_overrides

# (overrides, the key named, what it must be): refused on the command line (exit 2) and, for a
# value from a YAML or an experiment, by validate before any data or model is loaded
RANGES = [
    (["optimizer=mezo", "optimizer.lr=-1"], "optimizer.lr=-1.0", "> 0"),
    (["optimizer=ft", "optimizer.lr=0"], "optimizer.lr=0.0", "> 0"),
    (["optimizer=lmao", "optimizer.zo_lr=-1e-6"], "optimizer.zo_lr=-1e-06", "> 0"),
    (["optimizer=mezo", "optimizer.eps=0"], "optimizer.eps=0.0", "> 0"),
    (["optimizer=lmao", "optimizer.eps=0"], "optimizer.eps=0.0", "> 0"),
    (["optimizer=ft", "optimizer.adam_eps=0"], "optimizer.adam_eps=0.0", "> 0"),
    (["optimizer=mezo", "optimizer.queries=0"], "optimizer.queries=0", ">= 1"),
    (["optimizer=mezo", "optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1", ">= 0"),
    (["optimizer=mezo", "optimizer.micro_batches=0"], "optimizer.micro_batches=0", ">= 1"),
    (["optimizer=lozo", "optimizer.rank=0"], "optimizer.rank=0", ">= 1"),
    (["optimizer=lozo", "optimizer.interval=0"], "optimizer.interval=0", ">= 1"),
    (["optimizer=lozo-m", "optimizer.beta=1"], "optimizer.beta=1.0", "in [0, 1)"),
    (["optimizer=ft", "optimizer.beta2=1"], "optimizer.beta2=1.0", "in [0, 1)"),
    (["optimizer=ft", "optimizer.warmup_steps=-1"], "optimizer.warmup_steps=-1", ">= 0"),
    (["optimizer=ft-lora", "optimizer.lora.r=0"], "optimizer.lora.r=0", ">= 1"),
    (["optimizer=ft-lora", "optimizer.lora.dropout=1"], "optimizer.lora.dropout=1.0", "in [0, 1)"),
    (["optimizer=lmao", "optimizer.lora_steps=0"], "optimizer.lora_steps=0", ">= 1"),
    (["model.max_length=0"], "model.max_length=0", ">= 2"),
    (["model.max_length=1"], "model.max_length=1", ">= 2"),
    (["model.tiny.num_heads=0"], "model.tiny.num_heads=0", ">= 1"),
    (["steps=-1"], "steps=-1", ">= 0"),
    (["batch_size=0"], "batch_size=0", ">= 1"),
    (["eval_batch_size=0"], "eval_batch_size=0", ">= 1"),
    (["eval_every=-1"], "eval_every=-1", ">= 0"),
    (["log_every=0"], "log_every=0", ">= 1"),
    (["checkpoint_every=-1"], "checkpoint_every=-1", ">= 0"),
    (["threads=-1"], "threads=-1", ">= 0"),
    (["icl_demos=-1"], "icl_demos=-1", ">= 0"),
    (["seed=-1"], "seed=-1", "in [0, 4294967295]"),
    (["data_seed=4294967296"], "data_seed=4294967296", "in [0, 4294967295]"),
    (["task.num_train=-1"], "task.num_train=-1", ">= 0"),
    (["task.num_dev=-1"], "task.num_dev=-1", ">= 0"),
    (["task.num_eval=0"], "task.num_eval=0", ">= 1"),
    (["task.k=0"], "task.k=0", ">= 1"),
    (["task.kshot_test_cap=0"], "task.kshot_test_cap=0", ">= 1"),
    (["guard.divergence=-1"], "guard.divergence=-1.0", ">= 0"),
]


def _message(key: str, valid: str) -> str:
    return f"{key} is out of range: it must be {valid}"


@pytest.mark.parametrize("overrides,key,valid", RANGES)
def test_a_value_out_of_range_is_refused_on_the_command_line(overrides, key, valid):
    with pytest.raises(OverrideError, match=re.escape(_message(key, valid))):
        check_overrides(overrides)


@pytest.mark.parametrize("overrides,key,valid", RANGES)
def test_a_value_out_of_range_is_refused_before_loading(overrides, key, valid, monkeypatch):
    """The same rule for values the command line does not check (YAMLs, experiment grids)."""

    def unreachable(*args, **kwargs):
        raise AssertionError("loaded before the range check")

    monkeypatch.setattr(runner, "load_splits", unreachable)
    monkeypatch.setattr(runner, "load_model", unreachable)
    with pytest.raises(RunConfigError, match=re.escape(_message(key, valid))):
        validate(compose(["model=tiny-opt", *overrides]))


def _schemas() -> list[type]:
    methods = [OPTIMIZERS.config(name) for name in OPTIMIZERS]
    return [ZoftConfig, ModelConfig, TinyConfig, TaskConfig, LoraConfig, GuardConfig, *methods]


def test_every_numeric_key_declares_its_range():
    """Declared once on the field; a new numeric key without one fails here."""
    numeric = (int, float, int | None, float | None)
    unbounded = [
        f"{schema.__name__}.{name}"
        for schema in _schemas()
        for name, hint in typing.get_type_hints(schema).items()
        if hint in numeric and field_range(schema, name) is None
    ]
    assert unbounded == []


def test_learning_rates_and_eps_are_strictly_positive():
    names = [
        (schema, f.name)
        for schema in _schemas()
        for f in dataclasses.fields(schema)
        if f.name in ("lr", "eps") or f.name.endswith(("_lr", "_eps"))
    ]
    assert len(names) >= 10
    for schema, name in names:
        valid = field_range(schema, name)
        assert valid is not None and 0.0 not in valid and 1e-12 in valid, (schema, name)


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["optimizer=lozo", "optimizer.rank=65"], "optimizer.rank=65 is out of range: it must be in [1, 64]"),
        (
            ["optimizer=lmao", "optimizer.directions=lowrank", "optimizer.rank=100000"],
            "optimizer.rank=100000 is out of range: it must be in [1, 64]",
        ),
        (["optimizer=ft-lora", "optimizer.lora.r=65"], "optimizer.lora.r=65 is out of range: it must be in [1, 64]"),
        (["optimizer=mezo-lora", "optimizer.lora.r=100"], "smallest LoRA target"),
    ],
)  # fmt: skip
def test_a_rank_above_the_models_matrices_is_refused_once_it_is_loaded(overrides, words):
    cfg = compose(["model=tiny-opt", *overrides])
    validate(cfg)  # no shapes yet: the range check alone passes
    with pytest.raises(RunConfigError, match=re.escape(words)):
        check_ranks(cfg, tiny("opt").model)


@pytest.mark.parametrize(
    "arch,overrides",
    [
        ("opt", ["optimizer=lozo", "optimizer.rank=64"]),  # the hidden size: every matrix allows it
        ("opt", ["optimizer=ft-lora", "optimizer.lora.r=64"]),
        # the LOZO papers' RoBERTa rank 4: a 2×64 token-type embedding merely gets a full-rank z
        ("roberta", ["optimizer=lozo", "optimizer.rank=4"]),
    ],
)
def test_ranks_the_matrices_allow_pass(arch, overrides):
    check_ranks(compose([f"model=tiny-{arch}", *overrides]), tiny(arch).model)


def test_a_rank_error_comes_before_any_evaluation(tmp_path, data_dir, caplog):
    cfg = compose(
        [
            "model=tiny-opt",
            "optimizer=lozo",
            "optimizer.rank=100000",
            "steps=2",
            f"task.data_dir={data_dir}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    with caplog.at_level("INFO"), pytest.raises(RunConfigError, match="optimizer.rank=100000"):
        runner.run(cfg)
    assert "zero-shot evaluation" not in caplog.text


def _binary_train_file(work: Path) -> None:
    split = work / "data" / "k-shot" / "SST-2" / "16-13"
    split.mkdir(parents=True)
    for name in ("dev.tsv", "test.tsv"):
        shutil.copy(DATA_DIR / "k-shot" / "SST-2" / "16-13" / name, split / name)
    (split / "train.tsv").write_bytes(b"sentence\tlabel\n\x80\x81\xfe\xff\x00\x9c binary\t1\n")


def _text_file(work: Path) -> None:
    (work / "model.txt").write_text("not a model\n")


def _empty_folder(work: Path) -> None:
    (work / "model").mkdir()


RUN = ("zoft-run", "model=tiny-opt", "results_dir=runs")

FAULTS = [
    Fault(
        "lr-negative",
        (*RUN, "optimizer=mezo", "optimizer.lr=-1"),
        2,
        ("optimizer.lr=-1.0 is out of range: it must be > 0", "default optimizer.lr=1e-06"),
    ),
    Fault("eps-zero", (*RUN, "optimizer=mezo", "optimizer.eps=0"), 2, ("optimizer.eps=0.0", "> 0")),
    Fault("max-length-zero", (*RUN, "model.max_length=0"), 2, ("model.max_length=0", ">= 2")),
    Fault(
        "lozo-rank-huge",
        (*RUN, "optimizer=lozo", "optimizer.rank=100000", "steps=2"),
        1,
        ("optimizer.rank=100000 is out of range: it must be in [1, 64]", "tiny-opt"),
    ),
    Fault("device-tpu", (*RUN, "device=tpu"), 1, ("device=tpu is invalid", "cuda:N")),
    Fault(
        "binary-data-file",
        (*RUN, "task.data_dir=data", "steps=1"),
        1,
        ("train.tsv: not UTF-8 text", "binary"),
        intact=("data",),
        setup=_binary_train_file,
    ),
    Fault("bench-batch-zero", ("zoft-bench", "--batch", "0"), 1, ("--batch=0 is out of range",)),
    Fault(
        "model-path-text-file",
        ("zoft-run", "model=opt-125m", "model.path=model.txt", "results_dir=runs"),
        1,
        ("model.path=model.txt is a file, not a model directory", "config.json"),
        intact=("model.txt",),
        setup=_text_file,
    ),
    Fault(
        "model-path-empty-folder",
        ("zoft-run", "model=opt-125m", "model.path=model", "results_dir=runs"),
        1,
        ("model.path=model: no config.json here", "it is empty"),
        setup=_empty_folder,
    ),
    Fault(
        "key-of-another-method",
        (*RUN, "optimizer=ft", "optimizer.rank=4"),
        2,
        ("'optimizer.rank'", "does not exist for optimizer=ft", "optimizer=lozo", "optimizer.adam_eps"),
    ),
    Fault(
        "added-key-of-another-method",
        (*RUN, "optimizer=ft", "+optimizer.rank=4", "steps=1"),
        2,
        ("does not exist for optimizer=ft",),
    ),
    Fault(
        "launcher-typo",
        (*RUN, "-m", "hydra/launcher=slrum"),
        2,
        ("Unknown hydra/launcher 'slrum'", "Did you mean 'slurm'", "submitit_local"),
    ),
    Fault("effective-default", ("zoft-run", "steps=abc"), 2, ("(default steps=40)",)),
]  # fmt: skip

# words a fault's output must not say: advice that does not apply
NOT_SAID = {
    "model-path-text-file": ("HF_HUB_OFFLINE", "hub"),
    "model-path-empty-folder": ("sentencepiece", "HF_HUB_OFFLINE"),
    "lozo-rank-huge": ("zero-shot evaluation",),
}


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault(fault: Fault, tmp_path: Path) -> None:
    done = check_fault(fault, tmp_path)
    output = done.stdout + done.stderr
    for words in NOT_SAID.get(fault.name, ()):
        assert words not in output, f"{fault.name}: says {words!r}\n{output[-3000:]}"
    if fault.exit_code == 2:  # refused before Hydra: nothing written
        assert not (tmp_path / "runs").exists()


def test_an_unexpected_failure_prints_its_traceback_once(tmp_path):
    """Hydra printed it a second time after the runner's own log line."""
    code = (
        "import sys; import zoft.run.runner as r\n"
        "def boom(cfg): raise RuntimeError('an unexpected bug')\n"
        "r.run = boom\n"
        "from zoft.cli import run_main; sys.argv[0] = 'zoft-run'; run_main()"
    )
    argv = [sys.executable, "-c", code, "model=tiny-opt", "results_dir=runs"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count("Traceback (most recent call last)") == 1, output
    assert output.count("RuntimeError: an unexpected bug") == 1, output

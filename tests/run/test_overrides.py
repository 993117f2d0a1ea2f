"""Command-line mistakes are named with close matches and the valid choices, before Hydra runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zoft.run.overrides import OverrideError, check_overrides


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["model=smollm2"], r"Unknown model 'smollm2' .*Did you mean 'smollm2-135m'\?.*tiny-opt"),
        (["task=sst2,sst-2"], r"Unknown task 'sst-2' .*Did you mean 'sst2', 'sst5'\?"),
        (["optimizer=lozom"], r"Unknown optimizer 'lozom' .*Did you mean 'lozo-m', 'lozo'"),
        (["+experiment=mini_smol"], r"Unknown experiment 'mini_smol' .*'mini_smollm2_table1'"),
        (["logger=wandbb"], r"Unknown logger 'wandbb' .*Did you mean 'wandb'\?"),
        (["stepz=5"], r"Unknown config key 'stepz' \(stepz=5\)\. Did you mean 'steps'\?"),
        (["optimizer.lrr=1e-3"], r"Unknown config key 'optimizer\.lrr'.*'optimizer\.lr'"),
        (["model.tiny.hidden=8"], r"Did you mean 'model\.tiny\.hidden_size'"),
        (["guard.nonfinit=skip"], r"Did you mean 'guard\.nonfinite'"),
        (
            ["steps=abc"],
            r"Wrong type for 'steps' \(steps=abc\): it takes an integer \(default steps=40\)",
        ),
        (
            ["optimizer.lr=fast"],  # the default run's optimizer (ft) and its default
            r"'optimizer\.lr' \(optimizer\.lr=fast\): it takes a number \(default optimizer\.lr=1e-05\)\.",
        ),
        (
            ["dtype=fp8"],
            r"'dtype' \(dtype=fp8\): it takes one of fp32, bf16, fp16 \(default dtype=fp32\)",
        ),
        (
            ["optimizer=mezo", "optimizer.probes=paried"],
            r"Invalid value for 'optimizer\.probes' \(optimizer\.probes=paried\): it takes one of "
            r"auto, paired, sequential \(default optimizer\.probes=auto\)\. Did you mean 'paired'\?",
        ),
        (
            ["optimizer.schedule=cosine"],
            r"'optimizer\.schedule'.*one of linear, constant \(default optimizer\.schedule=linear\)\.",
        ),
        (["optimizer.amp=fp8"], r"'optimizer\.amp'.*one of bf16, fp16, null\. Did you mean 'fp16'"),
        (["objective=acc"], r"one of loss, accuracy, f1 \(default objective=loss\)\. Did you mean"),
        (["model.tiny.arch=gpt"], r"'model\.tiny\.arch'.*one of opt, llama, roberta"),
        (["logger.mode=onlin"], r"'logger\.mode'.*Did you mean 'online'"),
        (["-m", "guard.nonfinite=stop,skp"], r"'guard\.nonfinite'.*Did you mean 'skip'"),
        (["zero_shot=maybe"], r"it takes true or false \(default zero_shot=true\)"),
        (["-m", "seed=0,1", "batch_size=8,x"], r"Wrong type for 'batch_size'"),
    ],
)
def test_mistakes_are_named_with_the_fix(arguments, message):
    with pytest.raises(OverrideError, match=message):
        check_overrides(arguments)


@pytest.mark.parametrize(
    "arguments",
    [
        ["model=tiny-opt", "optimizer=lozo-m", "optimizer.rank=4", "steps=10"],
        ["-m", "task=sst2,rte", "optimizer.lr=1e-6,1e-7", "hydra/launcher=local"],
        ["+experiment=mini_smollm2_table1", "seed=1", "hydra.sweeper.dry_run=true"],
        # the experiment picks MeZO: a key of some optimizers (not of the default ft) selects a cell
        ["+experiment=bf16_rounding_smollm2", "dtype=bf16", "optimizer.rounding=stochastic"],
        ["model.max_memory=0:70GiB 1:70GiB cpu:200GiB", "model.device_map=auto"],
        ["optimizer=ft", "optimizer.amp=null", "optimizer.schedule=constant", "objective=loss"],
        ["optimizer=lmao", "optimizer.directions=lowrank", "optimizer.probes=sequential"],
        ["results_dir=${oc.env:HOME}/runs", "logger=wandb", "logger.tags=[a,b]"],
        ["-m", "task=glob(s*)", "seed=range(0,3)", "optimizer.lr=interval(1e-6,1e-4)"],
    ],
)
def test_valid_command_lines_pass(arguments):
    check_overrides(arguments)


@pytest.mark.parametrize(
    "argument,message",
    [
        ("model=smollm2", "zoft-run: Unknown model 'smollm2'"),
        ("optimizer=mezo optimizer.probes=paried", "Did you mean 'paired'?"),
    ],
)
def test_zoft_run_prints_the_message_and_exits_2(tmp_path, argument, message):
    cmd = [sys.executable, "-m", "zoft", *argument.split(), f"results_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_an_experiment_still_refuses_a_key_no_optimizer_has():
    with pytest.raises(OverrideError, match="Did you mean 'optimizer.rounding'"):
        check_overrides(["+experiment=bf16_rounding_smollm2", "optimizer.roundin=stochastic"])

"""Run-level checks: the config digest, reuse of an output_dir, impossible sizes."""

import re

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from tests.conftest import compose
from zoft.errors import RunConfigError, ZoftError
from zoft.run.checks import validate
from zoft.run.rundir import config_digest
from zoft.run.runner import run


def test_digest_ignores_paths_and_logging_but_not_the_data_origin(monkeypatch):
    monkeypatch.delenv("ZOFT_DATA", raising=False)
    base = config_digest(compose(["task.data_dir=/a"]))
    assert (
        config_digest(
            compose(
                [
                    "task.data_dir=/b",
                    "log_every=3",
                    "logger=csv",
                    "results_dir=elsewhere",
                    "eval_batch_size=7",
                ]
            )
        )
        == base
    )
    assert config_digest(compose([])) != base  # the hub is another data set
    assert config_digest(compose(["task.data_dir=/a", "seed=1"])) != base


@pytest.mark.parametrize("override", ["batch_size=0", "steps=-1", "eval_every=-2"])
def test_impossible_sizes_are_refused(override):
    with pytest.raises(RunConfigError, match=override.split("=")[0]):
        validate(compose([override]))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["optimizer=lmao", "optimizer.adapter=none"],
            "optimizer=lmao needs optimizer.adapter=lora",
        ),
        (["optimizer=mezo", "optimizer.micro_batches=9", "batch_size=8"], "micro_batches=9"),
        (["optimizer=ft", "optimizer.micro_batches=0"], "micro_batches=0"),
    ],
)
def test_impossible_optimizer_settings_are_refused_before_loading(overrides, message):
    with pytest.raises(ZoftError, match=message):
        validate(compose(overrides))


def test_digest_of_the_default_run_is_stable(monkeypatch):
    """Finished runs are found by their digest: a new setting that does not change what a run
    computes must not change it (7795f2a5fe is the digest of every release so far)."""
    monkeypatch.setenv("ZOFT_DATA", "/data")
    assert config_digest(compose([])) == "7795f2a5fe"
    reliability = [
        "checkpoint_every=50",
        "resume=false",
        "save_weights=true",
        "guard.nonfinite=skip",
        "model.max_memory=cpu:2GiB",
    ]
    assert config_digest(compose(reliability)) == "7795f2a5fe"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optimizer=mezo", "fsdp=true"], r"fsdp=true with optimizer=mezo: FSDP shards"),
        (["optimizer=ft", "fsdp=true"], r"fsdp=true needs several processes: launch with torchrun"),
        (
            ["optimizer=mezo", "optimizer.lora.r=16"],
            r"optimizer\.lora\.r is set, but optimizer=mezo",
        ),
        (["checkpoint_every=-5"], r"checkpoint_every=-5 is out of range: it must be >= 0"),
    ],
)
def test_impossible_combinations_are_refused(overrides, message):
    with pytest.raises(ZoftError, match=message):
        validate(compose(overrides))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["optimizer=mezo", "optimizer.adapter=prefx"],
            r"Invalid value 'prefx', expected one of \[none, lora, dora, adalora, prefix\]",
        ),
        (["guard.nonfinite=ignore"], r"Invalid value 'ignore', expected one of \[stop, skip\]"),
    ],
)
def test_values_outside_a_closed_set_are_refused_when_composed(overrides, message):
    """Closed sets are Enums in the schema: the config cannot even be composed with a bad one."""
    with pytest.raises(ConfigCompositionException) as refused:
        compose(overrides)
    assert re.search(message, str(refused.value.__cause__))
    assert overrides[-1].split("=")[0] in str(refused.value)


def test_device_map_is_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RunConfigError, match=r"cannot be\s+combined with torchrun"):
        validate(compose(["model.device_map=auto"]))


def test_fp16_weights_with_adam_are_refused():
    with pytest.raises(RunConfigError, match="optimizer.amp=fp16"):
        validate(compose(["dtype=fp16", "optimizer=ft"]))


def test_explicit_output_dir_of_another_config_is_not_mistaken_for_this_run(tmp_path, data_dir):
    common = [
        "model=tiny-opt",
        "steps=1",
        "task.kshot_test_cap=8",
        f"output_dir={tmp_path}",
        f"task.data_dir={data_dir}",
    ]
    assert run(compose(common))["status"] == "complete"
    assert run(compose(common)).get("skipped")
    with pytest.raises(RunConfigError, match="different config"):
        run(compose([*common, "seed=3"]))


def test_a_new_key_at_its_legacy_value_keeps_the_digest(monkeypatch):
    from zoft.run import rundir

    cfg = compose([])
    before = config_digest(cfg)
    with open_dict(cfg):
        cfg.new_knob = "old"
    monkeypatch.setitem(rundir.LEGACY_VALUES, "new_knob", "old")
    assert config_digest(cfg) == before
    cfg.new_knob = "new"
    assert config_digest(cfg) != before


def test_rounding_auto_is_digested_as_the_rounding_it_does(monkeypatch):
    """auto (the default since issue 21's study) rounds stochastically in bf16/fp16 and does
    nothing in fp32: fp32 runs keep their digests, and a half-precision run at the default is the
    run with rounding=stochastic, not the older round-to-nearest one."""
    monkeypatch.setenv("ZOFT_DATA", "/data")
    mezo = ["optimizer=mezo", "steps=4"]
    fp32 = config_digest(compose(mezo))
    assert fp32 == config_digest(compose([*mezo, "optimizer.rounding=nearest"]))
    for dtype in ("bf16", "fp16"):
        half = [*mezo, f"dtype={dtype}"]
        default = config_digest(compose(half))
        assert default == config_digest(compose([*half, "optimizer.rounding=stochastic"]))
        assert default != config_digest(compose([*half, "optimizer.rounding=nearest"]))


def test_a_task_revision_enters_the_digest(monkeypatch):
    from zoft.tasks import TASKS

    cfg = compose([])
    before = config_digest(cfg)
    monkeypatch.setattr(TASKS.get(cfg.task.name), "revision", 2)
    assert config_digest(cfg) != before

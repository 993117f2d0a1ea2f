"""Run-level checks: the config digest, reuse of an output_dir, impossible sizes."""

import pytest

from tests.conftest import compose
from zoft.errors import ZoftError
from zoft.runner import RunConfigError, config_digest, run, validate


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
        (["optimizer=mezo", "optimizer.adapter=prefx"], "Unknown adapter 'prefx'"),
        (["optimizer=mezo", "optimizer.micro_batches=9", "batch_size=8"], "micro_batches=9"),
        (["optimizer=ft", "optimizer.micro_batches=0"], "micro_batches=0"),
    ],
)
def test_impossible_optimizer_settings_are_refused_before_loading(overrides, message):
    with pytest.raises(ZoftError, match=message):
        validate(compose(overrides))


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

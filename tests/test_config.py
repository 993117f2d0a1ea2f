"""Every shipped option composes; mistakes fail at start-up with a message naming the key."""

from __future__ import annotations

from importlib import resources

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from zoft.optim import OPTIMIZERS


def _options(group: str) -> list[str]:
    folder = resources.files("zoft.conf") / group
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _compose(overrides: list[str]):
    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


# the generic models are named by what they load (unset here): hub id, path, tiny architecture
GENERIC_MODEL_NAMES = {("model", "hub"): "hub", ("model", "local"): "local"}
GENERIC_MODEL_NAMES["model", "tiny"] = "tiny-llama"


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in ("model", "task", "optimizer", "logger") for o in _options(g)],
)
def test_every_option_composes_and_resolves(group, option):
    cfg = _compose([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg[group].name == GENERIC_MODEL_NAMES.get((group, option), option)


def test_every_registered_optimizer_has_a_yaml():
    assert set(OPTIMIZERS.names()) <= set(_options("optimizer"))


def test_default_is_the_cpu_demo():
    cfg = _compose([])
    assert (cfg.model.name, cfg.task.name) == ("smollm2-135m", "sst2")


def test_mistyped_key_is_rejected_with_its_name():
    with pytest.raises(ConfigCompositionException) as info:
        _compose(["optimizer=mezo", "optimizer.rnak=8"])
    assert "Key 'rnak' not in 'MezoConfig'" in str(info.value.__cause__)


def test_unknown_option_is_rejected_with_the_available_ones():
    with pytest.raises(Exception, match=r"Could not find 'optimizer/mezzo'"):
        _compose(["optimizer=mezzo"])


@pytest.mark.parametrize("override", ["dtype=fp64", "steps=abc", "task.protocol=fewshot"])
def test_wrong_values_are_rejected(override):
    with pytest.raises(ConfigCompositionException) as info:
        _compose([override])
    assert isinstance(info.value.__cause__, ValidationError | ConfigKeyError)
    assert override.split("=")[0] in str(info.value.__cause__)


def test_rounding_auto_is_stochastic_in_half_precision_and_nearest_in_fp32():
    from zoft.config import effective_rounding

    assert effective_rounding("auto", "bf16") == effective_rounding("auto", "fp16") == "stochastic"
    assert effective_rounding("auto", "fp32") == "nearest"
    assert effective_rounding("nearest", "bf16") == "nearest"
    assert effective_rounding("stochastic", "fp32") == "stochastic"

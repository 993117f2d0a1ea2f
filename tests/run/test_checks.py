"""Every bad configuration is refused before any data or model is loaded, and leaves no result.

A value outside a closed set cannot even be composed (the schema's Enum refuses it); every rule
between fields, and every rule of a method, is run by zoft.run.checks.validate at the start of
run(cfg). The loaders are replaced by ones that fail loudly, so reaching them fails the test.
"""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import compose
from zoft.config import (
    AdapterKind,
    DirectionKind,
    NonFinitePolicy,
    Objective,
    ProbeMode,
    TinyArch,
)
from zoft.errors import ZoftError
from zoft.models.adapters import ADAPTERS
from zoft.models.tiny import TINY_ARCHITECTURES
from zoft.optim.directions import DIRECTIONS
from zoft.optim.perturb import PROBE_MODES
from zoft.run import runner
from zoft.run.guards import NONFINITE_POLICIES
from zoft.scoring.objectives import OBJECTIVES

BAD_CONFIGS = [
    # closed sets: refused when composed
    ["optimizer=ft", "optimizer.schedule=cosine"],  # trained with linear decay before
    ["optimizer=mezo", "optimizer.probes=paried"],  # failed after loading before
    ["optimizer=lmao", "optimizer.directions=low-rank"],
    ["optimizer=ft", "optimizer.amp=fp8"],
    ["optimizer=mezo", "optimizer.adapter=prefix"],
    ["objective=acc"],
    ["guard.nonfinite=ignore"],
    ["checkpoint=snapshot"],
    # only a pure ZO method's weights follow from its trajectory
    ["optimizer=ft-lora", "checkpoint=trajectory"],
    ["optimizer=lmao", "checkpoint=trajectory"],
    ["logger=wandb", "logger.mode=on"],
    ["model.tiny.arch=gpt3"],
    ["dtype=fp64"],
    ["task.protocol=fewshot"],
    ["experiment.measure=time"],
    # run-level rules
    ["device=gpu"],
    ["task.template=nope"],
    ["batch_size=0"],
    ["icl_demos=2"],
    ["checkpoint_every=-1"],
    ["guard.max_skipped=-1"],
    ["optimizer=mezo", "fsdp=true"],
    ["optimizer=ft", "dtype=fp16"],
    ["optimizer=mezo", "optimizer.micro_batches=9", "batch_size=8"],
    ["optimizer=mezo", "optimizer.lora.r=16"],
    ["optimizer=lmao", "optimizer.adapter=none"],
    ["optimizer=ft", "objective=accuracy"],
    # rules of a method, declared on its config dataclass
    ["optimizer=mezo", "optimizer.queries=0"],
    ["optimizer=mezo", "optimizer.eps=0"],
    ["optimizer=lozo", "optimizer.rank=0"],
    ["optimizer=lozo", "optimizer.interval=0"],
    ["optimizer=lozo-m", "optimizer.beta=1.0"],
    ["optimizer=lmao", "optimizer.lora_steps=0"],
    ["optimizer=lmao", "optimizer.queries=0"],
    ["optimizer=lmao", "optimizer.directions=lowrank", "optimizer.rank=0"],
    ["optimizer=ft", "optimizer.warmup_steps=-1"],
    ["optimizer=ft-lora", "optimizer.max_grad_norm=-1"],
]


class Loaded(Exception):
    """Raised by the stand-in loaders: the run got past its checks."""


@pytest.fixture
def loaders(monkeypatch) -> list[str]:
    """Replace the data and model loaders of the runner; the list records which were reached."""
    reached: list[str] = []

    def loader(name: str):
        def load(*args, **kwargs):
            reached.append(name)
            raise Loaded("loaded!")

        return load

    monkeypatch.setattr(runner, "load_splits", loader("data"))
    monkeypatch.setattr(runner, "load_model", loader("model"))
    return reached


def _common(tmp_path, data_dir) -> list[str]:
    return [
        "model=tiny-opt",
        f"task.data_dir={data_dir}",
        f"results_dir={tmp_path}",
        f"output_dir={tmp_path / 'run'}",
    ]


@pytest.mark.parametrize("overrides", BAD_CONFIGS, ids=" ".join)
def test_a_bad_config_is_refused_before_anything_is_loaded(overrides, loaders, tmp_path, data_dir):
    try:
        cfg = compose([*_common(tmp_path, data_dir), *overrides])
    except ConfigCompositionException as refused:  # a closed set's Enum refused the value
        assert overrides[-1].split("=")[0] in str(refused)
        assert "expected one of" in str(refused.__cause__)
    else:
        with pytest.raises(ZoftError):
            runner.run(cfg)
    assert loaders == []
    assert not (tmp_path / "run" / "result.json").exists()
    assert not any(tmp_path.iterdir())


def test_a_good_config_reaches_the_loaders(loaders, tmp_path, data_dir):
    """The stand-ins are in place: without a mistake the run gets as far as loading data."""
    with pytest.raises(Loaded):
        runner.run(compose([*_common(tmp_path, data_dir), "optimizer=lozo-m", "steps=2"]))
    assert loaders == ["data"]


@pytest.mark.parametrize(
    "enum,names",
    [
        (AdapterKind, ADAPTERS.names()),
        (Objective, OBJECTIVES.names()),
        (DirectionKind, DIRECTIONS.names()),
        (TinyArch, TINY_ARCHITECTURES.names()),
        (ProbeMode, PROBE_MODES),
        (NonFinitePolicy, NONFINITE_POLICIES),
    ],
)
def test_each_closed_set_lists_exactly_what_the_code_implements(enum, names):
    assert sorted(m.value for m in enum) == sorted(names)

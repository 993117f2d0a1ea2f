"""Hydra's ConfigStore: the schemas of zoft.config plus each declared method's, stored once before
any config is composed (all torch-free: the methods' schemas live in zoft.optim.configs)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from zoft.config import LoggerConfig, ModelConfig, TaskConfig, ZoftConfig


def register_configs() -> None:
    """Store every schema; optimizer schemas come from the method declarations."""
    from zoft.optim import METHODS

    register_base_configs()
    cs = ConfigStore.instance()
    for name in METHODS:
        cs.store(group="schema/optimizer", name=name, node=METHODS.config(name))


def register_base_configs() -> None:
    """The schemas that need no method: enough to compose an experiment's `experiment` and
    `results_dir` without an optimizer (zoft-table)."""
    OmegaConf.register_new_resolver("zoft_model_name", model_name, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="zoft_schema", node=ZoftConfig)
    # schemas live outside the selectable groups so `model=...` lists only real options
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/task", name="task", node=TaskConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)


def model_name(where: str | None, fallback: str) -> str:
    """A model's name in run directories, from its hub id or path (`${zoft_model_name:...}` in
    conf/model/hub.yaml and local.yaml): the last component, lower-cased, so
    Qwen/Qwen2.5-0.5B runs under qwen2.5-0.5b; `fallback` while it is unset (refused later)."""
    if not where:
        return fallback
    return str(where).rstrip("/").rsplit("/", 1)[-1].lower() or fallback

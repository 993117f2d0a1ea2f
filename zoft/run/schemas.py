"""Hydra's ConfigStore: the schemas of zoft.config plus each declared method's, stored once before
any config is composed (all torch-free: the methods' schemas live in zoft.optim.configs)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

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
    cs = ConfigStore.instance()
    cs.store(name="zoft_schema", node=ZoftConfig)
    # schemas live outside the selectable groups so `model=...` lists only real options
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/task", name="task", node=TaskConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)

"""Hydra's ConfigStore: the schemas of zoft.config plus each registered optimizer's, stored once
before any config is composed."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from zoft.config import LoggerConfig, ModelConfig, TaskConfig, ZoftConfig
from zoft.optim import OPTIMIZERS


def register_configs() -> None:
    """Store every schema; optimizer schemas come from the optimizer registry."""
    cs = ConfigStore.instance()
    cs.store(name="zoft_schema", node=ZoftConfig)
    # schemas live outside the selectable groups so `model=...` lists only real options
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/task", name="task", node=TaskConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
    for name in OPTIMIZERS:
        cs.store(group="schema/optimizer", name=name, node=OPTIMIZERS.config(name))

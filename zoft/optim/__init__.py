"""Optimizers: every module here that registers a method is imported, so a new method is one
module (plus its YAML and its test); nothing else lists the methods."""

import importlib
import pkgutil

from zoft.optim.registry import OPTIMIZERS

# modules that hold shared machinery rather than methods
_MACHINERY = {
    "arithmetic",
    "base",
    "directions",
    "paired",
    "perturb",
    "probes",
    "registry",
    "sequential",
    "walk",
    "zeroth_order",
}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _MACHINERY:
        importlib.import_module(f"{__name__}.{_module.name}")


def build_optimizer(cfg, model, scorer, total_steps: int, seed: int):
    """The optimizer named cfg.name, on the model's trainable parameters."""
    return OPTIMIZERS.get(cfg.name)(cfg, model, scorer, total_steps, seed)

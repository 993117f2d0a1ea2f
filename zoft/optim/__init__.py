"""Optimizers: every module here that registers a method is imported, so a new method is its
declaration in zoft.optim.configs, one module (plus its YAML and its test); nothing else lists
the methods.

Importing this package loads only the declarations (torch-free, for the command line); the
method modules (torch) are imported on first use of OPTIMIZERS or build_optimizer.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from zoft.optim import configs  # noqa: F401  (declares every method: METHODS)
from zoft.optim.registry import METHODS

# modules that hold shared machinery rather than methods
_MACHINERY = {
    "arithmetic",
    "base",
    "configs",
    "directions",
    "paired",
    "perturb",
    "philox",
    "philox_numba",
    "philox_triton",
    "probes",
    "registry",
    "row_forwards",
    "sequential",
    "walk",
    "zeroth_order",
}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _MACHINERY:
            importlib.import_module(f"{__name__}.{module.name}")


def build_optimizer(cfg, model, scorer, total_steps: int, seed: int):
    """The optimizer named cfg.name, on the model's trainable parameters."""
    return __getattr__("OPTIMIZERS").get(cfg.name)(cfg, model, scorer, total_steps, seed)


def __getattr__(name: str) -> Any:
    """OPTIMIZERS with every method module imported (the first access imports torch)."""
    if name == "OPTIMIZERS":
        from zoft.optim.registry import OPTIMIZERS

        _discover()
        return OPTIMIZERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "OPTIMIZERS", "build_optimizer"]

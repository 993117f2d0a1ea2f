"""Optimizers, registered by name with their config dataclass."""

from zoft.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")

from zoft.optim import first_order, lmao, lozo, mezo  # noqa: E402,F401  (registration)


def build_optimizer(cfg, model, scorer, total_steps: int, seed: int):
    """The optimizer named cfg.name, on the model's trainable parameters."""
    return OPTIMIZERS.get(cfg.name)(cfg, model, scorer, total_steps, seed)

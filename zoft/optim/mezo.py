"""MeZO: zeroth-order SGD with a two-point SPSA estimate (DESIGN §6.1) on the model's weights; its
LoRA variant (the papers' "MeZO (LoRA)" rows) is registered in zoft.optim.mezo_lora."""

from __future__ import annotations

from dataclasses import dataclass

from zoft.optim.registry import OPTIMIZERS, MethodFacts
from zoft.optim.zeroth_order import ZerothOrderConfig, ZerothOrderOptimizer


@dataclass
class MezoConfig(ZerothOrderConfig):
    name: str = "mezo"
    lr: float = 1e-6
    eps: float = 1e-3


@OPTIMIZERS.register(
    "mezo",
    config=MezoConfig,
    facts=MethodFacts("MeZO", 30, forwards=2, backwards=0, zeroth_order=True, lora=False),
)
class MeZO(ZerothOrderOptimizer):
    """g = (L(θ+εz) − L(θ−εz)) / 2ε;  θ ← θ − η(g·z + λθ), z ~ N(0, I) keyed per parameter."""

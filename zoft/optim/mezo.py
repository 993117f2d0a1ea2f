"""MeZO: zeroth-order SGD with a two-point SPSA estimate (DESIGN §6.1) on the model's weights; its
LoRA variant (the papers' "MeZO (LoRA)" rows) is registered in zoft.optim.mezo_lora."""

from __future__ import annotations

from zoft.optim.registry import OPTIMIZERS
from zoft.optim.zeroth_order import ZerothOrderOptimizer


@OPTIMIZERS.register("mezo")  # settings and facts: zoft.optim.configs.MezoConfig
class MeZO(ZerothOrderOptimizer):
    """g = (L(θ+εz) − L(θ−εz)) / 2ε;  θ ← θ − η(g·z + λθ), z ~ N(0, I) keyed per parameter."""

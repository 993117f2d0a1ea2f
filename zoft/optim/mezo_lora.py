"""MeZO on LoRA adapters (the papers' "MeZO (LoRA)" rows): MeZO's update, unchanged, on the
adapters that zoft.models.adapters adds when the config's adapter is "lora"."""

from __future__ import annotations

from dataclasses import dataclass

from zoft.config import AdapterKind
from zoft.optim.mezo import MeZO, MezoConfig
from zoft.optim.registry import OPTIMIZERS, MethodFacts


@dataclass
class MezoLoraConfig(MezoConfig):
    name: str = "mezo-lora"
    adapter: AdapterKind = AdapterKind.lora
    lr: float = 1e-4
    eps: float = 1e-2


@OPTIMIZERS.register(
    "mezo-lora",
    config=MezoLoraConfig,
    facts=MethodFacts("MeZO (LoRA)", 40, forwards=2, backwards=0, zeroth_order=True, lora=True),
)
class MezoLora(MeZO):
    """MeZO whose trainable parameters are the LoRA adapters (the base weights stay frozen)."""

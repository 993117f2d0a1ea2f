"""MeZO on LoRA adapters (the papers' "MeZO (LoRA)" rows): MeZO's update, unchanged, on the
adapters that zoft.models.adapters adds when the config's adapter is "lora"."""

from __future__ import annotations

from zoft.optim.mezo import MeZO
from zoft.optim.registry import OPTIMIZERS


@OPTIMIZERS.register("mezo-lora")  # settings and facts: zoft.optim.configs.MezoLoraConfig
class MezoLora(MeZO):
    """MeZO whose trainable parameters are the LoRA adapters (the base weights stay frozen)."""

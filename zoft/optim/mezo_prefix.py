"""MeZO on a prefix (the papers' "MeZO (prefix)" rows): MeZO's update, unchanged, on the keys and
values that zoft.models.prefix puts in front of every attention layer."""

from __future__ import annotations

from zoft.optim.mezo import MeZO
from zoft.optim.registry import OPTIMIZERS


@OPTIMIZERS.register("mezo-prefix")  # settings and facts: zoft.optim.configs.MezoPrefixConfig
class MezoPrefix(MeZO):
    """MeZO whose trainable parameters are the prefix's keys and values (the model is frozen)."""

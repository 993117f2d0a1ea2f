"""Adapters a method trains instead of (or beside) the model's own weights, registered by name.

An adapter is injected in place, so the evaluator and the optimizer keep working on the very same
model object. Afterwards `requires_grad` marks what the method trains: everything (no adapter), or
the adapter factors plus, for an encoder with a freshly initialised classification head, that head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoft.config import enum_value
from zoft.errors import ZoftError
from zoft.registry import Registry

ADAPTERS: Registry = Registry("adapter")

LORA_MARK = "lora_"  # peft's LoRA factors are named ...lora_A.<adapter>.weight / lora_B...
HEAD_PREFIXES = ("classifier.", "score.")  # sequence-classification heads (BERT/RoBERTa, OPT/Llama)


class AdapterError(ZoftError):
    """An adapter that cannot be added to this model with these settings."""


def is_adapter_parameter(name: str) -> bool:
    return LORA_MARK in name


def is_head_parameter(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def add_adapter(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    """Inject `optimizer_cfg.adapter` into the model and mark what the method trains."""
    ADAPTERS.get(optimizer_cfg.adapter)(model, optimizer_cfg, model_cfg)


@ADAPTERS.register("none")
def _no_adapter(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


@ADAPTERS.register("lora")
def _lora(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    settings = optimizer_cfg.lora
    targets = list(settings.targets or model_cfg.lora_targets or [])
    if not targets:
        raise AdapterError(
            f"optimizer {optimizer_cfg.name} adds LoRA adapters, but model {model_cfg.name} names "
            "no target modules; set model.lora_targets=[q_proj,v_proj] (or optimizer.lora.targets)"
        )
    if settings.r < 1:
        raise AdapterError(f"optimizer.lora.r={settings.r} is invalid: the rank must be at least 1")
    module_names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in module_names)]
    if missing:
        raise AdapterError(
            f"LoRA targets {missing} (of {targets}) match no module of model {model_cfg.name}; "
            "set optimizer.lora.targets to names of its linear layers (e.g. [q_proj,v_proj] for "
            "OPT/Llama, [query,value] for BERT/RoBERTa)"
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
    )
    try:
        inject_adapter_in_model(config, model)
    except ValueError as err:
        raise AdapterError(
            f"LoRA targets {targets} were not found in model {model_cfg.name} ({err}); set "
            "optimizer.lora.targets to names of its linear layers (e.g. [q_proj,v_proj] for "
            "OPT/Llama, [query,value] for BERT/RoBERTa)"
        ) from err
    with_head = enum_value(model_cfg.kind) == "classifier"
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_parameter(name) or (with_head and is_head_parameter(name)))
        if is_adapter_parameter(name) and p.dtype != torch.float32:
            # fp32 factors over fp16/bf16 base weights (peft's autocast_adapter_dtype): AdamW
            # updates of ~1e-4 relative would round away in half precision
            p.data = p.data.float()

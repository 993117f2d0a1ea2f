"""Adapters a method trains instead of (or beside) the model's own weights, registered by name.

An adapter is injected in place, so the evaluator and the optimizer keep working on the very same
model object. Afterwards `requires_grad` marks what the method trains: everything (no adapter), or
the adapter factors plus, for an encoder with a freshly initialised classification head, that head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoft.errors import ZoftError
from zoft.models.detect import ModelDetectError, lora_targets_of, model_kind
from zoft.models.prefix import add_prefix, is_prefix_parameter
from zoft.registry import Registry

ADAPTERS: Registry = Registry("adapter")

LORA_MARK = "lora_"  # peft's LoRA factors are named ...lora_A.<adapter>.weight / lora_B...
HEAD_PREFIXES = ("classifier.", "score.")  # sequence-classification heads (BERT/RoBERTa, OPT/Llama)


class AdapterError(ZoftError):
    """An adapter that cannot be added to this model with these settings."""


def is_adapter_parameter(name: str) -> bool:
    return LORA_MARK in name or is_prefix_parameter(name)


def is_head_parameter(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def add_adapter(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    """Inject `optimizer_cfg.adapter` into the model and mark what the method trains."""
    ADAPTERS.get(optimizer_cfg.adapter)(model, optimizer_cfg, model_cfg)


@ADAPTERS.register("none")
def _no_adapter(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def lora_targets(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> list[str]:
    """The modules a LoRA-family adapter is injected into (checked against the model):
    optimizer.lora.targets, else model.lora_targets, else the architecture's (zoft.models.detect)."""
    settings = optimizer_cfg.lora
    try:
        targets = lora_targets_of(optimizer_cfg, model_cfg, model.config.model_type)
    except ModelDetectError as err:
        raise AdapterError(str(err)) from None
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
    return targets


@ADAPTERS.register("lora")
def _lora(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    _inject_lora(model, optimizer_cfg, model_cfg, use_dora=False)


@ADAPTERS.register("dora")
def _dora(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    """DoRA (Liu et al., 2024): W = m·(W₀ + BA)/‖W₀ + BA‖ per output row, peft's use_dora."""
    _inject_lora(model, optimizer_cfg, model_cfg, use_dora=True)


@ADAPTERS.register("adalora")
def _adalora(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    """AdaLoRA (Zhang et al., 2023): P Λ Q adapters of rank init_r, pruned towards lora.r by
    the budget that optimizer=ft-adalora allocates (zoft.optim.adalora)."""
    from peft import AdaLoraConfig

    if not hasattr(optimizer_cfg, "init_r"):
        raise AdapterError(
            f"optimizer.adapter=adalora needs optimizer=ft-adalora, which allocates its rank "
            f"budget (got optimizer={optimizer_cfg.name})"
        )
    settings = optimizer_cfg.lora
    targets = lora_targets(model, optimizer_cfg, model_cfg)
    config = AdaLoraConfig(
        target_r=settings.r,
        init_r=optimizer_cfg.init_r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        tinit=optimizer_cfg.tinit,
        tfinal=optimizer_cfg.tfinal,
        deltaT=optimizer_cfg.delta_t,
        beta1=optimizer_cfg.sensitivity_beta1,
        beta2=optimizer_cfg.sensitivity_beta2,
        orth_reg_weight=optimizer_cfg.orth_reg_weight,
        # the budget's length is the run's, set by the optimizer; peft wants one at least this
        total_step=optimizer_cfg.tinit + optimizer_cfg.tfinal + 1,
    )
    _inject(model, config, targets, model_cfg)
    mark_adapters_trainable(model, model_cfg)


@ADAPTERS.register("prefix")
def _prefix(model: nn.Module, optimizer_cfg: Any, model_cfg: Any) -> None:
    """Prefix tuning (zoft.models.prefix): only the prefix (and a fresh classification head)
    trains."""
    if not hasattr(optimizer_cfg, "prefix_tokens"):
        raise AdapterError(
            f"optimizer.adapter=prefix needs a prefix method (optimizer=mezo-prefix or "
            f"ft-prefix), which sets its tokens and initialisation (got {optimizer_cfg.name})"
        )
    add_prefix(model, optimizer_cfg.prefix_tokens, optimizer_cfg.prefix_init)
    mark_adapters_trainable(model, model_cfg)


def _inject_lora(model: nn.Module, optimizer_cfg: Any, model_cfg: Any, use_dora: bool) -> None:
    from peft import LoraConfig

    settings = optimizer_cfg.lora
    targets = lora_targets(model, optimizer_cfg, model_cfg)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        use_dora=use_dora,
    )
    _inject(model, config, targets, model_cfg)
    mark_adapters_trainable(model, model_cfg)


def _inject(model: nn.Module, config: Any, targets: list[str], model_cfg: Any) -> None:
    """peft's layers for `config`, injected in place (what peft's inject_adapter_in_model does,
    for any of its tuner types)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    try:
        PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type](model, config, adapter_name="default")
    except ValueError as err:
        raise AdapterError(
            f"LoRA targets {targets} were not found in model {model_cfg.name} ({err}); set "
            "optimizer.lora.targets to names of its linear layers (e.g. [q_proj,v_proj] for "
            "OPT/Llama, [query,value] for BERT/RoBERTa)"
        ) from err


def mark_adapters_trainable(model: nn.Module, model_cfg: Any) -> None:
    """Only the adapters (and an encoder's fresh classification head) train, in fp32."""
    with_head = model_kind(model_cfg) == "classifier"
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_parameter(name) or (with_head and is_head_parameter(name)))
        if is_adapter_parameter(name) and p.dtype != torch.float32:
            # fp32 factors over fp16/bf16 base weights (peft's autocast_adapter_dtype): AdamW
            # updates of ~1e-4 relative would round away in half precision
            p.data = p.data.float()

"""What a model is, read from its transformers config before any weight is loaded: its kind
(`model.kind=auto`), its architecture, and the modules LoRA adapts by default.

A packaged or declared model names its kind in its YAML, and nothing is read for it. For
`model=hub`, `model=local` and `model=tiny` the kind follows from the config's `architectures`
(what the checkpoint was saved as) or, for a config without them, from which of transformers'
auto classes the architecture has: an encoder with an MLM head is a masked LM, one without is
trained with a classification head, and a decoder is a causal LM.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from zoft.config import ModelKind, ModelSource, enum_value
from zoft.errors import ZoftError

# LoRA targets of architectures peft's mapping does not list (peft 0.21), by model_type
EXTRA_LORA_TARGETS: dict[str, list[str]] = {"phi3": ["qkv_proj"]}

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_MASKED_SUFFIXES = ("ForMaskedLM", "ForPreTraining")


class ModelDetectError(ZoftError, ValueError):
    """The model's config could not be read, or names no kind zoft can score."""


def model_kind(model_cfg: Any) -> str:
    """model.kind, with `auto` replaced by the kind its transformers config implies."""
    kind = enum_value(model_cfg.kind)
    return kind if kind != ModelKind.auto else kind_of(transformers_config(model_cfg))


def kind_of(config: Any) -> str:
    """causal_lm, masked_lm or classifier for a transformers config (see the module docstring)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    model_type = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ModelDetectError(
            f"'{model_type}' is an encoder-decoder model; zoft scores causal LMs, masked LMs and "
            "encoders with a classification head (e.g. Llama, Qwen2, OPT, RoBERTa, BERT)"
        )
    saved = list(getattr(config, "architectures", None) or [])
    if any(name.endswith(_MASKED_SUFFIXES) for name in saved):
        return ModelKind.masked_lm.value
    if any(name.endswith(_CAUSAL_SUFFIXES) for name in saved):
        return ModelKind.causal_lm.value
    encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if saved and encoder:  # an encoder saved without its MLM head (BertModel, ...ForSequence...)
        return ModelKind.classifier.value
    if encoder:
        return ModelKind.masked_lm.value
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return ModelKind.causal_lm.value
    if model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return ModelKind.classifier.value
    raise ModelDetectError(
        f"model type '{model_type}' has no causal-LM, masked-LM or sequence-classification class "
        "in transformers, so zoft cannot score it; set model.kind if you know which it is"
    )


def transformers_config(model_cfg: Any) -> Any:
    """The model's transformers config (config.json only; a tiny model's is built)."""
    source = enum_value(model_cfg.source)
    if source == ModelSource.tiny and not model_cfg.path:
        from zoft.models.tiny import tiny_config

        return tiny_config(model_cfg.tiny)[0]
    target = model_cfg.path or model_cfg.hub_id
    if target is None:
        raise ModelDetectError(
            f"model {model_cfg.name} has kind=auto but neither model.hub_id nor model.path; "
            "set one of them, or model.kind"
        )
    return _read_config(str(target), model_cfg.hub_id, model_cfg.name)


@lru_cache(maxsize=32)
def _read_config(target: str, hub_id: str | None, name: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(target)
    except (OSError, ValueError) as err:
        where = f"model.path={target}" if target != hub_id else f"the hub id '{target}'"
        raise ModelDetectError(
            f"could not read the config of model '{name}' from {where}: {err}\n"
            f"Without access to the Hugging Face hub, download '{hub_id or target}' where the hub "
            "is reachable and set model.path=/path/to/it (a directory with config.json)."
        ) from err


def model_type(model_cfg: Any) -> str:
    """The architecture's transformers model_type (opt, llama, roberta, ...)."""
    return transformers_config(model_cfg).model_type


def default_lora_targets(architecture: str) -> list[str]:
    """peft's LoRA targets for a model_type (zoft's own for the few peft lacks); [] if unknown."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    return list(PEFT.get(architecture) or EXTRA_LORA_TARGETS.get(architecture) or [])


def lora_targets_of(method_cfg: Any, model_cfg: Any, architecture: str | None = None) -> list[str]:
    """The modules a LoRA-family method adapts: optimizer.lora.targets, else model.lora_targets,
    else the architecture's defaults (`architecture` read from the config when not given)."""
    chosen = list(method_cfg.lora.targets or model_cfg.lora_targets or [])
    if chosen:
        return chosen
    architecture = architecture or model_type(model_cfg)
    targets = default_lora_targets(architecture)
    if not targets:
        raise ModelDetectError(
            f"optimizer {method_cfg.name} adds LoRA adapters, but zoft knows no default LoRA "
            f"targets for the architecture '{architecture}' of model {model_cfg.name}; set "
            "model.lora_targets to its attention projections, e.g. model.lora_targets=[q_proj,v_proj]"
        )
    return targets

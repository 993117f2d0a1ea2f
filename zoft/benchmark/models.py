"""What the benchmark runs on: shipped model configs, or published shapes with random weights
(time and memory depend on the shapes only, and nothing needs downloading)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from zoft.models.loading import DTYPES, load_model
from zoft.registry import Registry

# name -> builds (model, the model config that names its LoRA targets) on a device in a dtype
BENCH_MODELS: Registry[Callable[[str, str], tuple[torch.nn.Module, DictConfig]]] = Registry(
    "benchmark model"
)


def compose_config(overrides: list[str]) -> DictConfig:
    """A run config as zoft-run composes it (the optimizer and model groups come from here)."""
    from hydra import compose, initialize_config_module

    from zoft.run.schemas import register_configs

    register_configs()
    with initialize_config_module(config_module="zoft.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _shipped(name: str) -> Callable[[str, str], tuple[torch.nn.Module, DictConfig]]:
    def build(dtype: str, device: str) -> tuple[torch.nn.Module, DictConfig]:
        model_cfg = compose_config([f"model={name}"]).model
        return load_model(model_cfg, dtype, device).model, model_cfg

    return build


for _name in ("tiny-opt", "tiny-llama", "smollm2-135m"):
    BENCH_MODELS.register(_name, kind="shipped")(_shipped(_name))


@dataclass(frozen=True)
class OptShape:
    """An OPT size as published (facebook/opt-*): hidden, layers, heads, feed-forward width."""

    hidden: int
    layers: int
    heads: int
    ffn: int


OPT_SHAPES = {
    "opt-125m": OptShape(768, 12, 12, 3072),
    "opt-1.3b": OptShape(2048, 24, 32, 8192),
    "opt-2.7b": OptShape(2560, 32, 32, 10240),
    "opt-6.7b": OptShape(4096, 32, 32, 16384),
    "opt-13b": OptShape(5120, 40, 40, 20480),
    "opt-30b": OptShape(7168, 48, 56, 28672),
}


def _random_opt(name: str, shape: OptShape) -> Callable[[str, str], tuple[Any, DictConfig]]:
    def build(dtype: str, device: str) -> tuple[torch.nn.Module, DictConfig]:
        from transformers import OPTConfig, OPTForCausalLM

        config = OPTConfig(
            vocab_size=50272,
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            ffn_dim=shape.ffn,
            word_embed_proj_dim=shape.hidden,
            max_position_embeddings=2048,
        )
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = OPTForCausalLM._from_config(config, dtype=DTYPES[dtype])
        return model, compose_config([f"model={name}"]).model

    return build


for _name, _shape in OPT_SHAPES.items():
    BENCH_MODELS.register(f"{_name}-random", kind="random", shape=_shape)(
        _random_opt(_name, _shape)
    )

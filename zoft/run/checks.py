"""Every validation of a run's settings, done before any data or model is loaded.

Closed sets of values are Enums in zoft.config (refused when the config is composed); the rules
here tie fields together. A method's own rules live with its config dataclass (its `check` and
`check_run`), reached through the optimizer registry, so each rule is written once.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoft.config import (
    LORA_FAMILY,
    LoggerConfig,
    LoraConfig,
    ModelConfig,
    ModelKind,
    ModelSource,
    OptimizerConfig,
    Protocol,
    Range,
    TaskConfig,
    ZoftConfig,
    as_dataclass,
    check_ranges,
    enum_value,
    out_of_range,
)
from zoft.errors import RunConfigError
from zoft.models.detect import lora_targets_of, model_kind
from zoft.models.loading import check_model_dir
from zoft.models.tiny import TINY_ARCHITECTURES
from zoft.optim import METHODS
from zoft.run import distributed
from zoft.run.guards import GuardSettings
from zoft.scoring.objectives import check_objective
from zoft.tasks import get_task

# where a run computes: torch device strings zoft.run.distributed.setup understands
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate(cfg: DictConfig) -> None:
    """Reject run settings that would fail later with an obscure error."""
    _check_method_keys(cfg.optimizer)
    check_ranges(ZoftConfig, cfg, nested=run_schemas(cfg))
    if cfg.task.protocol == Protocol.large and cfg.steps and not cfg.task.num_train:
        raise RunConfigError(
            f"task.num_train=0 with steps={cfg.steps}: there is nothing to train on; set "
            "task.num_train >= 1, or steps=0 to only evaluate"
        )
    if cfg.icl_demos and cfg.steps:
        raise RunConfigError(
            f"icl_demos={cfg.icl_demos} with steps={cfg.steps}: in-context learning is an "
            "evaluation-only mode; set steps=0 (or icl_demos=0 to fine-tune)"
        )
    _check_model(cfg.model)
    kind = model_kind(cfg.model)
    if cfg.icl_demos and kind != "causal_lm":
        raise RunConfigError(f"icl_demos needs a causal LM; model {cfg.model.name} is {kind}")
    if not DEVICE_PATTERN.fullmatch(cfg.device):
        raise RunConfigError(f"device={cfg.device} is invalid: use auto, cpu, cuda or cuda:N")
    facts = METHODS.facts(cfg.optimizer.name)
    zeroth_order = facts.zeroth_order
    required = facts.requires_adapter
    if required and cfg.optimizer.adapter != required:
        raise RunConfigError(
            f"optimizer={cfg.optimizer.name} needs optimizer.adapter={required} (got "
            f"{cfg.optimizer.adapter}); drop the override"
        )
    own = ADAPTER_METHODS.get(enum_value(cfg.optimizer.adapter))
    if own and cfg.optimizer.name not in own:
        raise RunConfigError(
            f"optimizer.adapter={cfg.optimizer.adapter} needs optimizer={' or '.join(own)}, whose "
            f"settings it takes (got optimizer={cfg.optimizer.name}); use one of them, or "
            "optimizer.adapter=lora"
        )
    if cfg.optimizer.micro_batches > cfg.batch_size:
        raise RunConfigError(
            out_of_range(
                "optimizer.micro_batches",
                cfg.optimizer.micro_batches,
                Range(1, cfg.batch_size),
            )
            + f" (batch_size={cfg.batch_size})"
        )
    task = get_task(cfg.task.name)
    check_objective(cfg.objective, task, zeroth_order)
    if kind == ModelKind.causal_lm and cfg.task.template not in task.causal_templates:
        raise RunConfigError(
            f"task {task.name} has no causal-LM template '{cfg.task.template}'; choose "
            f"task.template from {sorted(task.causal_templates)}"
        )
    _check_combinations(cfg, zeroth_order)
    _check_checkpoint_kind(cfg, zeroth_order and facts.backwards == 0)
    method = method_config(cfg)
    method.check()
    method.check_run(cfg)
    if method.adapter in LORA_FAMILY:
        lora_targets_of(method, cfg.model)  # an architecture without defaults: refused now


def _check_checkpoint_kind(cfg: DictConfig, pure_zeroth_order: bool) -> None:
    """checkpoint=trajectory replays the run from its base model: a pure ZO method only, and
    not under FSDP (whose checkpoints are per-rank shards)."""
    if enum_value(cfg.get("checkpoint", "auto")) != "trajectory" or not cfg.steps:
        return
    if not pure_zeroth_order:
        raise RunConfigError(
            f"checkpoint=trajectory with optimizer={cfg.optimizer.name}: only a pure "
            "zeroth-order method's weights follow from its trajectory (this one trains by "
            "backprop or fits a head); use checkpoint=full or checkpoint=auto"
        )
    if cfg.fsdp:
        raise RunConfigError("checkpoint=trajectory with fsdp=true: use checkpoint=full")


def _check_model(model: DictConfig) -> None:
    """Where the weights come from must be named; a tiny model's shapes must fit together."""
    source = enum_value(model.source)
    if source == ModelSource.hub and not (model.hub_id or model.path):
        raise RunConfigError(
            f"model {model.name} has neither model.hub_id nor model.path; set "
            "model.hub_id=<org/name> (model=hub) or model.path=<directory> (model=local)"
        )
    if model.path:
        check_model_dir(model.path, model.name)
    if source == ModelSource.tiny:
        _check_tiny(model.tiny)


def _check_tiny(tiny: DictConfig) -> None:
    """Attention splits the hidden size over the heads, and (grouped-query architectures) the
    heads over KV heads."""
    if tiny.hidden_size % tiny.num_heads:
        raise RunConfigError(
            f"model.tiny.hidden_size={tiny.hidden_size} is not a multiple of "
            f"model.tiny.num_heads={tiny.num_heads}; choose heads that divide it"
        )
    grouped = TINY_ARCHITECTURES.meta(enum_value(tiny.arch)).get("grouped_query", False)
    if grouped and tiny.num_heads % tiny.num_kv_heads:
        raise RunConfigError(
            f"model.tiny.num_heads={tiny.num_heads} is not a multiple of "
            f"model.tiny.num_kv_heads={tiny.num_kv_heads}; choose KV heads that divide it"
        )


def run_schemas(cfg: DictConfig) -> dict[str, type]:
    """The schema of each untyped node of a run config (its groups)."""
    return {
        "model": ModelConfig,
        "task": TaskConfig,
        "optimizer": METHODS.config(cfg.optimizer.name),
        "logger": LoggerConfig,
    }


def _check_method_keys(node: DictConfig) -> None:
    """A key another method has (`+optimizer.rank=4` with optimizer=ft) would be accepted and
    silently ignored; refuse it and list the method's keys."""
    schema = METHODS.config(node.name)
    known = {f.name for f in dataclasses.fields(schema)}
    extra = sorted(set(node.keys()) - known)
    if extra:
        raise RunConfigError(
            f"optimizer.{extra[0]} does not exist for optimizer={node.name}; its keys are "
            f"{', '.join('optimizer.' + k for k in sorted(known))}"
        )


def method_config(cfg: DictConfig) -> OptimizerConfig:
    """cfg.optimizer as an instance of its method's config dataclass (from the registry)."""
    schema = METHODS.config(cfg.optimizer.name)
    node = cfg.optimizer
    if OmegaConf.get_type(node) is not schema:
        node = OmegaConf.merge(OmegaConf.structured(schema), node)
    return as_dataclass(node)


def _check_combinations(cfg: DictConfig, zeroth_order: bool) -> None:
    """Settings that each work alone but not together."""
    GuardSettings(**cfg.guard)
    if cfg.fsdp and zeroth_order:
        raise RunConfigError(
            f"fsdp=true with optimizer={cfg.optimizer.name}: FSDP shards parameters for "
            "backprop, while a zeroth-order method runs data-parallel with only loss scalars "
            "communicated; drop fsdp=true (torchrun alone shards the batch), or use "
            "model.device_map=auto for a model larger than one device"
        )
    if cfg.fsdp and distributed.launched_world_size() == 1:
        raise RunConfigError(
            "fsdp=true needs several processes: launch with torchrun --nproc-per-node=N -m zoft"
        )
    if cfg.model.device_map and distributed.launched_world_size() > 1:
        raise RunConfigError(
            "model.device_map spreads one model over this process's devices and cannot be "
            "combined with torchrun's data parallelism; run one process, or drop model.device_map"
        )
    if cfg.optimizer.adapter not in LORA_FAMILY and cfg.optimizer.lora != OmegaConf.structured(
        LoraConfig
    ):
        changed = [
            k for k, v in OmegaConf.structured(LoraConfig).items() if cfg.optimizer.lora[k] != v
        ]
        lora_methods = ", ".join(n for n in METHODS.in_paper_order() if METHODS.facts(n).lora)
        raise RunConfigError(
            f"optimizer.lora.{changed[0]} is set, but optimizer={cfg.optimizer.name} trains no "
            f"LoRA adapters (optimizer.adapter={cfg.optimizer.adapter}); use a LoRA method "
            f"({lora_methods}) "
            "or drop the optimizer.lora overrides"
        )


# adapters whose settings only these methods carry (AdaLoRA's budget, the prefix's tokens)
ADAPTER_METHODS = {"adalora": ("ft-adalora",), "prefix": ("mezo-prefix", "ft-prefix")}


def check_ranks(cfg: DictConfig, model: nn.Module) -> None:
    """Ranks need the model's shapes, so they are checked once it is loaded, before any
    evaluation or training. LoRA's r is refused above min(in, out) of the smallest targeted
    matrix (more columns add nothing there). Low-rank directions (LOZO's r) are one rank for
    every perturbed matrix, so a matrix narrower than r merely gets a full-rank z (RoBERTa's
    1×1024 token-type embedding under the papers' r = 4); r is refused only above min(m, n) of
    the widest, where it costs more and perturbs nothing more."""
    method = method_config(cfg)
    if method.adapter in LORA_FAMILY:
        targets = lora_targets_of(method, cfg.model, model.config.model_type)
        shapes = {
            f"{name}.weight": _matrix(module.weight)
            for name, module in model.named_modules()
            if any(name == t or name.endswith(f".{t}") for t in targets)
            and isinstance(getattr(module, "weight", None), torch.Tensor)
            and module.weight.ndim >= 2
        }
        if shapes:
            name, (m, n) = min(shapes.items(), key=lambda item: min(item[1]))
            if method.lora.r > min(m, n):
                raise RunConfigError(
                    out_of_range("optimizer.lora.r", method.lora.r, Range(1, min(m, n)))
                    + f" for model {cfg.model.name}: its smallest LoRA target {name} is {m}×{n}; "
                    f"lower optimizer.lora.r (the papers use 8)"
                )
    rank = method.direction_rank()
    if rank is not None:
        shapes = {n: _matrix(p) for n, p in model.named_parameters() if p.ndim >= 2}
        if shapes:
            name, (m, n) = max(shapes.items(), key=lambda item: min(item[1]))
            if rank > min(m, n):
                raise RunConfigError(
                    out_of_range("optimizer.rank", rank, Range(1, min(m, n)))
                    + f" for model {cfg.model.name}: its widest perturbed matrix {name} is "
                    f"{m}×{n}, and z = UVᵀ cannot have a rank above {min(m, n)}; lower "
                    "optimizer.rank (the LOZO papers use 1 to 8)"
                )


def _matrix(param: torch.Tensor) -> tuple[int, int]:
    """A parameter as the m × n matrix low-rank directions see (n: the trailing dimensions)."""
    return int(param.shape[0]), int(param[0].numel())

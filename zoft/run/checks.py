"""Every validation of a run's settings, done before any data or model is loaded."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from zoft.config import LoraConfig, enum_value
from zoft.errors import RunConfigError
from zoft.models.adapters import ADAPTERS
from zoft.optim import OPTIMIZERS
from zoft.run import distributed
from zoft.run.guards import GuardSettings
from zoft.scoring.objectives import check_objective
from zoft.tasks import get_task


def validate(cfg: DictConfig) -> None:
    """Reject run settings that would fail later with an obscure error."""
    for key, least in (
        ("steps", 0),
        ("batch_size", 1),
        ("eval_batch_size", 1),
        ("eval_every", 0),
        ("log_every", 1),
    ):
        if cfg[key] < least:
            raise RunConfigError(f"{key}={cfg[key]} is invalid: it must be at least {least}")
    if cfg.icl_demos < 0:
        raise RunConfigError(f"icl_demos={cfg.icl_demos} is invalid: it must be at least 0")
    if cfg.icl_demos and cfg.steps:
        raise RunConfigError(
            f"icl_demos={cfg.icl_demos} with steps={cfg.steps}: in-context learning is an "
            "evaluation-only mode; set steps=0 (or icl_demos=0 to fine-tune)"
        )
    if cfg.icl_demos and enum_value(cfg.model.kind) != "causal_lm":
        raise RunConfigError(
            f"icl_demos needs a causal LM; model {cfg.model.name} is {enum_value(cfg.model.kind)}"
        )
    facts = OPTIMIZERS.facts(cfg.optimizer.name)
    zeroth_order = facts.zeroth_order
    ADAPTERS.get(cfg.optimizer.adapter)
    required = facts.requires_adapter
    if required and cfg.optimizer.adapter != required:
        raise RunConfigError(
            f"optimizer={cfg.optimizer.name} needs optimizer.adapter={required} (got "
            f"{cfg.optimizer.adapter}); drop the override"
        )
    if cfg.optimizer.micro_batches < 1 or cfg.optimizer.micro_batches > cfg.batch_size:
        raise RunConfigError(
            f"optimizer.micro_batches={cfg.optimizer.micro_batches} is invalid: it must lie "
            f"between 1 and batch_size={cfg.batch_size}"
        )
    check_objective(cfg.objective, get_task(cfg.task.name), zeroth_order)
    _check_combinations(cfg, zeroth_order)
    if cfg.steps and enum_value(cfg.dtype) == "fp16" and cfg.optimizer.name == "ft":
        raise RunConfigError(
            "dtype=fp16 with optimizer=ft would train fp16 weights with no master copy; the papers "
            "keep fp32 weights and compute in fp16: use dtype=fp32 optimizer.amp=fp16"
        )


def _check_combinations(cfg: DictConfig, zeroth_order: bool) -> None:
    """Settings that each work alone but not together."""
    if cfg.checkpoint_every < 0:
        raise RunConfigError(
            f"checkpoint_every={cfg.checkpoint_every} is invalid: use a number of steps, or 0 "
            "for checkpoints only on SIGTERM/SIGINT/SIGUSR1"
        )
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
    if cfg.optimizer.adapter == "none" and cfg.optimizer.lora != OmegaConf.structured(LoraConfig):
        changed = [
            k for k, v in OmegaConf.structured(LoraConfig).items() if cfg.optimizer.lora[k] != v
        ]
        raise RunConfigError(
            f"optimizer.lora.{changed[0]} is set, but optimizer={cfg.optimizer.name} trains no "
            "LoRA adapters (optimizer.adapter=none); use a LoRA method (ft-lora, mezo-lora, lmao) "
            "or drop the optimizer.lora overrides"
        )

"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

Each YAML in conf/<group>/ extends its group's schema, so a mistyped key or a wrong type fails at
start-up instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, is_dataclass
from enum import StrEnum
from typing import Any

from omegaconf import MISSING, OmegaConf

from zoft.errors import RunConfigError

# Every option with a fixed set of values is a StrEnum, so composing a config with a bad value
# fails at once with OmegaConf's message naming the key and the allowed values. A member equals
# (and hashes like) its value, so code comparing against plain strings keeps working.


class ModelKind(StrEnum):
    causal_lm = "causal_lm"
    masked_lm = "masked_lm"
    classifier = "classifier"
    auto = "auto"  # detected from the model's transformers config (zoft.models.detect)


class ModelSource(StrEnum):
    hub = "hub"  # a hub id (or model.path, a local copy of it)
    gguf_package = "gguf_package"  # a GGUF file shipped inside a Python package
    package_dir = "package_dir"  # a Hugging Face model directory shipped inside a Python package
    tiny = "tiny"  # random weights built from a config, tokenizer built in-process


class Protocol(StrEnum):
    large = "large"  # MeZO large-model sampling: num_train / num_dev / num_eval
    kshot = "kshot"  # LM-BFF k examples per label


class IclDemoSets(StrEnum):
    """How ICL demonstrations are drawn (zoft.scoring.icl.ICL_SAMPLERS)."""

    per_example = "per_example"  # MeZO icl.sh: one set per test example, from the full train split
    shared_pool = "shared_pool"  # LMAO icl_all.sh: one set for all, from the full train split
    shared = "shared"  # zoft before issue 17: one set for all, from the run's train subset


class DType(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TinyArch(StrEnum):
    """Architectures a random-weight tiny model is built in (zoft.models.tiny), by model_type."""

    opt = "opt"
    llama = "llama"
    roberta = "roberta"
    mistral = "mistral"
    qwen2 = "qwen2"
    gemma2 = "gemma2"
    gpt2 = "gpt2"
    gpt_neox = "gpt_neox"
    phi3 = "phi3"
    bert = "bert"


class AdapterKind(StrEnum):
    """What a method trains (zoft.models.adapters.ADAPTERS)."""

    none = "none"  # the model's own parameters
    lora = "lora"  # LoRA adapters added to model.lora_targets
    dora = "dora"  # DoRA: LoRA with a learned magnitude per output (peft use_dora)
    adalora = "adalora"  # AdaLoRA: SVD-form adapters whose ranks are pruned to a budget
    prefix = "prefix"  # prefix tuning: trained keys and values in front of every attention layer


# the adapters that optimizer.lora configures (rank, alpha, dropout, targets)
LORA_FAMILY = (AdapterKind.lora, AdapterKind.dora, AdapterKind.adalora)


class Schedule(StrEnum):
    """AdamW learning-rate schedule after the warm-up."""

    linear = "linear"  # linear decay to 0
    constant = "constant"


class Amp(StrEnum):
    """Autocast compute dtype over fp32 weights (the papers' FT)."""

    bf16 = "bf16"
    fp16 = "fp16"


class ProbeMode(StrEnum):
    """How a two-point estimate's probes run (zoft.optim.probes)."""

    auto = "auto"
    paired = "paired"
    sequential = "sequential"


class Rng(StrEnum):
    """How the normals of a direction are drawn (zoft.optim.directions.NORMALS)."""

    torch = "torch"
    philox = "philox"


class Rounding(StrEnum):
    """How a ZO update is rounded into bf16/fp16 weights (zoft.optim.arithmetic)."""

    auto = "auto"  # stochastic for bf16/fp16 weights (fp32 weights have nothing to round)
    nearest = "nearest"  # round to nearest: an update below half a unit of θ is lost
    stochastic = "stochastic"  # up or down at random, keyed: E[θ'] = the fp32 update


def effective_rounding(rounding: str, dtype: str) -> str:
    """The rounding a run with these weights does: auto is stochastic in bf16/fp16 and nearest in
    fp32, where neither rounds anything (so fp32 runs keep their digests)."""
    if str(rounding) != Rounding.auto:
        return str(rounding)
    return Rounding.nearest if str(dtype) == DType.fp32 else Rounding.stochastic


class DirectionKind(StrEnum):
    """Perturbation directions (zoft.optim.directions.DIRECTIONS)."""

    gaussian = "gaussian"
    lowrank = "lowrank"
    subspace = "subspace"  # SubZero's (√(mn)/r)·U Σ Vᵀ in lazily resampled orthonormal bases


class Objective(StrEnum):
    """What training minimises (zoft.scoring.objectives.OBJECTIVES)."""

    loss = "loss"
    accuracy = "accuracy"  # minus the batch accuracy: zeroth-order methods only
    f1 = "f1"  # minus the batch F1: zeroth-order methods only


class NonFinitePolicy(StrEnum):
    """What a NaN/inf loss or projected gradient does (zoft.run.guards)."""

    stop = "stop"
    skip = "skip"


class CheckpointKind(StrEnum):
    """What a checkpoint holds (zoft.run.checkpoint)."""

    auto = "auto"  # trajectory for a pure ZO method (not under FSDP), full for the others
    full = "full"  # the trainable weights and the optimizer's whole state
    # a pure ZO run's trajectory and small state (a few KB): resume replays from the base model
    trajectory = "trajectory"


class SelectBy(StrEnum):
    """Which dev result picks the best-dev state restored after training."""

    metric = "metric"  # highest dev task metric, strictly better (LM-BFF / MeZO medium_models)
    loss = "loss"  # lowest dev loss, strictly better (HF Trainer load_best_model_at_end: OPT)


class WandbMode(StrEnum):
    offline = "offline"  # no account needed; `wandb sync` later
    online = "online"
    disabled = "disabled"


class Measure(StrEnum):
    """Which published numbers an experiment compares with."""

    accuracy = "accuracy"
    memory = "memory"
    speed = "speed"


def enum_value(x: Any) -> Any:
    """The plain value of a config enum (configs hold Enum members once validated)."""
    return getattr(x, "value", x)


def as_dataclass(cfg: Any) -> Any:
    """The dataclass instance a structured config node stands for (an instance passes through),
    so a schema's own methods (e.g. OptimizerConfig.check) can run on a composed config."""
    return cfg if is_dataclass(cfg) else OmegaConf.to_object(cfg)


RANGE = "zoft_range"  # the field-metadata key of a numeric key's valid range
SEED_MAX = 2**32 - 1  # numpy's RandomState (the samplers) takes seeds in [0, 2**32 - 1]


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key: `low`/`high` bounds (None: unbounded), each included
    unless `*_open`. Declared once on the schema field (`ranged`), checked by `check_ranges`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def __str__(self) -> str:
        """The words after "it must be": "> 0", ">= 1", "in [0, 1)"."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def ranged(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with its valid range: ranged(1e-6, gt=0) is "a number > 0"."""
    valid = Range(
        low=gt if gt is not None else ge,
        high=lt if lt is not None else le,
        low_open=gt is not None,
        high_open=lt is not None,
    )
    return field(default=default, metadata={RANGE: valid})


def field_range(schema: type, name: str) -> Range | None:
    """The range declared for `name` on `schema` or the first base class that declares one (a
    subclass redeclaring a field to change its default keeps its base's range)."""
    for klass in schema.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and RANGE in declared.metadata:
            return declared.metadata[RANGE]
    return None


def out_of_range(key: str, value: Any, valid: Range | str) -> str:
    """The one wording of a range error: the key, its value and what it must be."""
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"{key}={shown} is out of range: it must be {valid}"


def check_ranges(
    schema: type,
    values: Any,
    prefix: str = "",
    nested: Mapping[str, type] | None = None,
    spell: Callable[[str], str] | None = None,
) -> None:
    """Refuse (RunConfigError) the first numeric key of `values` (a config node or a dataclass
    instance of `schema`) outside its declared range, then check its dataclass-typed sub-nodes;
    `nested` gives the schema of untyped (Any) sub-nodes by name (the run's model, task, ...),
    `spell` how the user writes a field's key (a command-line flag: --seq-len)."""
    for declared in dataclasses.fields(schema):
        key = f"{prefix}{spell(declared.name) if spell else declared.name}"
        child = (nested or {}).get(declared.name) or _dataclass_default(declared)
        valid = field_range(schema, declared.name)
        if child is None and valid is None:
            continue
        value = _get(values, declared.name)
        if value is None:
            continue
        if child is not None:
            check_ranges(child, value, f"{key}.")
        elif not isinstance(value, bool | str) and value not in valid:
            raise RunConfigError(out_of_range(key, value, valid))


def _dataclass_default(declared: dataclasses.Field) -> type | None:
    """The schema of a field whose default is a dataclass instance (guard, optimizer.lora)."""
    factory = declared.default_factory
    return factory if isinstance(factory, type) and is_dataclass(factory) else None


def _get(values: Any, name: str) -> Any:
    """A key of a config node or mapping, or an attribute of a dataclass instance (None when
    absent: a partial config checks what it has)."""
    if isinstance(values, Mapping) or (hasattr(values, "keys") and hasattr(values, "get")):
        return values.get(name)
    return getattr(values, name, None)


@dataclass
class TinyConfig:
    """Sizes of a random-weight test model; ffn_dim None means the architecture's usual ratio."""

    arch: TinyArch = TinyArch.opt
    hidden_size: int = ranged(64, ge=1)
    num_layers: int = ranged(2, ge=1)
    num_heads: int = ranged(4, ge=1)
    num_kv_heads: int = ranged(2, ge=1)  # grouped-query architectures (zoft.models.tiny)
    ffn_dim: int | None = ranged(None, ge=1)
    max_positions: int = ranged(512, ge=2)
    vocab_size: int = ranged(600, ge=1)
    init_seed: int = ranged(0, ge=0, le=SEED_MAX)


@dataclass
class ModelConfig:
    name: str = MISSING  # the model's name in run directories and tables
    # how it scores: LM head, MLM head (LM-BFF), classifier; auto: read from its config.json
    kind: ModelKind = ModelKind.causal_lm
    source: ModelSource = ModelSource.hub  # where the weights come from
    hub_id: str | None = None  # Hugging Face hub id (source=hub)
    path: str | None = None  # a local model directory; overrides the source
    package: str | None = None  # Python package holding the weights (packaged models)
    package_subdir: str = ""  # the model directory inside the package (source=package_dir)
    gguf_file: str | None = None  # the GGUF file inside the package (source=gguf_package)
    tiny: TinyConfig = field(default_factory=TinyConfig)  # used when source=tiny
    # model=tiny: the random model's architecture (its tiny.arch follows this key)
    arch: TinyArch | None = None
    max_length: int = ranged(512, ge=2)  # tokens per input; longer inputs are truncated
    # modules LoRA adapts by default; empty: peft's targets for the architecture (zoft.models.detect)
    lora_targets: list[str] = field(default_factory=list)
    device_map: str | None = None  # "auto" spreads a large model over every visible device
    # per-device caps for device_map=auto, "device:size" pairs: "0:70GiB 1:70GiB cpu:200GiB"
    max_memory: str | None = None


@dataclass
class TaskConfig:
    name: str = MISSING  # the task's registered name (zoft.tasks)
    data_dir: str | None = None  # local data root (the layout of ../shared/data); else the hub
    protocol: Protocol = Protocol.large  # how train / dev / test are sampled
    num_train: int = ranged(1000, ge=0)  # protocol=large: train examples drawn from the train split
    num_dev: int = ranged(500, ge=0)  # protocol=large: dev examples drawn from the train split
    # protocol=large: test examples drawn from the validation split
    num_eval: int = ranged(1000, ge=1)
    k: int = ranged(16, ge=1)  # protocol=kshot: train (and dev) examples per label
    kshot_test_cap: int = ranged(1000, ge=1)  # protocol=kshot: at most this many test examples
    template: str = "mezo"  # causal-LM prompt: a name the task registers (zoft.run.checks)
    # generative tasks: what ends a greedy answer (zoft.scoring.generation.GENERATION_STOPS):
    # "mezo" = only the "\n" token or EOS, answer just stripped (the official rule; the SQuAD
    # and DROP task configs set it); "first_newline" = any token holding a newline, answer cut
    generation_stop: str = "first_newline"


@dataclass
class LoraConfig:
    """peft LoRA adapters (paper defaults r=8, α=16); targets default to model.lora_targets."""

    r: int = ranged(8, ge=1)  # the adapters' rank
    alpha: int = ranged(16, gt=0)  # scaling: the update is alpha / r times the adapters' product
    dropout: float = ranged(0.0, ge=0, lt=1)  # dropout on the adapters' input
    targets: list[str] | None = None  # modules to adapt; null: model.lora_targets


@dataclass
class OptimizerConfig:
    """Fields every optimizer has; each optimizer's schema extends this one."""

    name: str = MISSING  # the method's registered name (zoft.optim)
    lr: float = ranged(1e-6, gt=0)  # learning rate η
    weight_decay: float = ranged(0.0, ge=0)  # decoupled weight decay λ
    # what is trained: "none" = the model's own parameters; "lora" = LoRA adapters added to
    # model.lora_targets (LMAO trains both: the adapters by backprop, the rest by ZO)
    adapter: AdapterKind = AdapterKind.none
    lora: LoraConfig = field(default_factory=LoraConfig)
    # the mini-batch is evaluated in this many micro-batches (same perturbation / summed
    # gradients, one update): the same step as the whole batch, with less activation memory
    micro_batches: int = ranged(1, ge=1)

    def check(self) -> None:
        """Refuse settings of this method that cannot work together (ZoftError). One place per
        rule: zoft.run.checks.validate calls it before anything is loaded, and the method's
        constructor calls it for library use. Subclasses extend it (calling super().check()).
        Here: every key within the range its field declares (`ranged`)."""
        check_ranges(type(self), self, "optimizer.")

    def direction_rank(self) -> int | None:
        """The rank of the method's low-rank perturbation directions (LOZO's r; checked against
        the model's matrices once it is loaded), None for dense Gaussian ones (or none)."""
        return None

    def check_run(self, run: Any) -> None:
        """Refuse this method's settings that conflict with the run's (`run`: the run config:
        steps, dtype, batch_size, ...); called by validate only."""


@dataclass
class LoggerConfig:
    name: str = "none"  # none | csv | wandb (zoft.run.loggers)
    # wandb only
    project: str = "zoft"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: WandbMode = WandbMode.offline


@dataclass
class GuardConfig:
    """What a bad step does (zoft.run.guards)."""

    nonfinite: NonFinitePolicy = NonFinitePolicy.stop  # a NaN/inf loss or projected gradient
    # skip: stop after more skipped batches than this (0: no limit)
    max_skipped: int = ranged(10, ge=0)
    # stop when the recent mean loss exceeds this × the first (0: off)
    divergence: float = ranged(0.0, ge=0)


@dataclass
class ExperimentInfo:
    """Which paper table an experiment reproduces: zoft-table prints the rows of
    results/paper/paper_results.csv that match paper, table, model and (a substring of) setting."""

    name: str = ""  # the experiment file's name, empty for a plain run
    paper: str = ""
    table: str = ""
    model: str = ""  # the paper's model; empty: match our runs' model names (OPT tables)
    setting: str = ""  # substrings of the paper's `setting` column, "|"-separated, any may match
    measure: Measure = Measure.accuracy  # which published numbers to compare


@dataclass
class ZoftConfig:
    model: Any = MISSING
    task: Any = MISSING
    optimizer: Any = MISSING
    logger: Any = MISSING
    seed: int = ranged(0, ge=0, le=SEED_MAX)  # noise / training-order seed
    data_seed: int = ranged(0, ge=0, le=SEED_MAX)  # sampling seed
    # optimizer steps; 0: evaluate only (zero-shot, or ICL with icl_demos)
    steps: int = ranged(100, ge=0)
    batch_size: int = ranged(16, ge=1)  # training examples per step
    # examples per forward when evaluating (no effect on the scores)
    eval_batch_size: int = ranged(32, ge=1)
    # dev evaluation interval in steps; 0 = only after the last step
    eval_every: int = ranged(0, ge=0)
    log_every: int = ranged(10, ge=1)  # steps between training log lines and metrics.jsonl records
    zero_shot: bool = True  # evaluate the test set at step 0
    # in-context demonstrations from the train split (evaluation only)
    icl_demos: int = ranged(0, ge=0)
    icl_demo_sets: IclDemoSets = IclDemoSets.per_example  # only read when icl_demos > 0
    objective: Objective = Objective.loss  # the metric ones need a zeroth-order method
    select_by: SelectBy = SelectBy.metric  # the best-dev rule (zoft.run.trainer.BestDevState)
    # false keeps each epoch's last short batch (HF / LM-BFF loaders); true drops it (zoft's old rule)
    drop_last: bool = False
    results_dir: str = "runs"  # the root of the run directories (and of a sweep's)
    output_dir: str | None = None  # default: derived from task/model/optimizer/seeds/config hash
    device: str = "auto"  # auto | cpu | cuda | cuda:N (checked by zoft.run.checks)
    dtype: DType = DType.fp32  # the weights' dtype
    # torch CPU threads; 0 keeps torch's default (set it for parallel CPU jobs)
    threads: int = ranged(0, ge=0)
    # steps between checkpoints; 0: only on SIGTERM/SIGINT/SIGUSR1
    checkpoint_every: int = ranged(0, ge=0)
    checkpoint: CheckpointKind = CheckpointKind.auto  # what a checkpoint holds
    resume: bool = True  # continue from the run directory's checkpoint (false: start over)
    save_weights: bool = False  # write the trained parameters to weights.safetensors
    fsdp: bool = False  # FT / FT-LoRA under torchrun: shard parameters with FSDP2
    guard: GuardConfig = field(default_factory=GuardConfig)
    experiment: ExperimentInfo = field(default_factory=ExperimentInfo)

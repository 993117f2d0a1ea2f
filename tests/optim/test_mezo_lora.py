"""MeZO (LoRA): MeZO's update on the LoRA adapters only, with the papers' LoRA defaults; its
config (hence every finished run's digest) is pinned."""

from dataclasses import fields

import torch

from tests.conftest import compose, tiny
from zoft.models.adapters import add_adapter
from zoft.optim import OPTIMIZERS, build_optimizer
from zoft.optim.configs import MezoConfig, MezoLoraConfig
from zoft.optim.mezo import MeZO
from zoft.optim.mezo_lora import MezoLora
from zoft.run.rundir import config_digest
from zoft.scoring import build_scorer
from zoft.tasks import get_task


def test_its_schema_is_mezos_plus_the_lora_adapter():
    mezo = {f.name: f.default for f in fields(MezoConfig)}
    lora = {f.name: f.default for f in fields(MezoLoraConfig)}
    changed = {k: v for k, v in lora.items() if mezo.get(k) != v and k != "lora"}
    assert changed == {"name": "mezo-lora", "adapter": "lora", "lr": 1e-4, "eps": 1e-2}
    assert set(lora) == set(mezo)
    assert OPTIMIZERS.get("mezo-lora") is MezoLora and issubclass(MezoLora, MeZO)
    assert OPTIMIZERS.config("mezo-lora") is MezoLoraConfig


def test_the_digest_of_its_default_run_is_stable(monkeypatch):
    """Finished mezo-lora cells (drawn with the torch generator, the default before issue 19) are
    found by this digest (the value before the method had its own module)."""
    monkeypatch.setenv("ZOFT_DATA", "/data")
    assert config_digest(compose(["optimizer=mezo-lora", "optimizer.rng=torch"])) == "38e93d6ba0"


def test_a_step_moves_the_adapters_and_leaves_the_base_weights_bit_identical(data_dir):
    cfg = compose(["model=tiny-opt", "optimizer=mezo-lora", "optimizer.lr=1e-2"])
    loaded = tiny("opt")
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:8]
    add_adapter(loaded.model, cfg.optimizer, cfg.model)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    optimizer = build_optimizer(cfg.optimizer, loaded.model, scorer, total_steps=3, seed=0)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    result = optimizer.step(batch, 0)
    assert (result.forwards, result.backwards) == (2, 0)
    moved = {n for n, p in loaded.model.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert moved and moved <= adapters
    assert all("lora_" in n for n in adapters)

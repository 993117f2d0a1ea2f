"""FT-AdaLoRA and DoRA through peft: AdaLoRA's penalty as peft's AdaLoraModel adds it, its
budget reaching the target rank at the last step and kept after it, and DoRA's magnitude."""

import pytest
import torch

from tests.conftest import model_cfg, tiny
from zoft.config import LoraConfig
from zoft.errors import ZoftError
from zoft.models.adapters import add_adapter
from zoft.optim.adalora import AdaLoraFineTuning, orthogonality_penalty
from zoft.optim.configs import AdamAdaLoraConfig, AdamDoraConfig
from zoft.optim.first_order import FullFineTuning
from zoft.scoring import build_scorer
from zoft.tasks import get_task


def _sst2(data_dir, n=16):
    task = get_task("sst2")
    return task, task.load_local("train", data_dir)[:n]


def _adalora(data_dir, steps, **kw):
    task, examples = _sst2(data_dir)
    loaded = tiny("opt")
    cfg = AdamAdaLoraConfig(lr=1e-2, schedule="constant", **kw)
    add_adapter(loaded.model, cfg, model_cfg("tiny-opt"))
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    return AdaLoraFineTuning(cfg, loaded.model, scorer, steps, seed=0), examples


def test_penalty_is_peft_adaloras_orthogonal_regularisation(data_dir):
    opt, _ = _adalora(data_dir, 4)
    terms = []
    for name, p in opt.model.named_parameters():
        if "lora_A.default" in name:
            terms.append(torch.norm(p @ p.T - torch.eye(p.shape[0]), p="fro"))
        elif "lora_B.default" in name:
            terms.append(torch.norm(p.T @ p - torch.eye(p.shape[1]), p="fro"))
    assert len(terms) == 8  # P and Q of the 4 adapted modules (q_proj, v_proj of 2 layers)
    expected = sum(terms) / len(terms)
    assert torch.allclose(orthogonality_penalty(opt.model), expected)


def test_the_penalty_enters_the_loss_once_per_batch(data_dir):
    opt, examples = _adalora(data_dir, 4, micro_batches=2)
    batch = examples[:4]
    opt.model.eval()
    with torch.no_grad():
        plain = opt.scorer.loss(opt.model, batch)
        penalty = orthogonality_penalty(opt.model)
        total, terms = opt.phase.scorer.loss_sum(opt.model, batch)
    assert torch.allclose(total / terms, plain + 0.5 * penalty, atol=1e-6)


def test_budget_reaches_the_target_rank_at_the_last_step_and_keeps_it(data_dir):
    steps, layers = 6, 4  # tiny-opt: 4 adapted modules (q_proj, v_proj of 2 layers)
    opt, examples = _adalora(data_dir, steps, init_r=4, lora=LoraConfig(r=2))
    for step in range(steps):
        opt.step(examples[4 * (step % 4) : 4 * (step % 4) + 4], step)
    values = [p for n, p in opt.model.named_parameters() if "lora_E.default" in n]
    assert len(values) == layers and all(v.numel() == 4 for v in values)
    assert sum(int((v != 0).sum()) for v in values) == 2 * layers
    assert opt.stats() == {"adalora_rank": 2.0, "adalora_budget": 2 * layers}
    pruned = [v == 0 for v in values]
    opt.budget.total_step = steps - 1  # past the end: the final pattern is applied again
    opt._allocate(steps)
    assert all(torch.equal(v == 0, was) for v, was in zip(values, pruned, strict=True))


def test_init_rank_below_the_target_is_refused():
    with pytest.raises(ZoftError, match="optimizer.init_r=4 is below optimizer.lora.r=8"):
        AdamAdaLoraConfig(init_r=4).check()


def test_adalora_adapter_needs_its_method():
    from zoft.models.adapters import AdapterError
    from zoft.optim.configs import AdamLoraConfig

    loaded = tiny("opt")
    with pytest.raises(AdapterError, match="needs optimizer=ft-adalora"):
        add_adapter(loaded.model, AdamLoraConfig(adapter="adalora"), model_cfg("tiny-opt"))


def test_dora_trains_a_magnitude_and_starts_at_the_base_model(data_dir):
    task, examples = _sst2(data_dir, 4)
    loaded, base = tiny("llama"), tiny("llama")
    cfg = AdamDoraConfig(lr=1e-2)
    add_adapter(loaded.model, cfg, model_cfg("tiny-llama"))
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in trainable)
    assert all("lora_" in n for n in trainable)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    loaded.model.eval()
    base.model.eval()
    with torch.no_grad():
        assert torch.allclose(
            scorer.scores(loaded.model, examples), scorer.scores(base.model, examples), atol=1e-5
        )
    opt = FullFineTuning(cfg, loaded.model, scorer, 2, seed=0)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    opt.step(examples, 0)
    moved = {n for n, p in loaded.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= set(trainable)
    assert any("lora_magnitude_vector" in n for n in moved)

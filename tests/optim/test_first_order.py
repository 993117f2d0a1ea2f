"""FT: AdamW with linear decay lowers the training loss of a tiny model."""

import pytest
import torch

from tests.conftest import tiny
from zoft.errors import ZoftError
from zoft.optim.first_order import AdamConfig, FullFineTuning, linear_schedule
from zoft.scoring import build_scorer
from zoft.tasks import get_task


def test_ft_lowers_the_training_loss(data_dir):
    loaded = tiny("opt")
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:8]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    opt = FullFineTuning(AdamConfig(lr=1e-3), loaded.model, scorer, total_steps=20, seed=0)
    losses = [opt.step(batch, s).loss for s in range(20)]
    assert losses[-1] < 0.5 * losses[0]


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = linear_schedule(warmup=2, total=10, kind="linear")
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == 1.0 and f(6) == 0.5 and f(10) == 0.0
    assert linear_schedule(0, 10, "constant")(9) == 1.0


def test_bf16_autocast_over_fp32_weights_trains(data_dir):
    loaded = tiny("opt")
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:8]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    opt = FullFineTuning(AdamConfig(lr=1e-3, amp="bf16"), loaded.model, scorer, 10, seed=0)
    losses = [opt.step(batch, s).loss for s in range(10)]
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_unknown_amp_is_refused():
    loaded = tiny("opt")
    with pytest.raises(ZoftError, match="optimizer.amp=fp8"):
        FullFineTuning(AdamConfig(amp="fp8"), loaded.model, None, 1, seed=0)


@pytest.mark.parametrize("name", ["ft", "ft-lora"])
def test_micro_batches_sum_to_the_whole_batch_gradient(name, data_dir):
    """Gradient accumulation: k micro-batches give the gradient of the whole batch's mean loss
    (llama: no dropout, so train mode is deterministic). Gradients are compared, not weights:
    Adam's first step is ±lr wherever |g| is tiny, which amplifies float noise."""
    from tests.conftest import model_cfg
    from zoft.models.adapters import add_adapter
    from zoft.optim.first_order import AdamLoraConfig

    config = {"ft": AdamConfig, "ft-lora": AdamLoraConfig}[name]
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:8]
    runs = []
    for k in (1, 4):
        loaded = tiny("llama")
        cfg = config(lr=1e-3, micro_batches=k, max_grad_norm=0.0)
        torch.manual_seed(0)  # the same random lora_A in both runs
        add_adapter(loaded.model, cfg, model_cfg("tiny-llama"))
        scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
        opt = FullFineTuning(cfg, loaded.model, scorer, 10, seed=0)
        opt.phase.scaler.step = _recording(opt.phase.scaler.step, opt.trainable())
        loss = opt.step(batch, 0).loss
        runs.append((loss, opt.phase.scaler.step.grads))
    (loss_whole, whole), (loss_acc, acc) = runs
    assert loss_acc == pytest.approx(loss_whole, rel=1e-5)
    assert whole and set(whole) == set(acc)
    assert all(("lora_" in n) == (name == "ft-lora") for n in whole)
    assert any(g.abs().max() > 0 for g in whole.values())  # (lora_A's is 0 while B = 0)
    for n, g in whole.items():
        assert torch.allclose(acc[n], g, rtol=1e-4, atol=1e-7), n


def _recording(step, params):
    """`step` that first keeps a copy of every gradient (in `.grads`)."""

    def record(optimizer):
        record.grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
        return step(optimizer)

    return record

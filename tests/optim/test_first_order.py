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

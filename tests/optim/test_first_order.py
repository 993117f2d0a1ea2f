"""FT: AdamW with linear decay lowers the training loss of a tiny model."""

import pytest
import torch

from tests.conftest import tiny
from zoft.errors import ZoftError
from zoft.optim.configs import AdamConfig
from zoft.optim.first_order import FullFineTuning, linear_schedule
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
    assert [f(0), f(1)] == [0.0, 0.5]  # HF: step / warmup, so the first step's rate is 0
    assert f(2) == 1.0 and f(6) == 0.5 and f(10) == 0.0
    assert linear_schedule(0, 10, "constant")(9) == 1.0


def test_warmup_factor_is_step_over_warmup_as_in_hf():
    """HF 4.28.1 get_linear_schedule_with_warmup: factor step / warmup while step < warmup."""
    f = linear_schedule(warmup=4, total=100, kind="linear")
    assert [f(s) for s in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert f(4) == 1.0


class RecordingScaler:
    """A GradScaler stand-in that records what it scales (by 1) and, when told to, behaves as
    the real one on an inf/NaN gradient: skips the optimizer step and halves its scale."""

    def __init__(self, skip: bool) -> None:
        self.skip, self.scale_value, self.scaled = skip, 2.0**16, []

    def is_enabled(self) -> bool:
        return True

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        self.scaled.append(loss.detach().item())
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def get_scale(self) -> float:
        return self.scale_value

    def step(self, optimizer) -> None:
        if not self.skip:
            optimizer.step()

    def update(self) -> None:
        if self.skip:
            self.scale_value /= 2


def _ft(data_dir, **kw):
    loaded = tiny("opt")
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:4]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    cfg = AdamConfig(**{"lr": 1e-3, **kw})
    return FullFineTuning(cfg, loaded.model, scorer, total_steps=10, seed=0), loaded.model, batch


def test_a_step_the_scaler_skips_does_not_advance_the_schedule(data_dir):
    opt, model, batch = _ft(data_dir)
    opt.phase.scaler = RecordingScaler(skip=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert opt.step(batch, 0).lr == pytest.approx(1e-3)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert opt.phase.scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # not 9e-4
    opt.phase.scaler.skip = False
    opt.step(batch, 1)
    assert opt.phase.scheduler.get_last_lr()[0] == pytest.approx(9e-4)


def test_the_scaled_quantity_is_the_batch_mean_loss(data_dir):
    opt, _, batch = _ft(data_dir)
    opt.phase.scaler = RecordingScaler(skip=False)
    result = opt.step(batch, 0)
    assert opt.phase.scaler.scaled == [pytest.approx(result.loss, rel=1e-6)]


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_loss_scaling_leaves_the_step_unchanged(data_dir, micro_batches):
    """A real (CPU) GradScaler on the mean gives the unscaled step's weights, micro-batches too."""
    plain, plain_model, batch = _ft(data_dir, micro_batches=micro_batches)
    scaled, scaled_model, _ = _ft(data_dir, micro_batches=micro_batches)
    scaled.phase.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    torch.manual_seed(0)  # the same dropout masks in both
    plain_loss = plain.step(batch, 0).loss
    torch.manual_seed(0)
    assert scaled.step(batch, 0).loss == plain_loss
    for (name, p), q in zip(plain_model.named_parameters(), scaled_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)


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
    from zoft.optim.configs import AdamLoraConfig

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

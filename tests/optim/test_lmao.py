"""LMAO against its definition: AdamW on the LoRA factors by backprop, then MeZO on every other
weight at the updated factors; FT-LoRA for contrast trains the factors only."""

import pytest
import torch

from tests.conftest import model_cfg, tiny
from zoft.errors import ZoftError
from zoft.models.adapters import add_adapter
from zoft.optim.configs import AdamLoraConfig, LmaoConfig
from zoft.optim.first_order import FullFineTuning
from zoft.optim.lmao import LMAO
from zoft.scoring import build_scorer
from zoft.tasks import get_task

PROBE = "model.decoder.layers.0.self_attn.q_proj.lora_B.default.weight"


class RecordingScorer:
    """Delegates to the real scorer; at every call made in eval mode (the ZO forwards; the LoRA
    phase runs in train mode) records a copy of one lora_B factor."""

    def __init__(self, scorer, model, name: str = PROBE) -> None:
        self.scorer, self.model = scorer, model
        self.param = dict(model.named_parameters())[name]
        self.seen: list[torch.Tensor] = []

    def _record(self) -> None:
        if not self.model.training:
            self.seen.append(self.param.detach().clone())

    def loss(self, model, batch):
        self._record()
        return self.scorer.loss(model, batch)

    def loss_sum(self, model, batch):
        self._record()
        return self.scorer.loss_sum(model, batch)

    def loss_sum_pair(self, model, batch):
        self._record()
        return self.scorer.loss_sum_pair(model, batch)


def _setup(data_dir, cfg, arch="opt"):
    loaded = tiny(arch)
    add_adapter(loaded.model, cfg, model_cfg(f"tiny-{arch}"))
    task = get_task("sst2")
    batch = task.load_local("train", data_dir)[:8]
    kind = "masked_lm" if arch == "roberta" else "causal_lm"
    scorer = build_scorer(kind, task, loaded.tokenizer, "mezo", 256)
    return loaded.model, scorer, batch


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _lmao(data_dir, arch="opt", **kw):
    cfg = LmaoConfig(**{"lr": 1e-2, "zo_lr": 1e-3, **kw})
    model, scorer, batch = _setup(data_dir, cfg, arch)
    return LMAO(cfg, model, scorer, total_steps=10, seed=0), model, batch


@pytest.mark.parametrize("arch", ["opt", "roberta"])
def test_one_step_moves_the_factors_and_every_base_weight(data_dir, arch):
    opt, model, batch = _lmao(data_dir, arch)
    before = _snapshot(model)
    result = opt.step(batch, 0)
    assert result.loss > 0 and result.projected_grad != 0.0
    for name, p in model.named_parameters():
        if ".lora_A." in name:
            # B = 0 at the start, so A's first gradient is exactly 0 and AdamW leaves A alone
            assert torch.equal(p, before[name]), name
        else:  # lora_B, and every base weight (base_layer, embeddings, norms, biases)
            assert not torch.equal(p, before[name]), name
    assert any(".lora_B." in n for n in before) and any("base_layer" in n for n in before)


def test_two_lora_steps_move_lora_a_too(data_dir):
    opt, model, batch = _lmao(data_dir, lora_steps=2)
    before = _snapshot(model)
    opt.step(batch, 0)
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_no_gradients_are_kept_and_base_weights_stay_frozen(data_dir):
    opt, model, batch = _lmao(data_dir)
    for step in range(2):
        opt.step(batch, step)
        for name, p in model.named_parameters():
            assert p.grad is None, name
            assert p.requires_grad == ("lora_" in name), name
    assert set(opt.adapter) == {n for n in dict(model.named_parameters()) if "lora_" in n}
    assert set(opt.base).isdisjoint(opt.adapter)


@pytest.mark.parametrize("probes,calls", [("sequential", 2), ("paired", 3)])
@pytest.mark.parametrize("zo_first", [False, True])
def test_zo_phase_sees_the_factors_of_its_turn(data_dir, zo_first, probes, calls):
    cfg = LmaoConfig(lr=1e-2, zo_lr=1e-3, zo_first=zo_first, probes=probes)
    model, scorer, batch = _setup(data_dir, cfg)
    recorder = RecordingScorer(scorer, model)
    opt = LMAO(cfg, model, recorder, total_steps=10, seed=0)
    old = recorder.param.detach().clone()
    opt.step(batch, 0)
    new = recorder.param.detach().clone()
    assert not torch.equal(old, new)
    # L(θ+εz) and L(θ−εz); the first paired step also runs them sequentially, to compare
    assert len(recorder.seen) == calls
    expected = old if zo_first else new
    assert all(torch.equal(seen, expected) for seen in recorder.seen)


def test_step_result_counts_passes(data_dir):
    opt, _, batch = _lmao(data_dir, lora_steps=2, queries=2)
    result = opt.step(batch, 0)
    assert result.forwards == 2 + 2 * 2
    assert result.backwards == 2
    assert result.lr == pytest.approx(1e-2)  # the LoRA rate before its first step


def test_zo_update_is_minus_zo_lr_g_z(data_dir):
    opt, model, batch = _lmao(data_dir, zo_lr=1e-2, zo_weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in opt.base.items()}
    result = opt.step(batch, 0)
    g = result.projected_grad
    assert g != 0.0
    for name, p in opt.base.items():
        expected = before[name] - 1e-2 * g * opt.engine.direction(name, 0)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
        assert (p.detach() - before[name]).abs().max() > 1e-5  # far above the tolerance


def test_zo_weight_decay_shrinks_base_matrices_only(data_dir):
    lr, decay = 1e-2, 0.5
    opt, model, batch = _lmao(data_dir, zo_lr=lr, zo_weight_decay=decay)
    before = {n: p.detach().clone() for n, p in opt.base.items()}
    g = opt.step(batch, 0).projected_grad
    for name, p in opt.base.items():
        keep = 1 - lr * decay if p.ndim >= 2 else 1.0
        expected = before[name] * keep - lr * g * opt.engine.direction(name, 0)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-6)


def test_lowrank_directions_move_base_matrices_by_low_rank(data_dir):
    opt, model, batch = _lmao(data_dir, directions="lowrank", rank=2, interval=5)
    before = {n: p.detach().clone() for n, p in opt.base.items()}
    opt.step(batch, 0)
    matrices = [n for n, p in opt.base.items() if p.ndim == 2]
    assert "model.decoder.layers.0.self_attn.q_proj.base_layer.weight" in matrices
    for name in matrices:
        delta = opt.base[name].detach() - before[name]
        assert delta.abs().max() > 0, name
        assert torch.linalg.matrix_rank(delta) <= 2, name


def _after_one_step(data_dir, checkpointing: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # same lora_A init (peft draws it) and the same train-mode dropout
    # adam_eps=1: AdamW's first step is lr·g/(|g|+1), not lr·sign(g), so it shows the gradient
    opt, model, batch = _lmao(
        data_dir, gradient_checkpointing=checkpointing, lora_steps=2, adam_eps=1.0, lr=1.0
    )
    assert model.is_activation_checkpointing == checkpointing
    before = _snapshot(model)
    opt.step(batch, 0)
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    return _snapshot(model)


def test_gradient_checkpointing_gives_the_same_update(data_dir):
    plain = _after_one_step(data_dir, checkpointing=False)
    checkpointed = _after_one_step(data_dir, checkpointing=True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-8)


def test_lmao_refuses_a_config_without_lora(data_dir):
    loaded = tiny("opt")
    with pytest.raises(ZoftError, match="optimizer.adapter=lora"):
        LMAO(LmaoConfig(adapter="none"), loaded.model, None, total_steps=1, seed=0)


@pytest.mark.parametrize("key", ["lora_steps", "queries"])
def test_lmao_refuses_zero_counts(data_dir, key):
    cfg = LmaoConfig(**{key: 0})
    model, scorer, _ = _setup(data_dir, cfg)
    with pytest.raises(ZoftError, match=f"optimizer.{key}=0"):
        LMAO(cfg, model, scorer, total_steps=1, seed=0)


def test_ft_lora_moves_only_the_adapters(data_dir):
    cfg = AdamLoraConfig(lr=1e-2)
    model, scorer, batch = _setup(data_dir, cfg)
    opt = FullFineTuning(cfg, model, scorer, total_steps=10, seed=0)
    assert set(opt.trainable()) == {n for n, _ in model.named_parameters() if "lora_" in n}
    before = _snapshot(model)
    result = opt.step(batch, 0)
    assert result.forwards == 1 and result.backwards == 1
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            assert not torch.equal(p, before[name]), name
        elif "lora_" not in name:
            assert torch.equal(p, before[name]), name
            assert p.grad is None, name


@pytest.mark.parametrize("directions", ["gaussian", "lowrank"])
@pytest.mark.parametrize("arch", ["opt", "roberta"])
def test_the_zo_phase_pairs_its_probes_through_the_adapters(data_dir, arch, directions):
    """The LoRA-wrapped base layers pair like plain ones: the first step's comparison with
    sequential probes passes, and later steps run one paired forward."""
    opt, _, batch = _lmao(data_dir, arch, directions=directions, probes="paired", rank=2)
    for step in range(2):
        opt.step(batch, step)
    assert opt.engine.paired is True
    assert opt.stats()["paired_probes"] == 1.0


def test_lora_schedule_spans_every_lora_step_of_the_run(data_dir):
    """lora_steps=k: the linear decay runs over steps·k LoRA steps, so the last run step still
    trains the factors (a schedule over `steps` alone reaches 0 after steps/k)."""
    opt, _, batch = _lmao(data_dir, lora_steps=2)  # 10 run steps: 20 LoRA steps
    rates = []
    for step in range(10):
        rates.append(opt.phase.scheduler.get_last_lr()[0])
        opt.step(batch, step)
    assert rates == pytest.approx([1e-2 * (20 - 2 * s) / 20 for s in range(10)])
    assert opt.phase.scheduler.get_last_lr()[0] == pytest.approx(0.0)


def test_zo_phase_runs_under_its_autocast(data_dir, monkeypatch):
    """optimizer.zo_amp: the ZO forwards run under autocast (the official --fp16 does it);
    the LoRA phase keeps optimizer.amp."""
    import zoft.optim.lmao as lmao

    seen = []

    def spy(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real(*args, **kwargs)

    real = lmao.batch_loss
    monkeypatch.setattr(lmao, "batch_loss", spy)
    for zo_amp, expected in [(None, False), ("bf16", True)]:
        seen.clear()
        opt, _, batch = _lmao(data_dir, zo_amp=zo_amp, probes="sequential")
        opt.step(batch, 0)
        assert seen and all(enabled == expected for enabled, _ in seen)
        if expected:
            assert all(dtype == torch.bfloat16 for _, dtype in seen)


def test_zo_amp_refuses_an_unknown_dtype():
    with pytest.raises(ZoftError, match="zo_amp"):
        LmaoConfig(zo_amp="fp8").check()

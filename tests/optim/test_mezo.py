"""MeZO against its equations: unbiased direction on a quadratic, exact restore, determinism."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import tiny
from zoft.optim.configs import MezoConfig
from zoft.optim.mezo import MeZO
from zoft.scoring import build_scorer
from zoft.tasks import get_task


class Quadratic(nn.Module):
    """L(θ) = ½ θᵀAθ + bᵀθ, with a known gradient Aθ + b."""

    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        m = torch.randn(dim, dim, generator=gen)
        self.register_buffer("a", m @ m.T / dim + torch.eye(dim))
        self.register_buffer("b", torch.randn(dim, generator=gen))
        self.theta = nn.Parameter(torch.randn(dim, generator=gen))

    def forward(self) -> torch.Tensor:
        return 0.5 * self.theta @ self.a @ self.theta + self.b @ self.theta

    def gradient(self) -> torch.Tensor:
        return self.a @ self.theta.detach() + self.b


class ModelLoss:
    """A scorer stand-in whose loss is the model's own output."""

    def loss(self, model, batch):
        return model()


def _mezo(model, scorer, seed=0, **kw):
    if isinstance(scorer, ModelLoss):
        kw.setdefault("probes", "sequential")  # a loss without a batch has no copies to pair
    return MeZO(MezoConfig(**kw), model, scorer, total_steps=10, seed=seed)


def test_mean_estimate_points_along_the_true_gradient():
    model = Quadratic()
    opt = _mezo(model, ModelLoss(), eps=1e-3)
    total = torch.zeros_like(model.theta)
    n = 3000
    for step in range(n):
        g, _ = opt.projected_gradient([], step)
        total += g * opt.engine.direction("theta", step)
    cosine = torch.nn.functional.cosine_similarity(total / n, model.gradient(), dim=0)
    assert cosine > 0.9


def test_step_applies_minus_lr_g_z_exactly():
    model = Quadratic()
    opt = _mezo(model, ModelLoss(), lr=1e-2, eps=1e-3)
    before = model.theta.detach().clone()
    result = opt.step([], step=0)
    z = opt.engine.direction("theta", 0)
    torch.testing.assert_close(model.theta.detach(), before - 1e-2 * result.projected_grad * z)
    assert result.forwards == 2 and result.backwards == 0


def _sst2_batch(data_dir):
    task = get_task("sst2")
    return task, task.load_local("train", data_dir)[:8]


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_parameters_are_bit_identical_after_the_probes(data_dir, dtype):
    loaded = tiny("opt", dtype=dtype)
    task, batch = _sst2_batch(data_dir)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    opt = _mezo(loaded.model, scorer, eps=1e-2)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    g, loss = opt.projected_gradient(batch, step=0)
    assert g != 0.0 and isinstance(loss, float)
    assert all(torch.equal(p, before[n]) for n, p in loaded.model.named_parameters())


def _trajectory(data_dir, seed):
    loaded = tiny("opt")
    task, batch = _sst2_batch(data_dir)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    opt = _mezo(loaded.model, scorer, seed=seed, lr=1e-3, eps=1e-3)
    losses = [opt.step(batch, s).loss for s in range(3)]
    return losses, torch.cat([p.detach().flatten() for p in loaded.model.parameters()])


def test_same_seed_same_trajectory_other_seed_differs(data_dir):
    losses_a, params_a = _trajectory(data_dir, seed=0)
    losses_b, params_b = _trajectory(data_dir, seed=0)
    losses_c, params_c = _trajectory(data_dir, seed=1)
    assert losses_a == losses_b and torch.equal(params_a, params_b)
    assert not torch.equal(params_a, params_c)


def test_weight_decay_skips_one_dimensional_parameters():
    model = nn.Linear(4, 3)
    model.forward = lambda: model.weight.sum() * 0  # zero loss: only decay moves the weights
    scorer = SimpleNamespace(loss=lambda m, b: m())
    opt = _mezo(model, scorer, lr=0.1, weight_decay=0.5, probes="sequential")
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    opt.step([], 0)
    torch.testing.assert_close(model.weight.detach(), w * (1 - 0.05))
    torch.testing.assert_close(model.bias.detach(), b)

"""LOZO and LOZO-M against their equations: the estimator's expectation r·∇ (code convention),
the lazy subspace, the update along exactly the probed direction, exact restore, and the
factored momentum with its projection."""

import pytest
import torch
from torch import nn

from tests.conftest import tiny
from zoft.errors import ZoftError
from zoft.optim.directions import LowRankDirections
from zoft.optim.lozo import LOZO, LOZOM, LozoConfig, LozoMConfig, project_momentum
from zoft.optim.perturb import PerturbationEngine


class MatrixQuadratic(nn.Module):
    """L(X) = ½‖A X − B‖² + cᵀb for an m×n matrix X and a bias b, with known gradients."""

    def __init__(self, m: int = 6, n: int = 5) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("a", torch.randn(m, m, generator=gen) / m**0.5 + torch.eye(m))
        self.register_buffer("target", torch.randn(m, n, generator=gen))
        self.register_buffer("c", torch.randn(n, generator=gen))
        self.x = nn.Parameter(torch.randn(m, n, generator=gen))
        self.bias = nn.Parameter(torch.randn(n, generator=gen))

    def forward(self) -> torch.Tensor:
        residual = self.a @ self.x - self.target
        return 0.5 * (residual**2).sum() + self.c @ self.bias + 0.5 * (self.bias**2).sum()

    def gradient_x(self) -> torch.Tensor:
        return self.a.T @ (self.a @ self.x.detach() - self.target)


class ModelLoss:
    def loss(self, model, batch):
        return model()


def _lozo(model, cls=LOZO, config=LozoConfig, **kw):
    kw.setdefault("probes", "sequential")  # a loss without a batch has no copies to pair
    return cls(config(**kw), model, ModelLoss(), total_steps=100, seed=0)


def test_estimate_expectation_is_rank_times_gradient():
    """E[c·U Vᵀ] = r·∇ for Gaussian U, V: the 1/r the paper has is folded into η (code)."""
    torch.manual_seed(0)
    model = MatrixQuadratic().double()
    rank = 3
    opt = _lozo(model, eps=1e-4, rank=rank, interval=1)
    directions = opt.engine.directions
    total = torch.zeros_like(model.x, dtype=torch.float64)
    n = 20000
    for step in range(n):
        g, _ = opt.projected_gradient([], step)
        total += g * directions.dense("x", model.x, step, 0).double()
    mean = total / n
    expected = rank * model.gradient_x()
    relative = (mean - expected).norm() / expected.norm()
    assert relative < 0.1, relative
    # and not ∇ alone: the factor r is really there
    assert (mean - model.gradient_x()).norm() / expected.norm() > 0.5


def test_v_changes_exactly_every_interval_steps_and_u_every_step():
    directions = LowRankDirections(seed=1, rank=2, interval=4)
    p = torch.zeros(6, 5)
    vs = [directions.factors("w", p, step, 0)[1] for step in range(10)]
    us = [directions.factors("w", p, step, 0)[0] for step in range(10)]
    for step in range(1, 10):
        same_block = step % 4 != 0
        assert torch.equal(vs[step], vs[step - 1]) == same_block, step
        assert not torch.equal(us[step], us[step - 1])
    assert vs[0].shape == (5, 2) and us[0].shape == (6, 2)


def test_directions_are_low_rank_for_matrices_and_gaussian_for_vectors():
    directions = LowRankDirections(seed=0, rank=2, interval=3)
    z = directions.dense("w", torch.zeros(8, 7), step=0, query=0)
    assert torch.linalg.matrix_rank(z) == 2
    conv = directions.dense("k", torch.zeros(4, 3, 2, 2), step=0, query=0)
    assert conv.shape == (4, 3, 2, 2) and torch.linalg.matrix_rank(conv.reshape(4, -1)) == 2
    bias = directions.dense("b", torch.zeros(9), step=0, query=0)
    assert bias.shape == (9,) and torch.linalg.matrix_rank(bias.unsqueeze(0)) == 1


def test_invalid_rank_or_interval_is_refused():
    with pytest.raises(ZoftError, match="optimizer.rank"):
        LowRankDirections(seed=0, rank=0, interval=5)


@pytest.mark.parametrize("step", [0, 3, 4, 5, 8])  # interval 4: steps 4 and 8 start new blocks
def test_update_uses_exactly_the_probed_direction(step):
    """Also on the steps that resample V (the official code's update regenerates a different
    U there)."""
    model = MatrixQuadratic()
    lr = 1e-2
    opt = _lozo(model, lr=lr, eps=1e-3, rank=2, interval=4)
    probed = {}

    def spy(name, param, step_, query, index):
        z = LowRankDirections.dense_block(opt.engine.directions, name, param, step_, query, index)
        probed.setdefault(name, z.clone())
        assert torch.equal(z, probed[name])  # every use of the step's direction is identical
        return z

    opt.engine.directions.dense_block = spy  # the probes; the update applies U Vᵀ by addmm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = opt.step([], step)
    for name, p in model.named_parameters():
        expected = before[name] - lr * result.projected_grad * probed[name]
        assert torch.allclose(p.detach(), expected, atol=1e-6), name


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_low_rank_probes_restore_bit_exactly(dtype):
    model = tiny("opt", dtype=dtype).model.eval()
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    engine = PerturbationEngine(model, params, 0, LowRankDirections(0, rank=2, interval=3))
    ids = torch.randint(5, 400, (2, 10))
    with torch.no_grad():
        with engine.probe(step=2, scale=1e-2):
            plus = model(input_ids=ids).logits.float().sum()
        with engine.probe(step=2, scale=-1e-2):
            minus = model(input_ids=ids).logits.float().sum()
    assert plus != minus
    assert all(torch.equal(p, before[n]) for n, p in params.items())


def test_momentum_projection_equals_the_formula():
    gen = torch.Generator().manual_seed(0)
    m, n, r = 7, 11, 3
    state = torch.randn(m, r, generator=gen)
    v_old, v_new = torch.randn(n, r, generator=gen), torch.randn(n, r, generator=gen)
    expected = state @ v_old.T @ v_new / n
    assert torch.allclose(project_momentum(state, v_old, v_new), expected, atol=1e-6)


def test_lozo_m_keeps_m_by_r_factors_and_follows_its_recursion():
    model = MatrixQuadratic()
    lr, beta, rank, interval = 1e-2, 0.8, 2, 3
    opt = _lozo(model, LOZOM, LozoMConfig, lr=lr, eps=1e-3, rank=rank, interval=interval, beta=beta)
    directions = opt.engine.directions
    expected_n = torch.zeros(6, rank)
    expected_m = torch.zeros(5)
    for step in range(7):
        x_before, b_before = model.x.detach().clone(), model.bias.detach().clone()
        result = opt.step([], step)
        c = result.projected_grad
        u, v = directions.factors("x", model.x, step, 0)
        if step and step % interval == 0:  # a new subspace: project first
            v_old = directions.v("x", model.x, step // interval - 1)
            expected_n = expected_n @ (v_old.T @ v) / v.shape[0]
        expected_n = beta * expected_n + (1 - beta) * c * u
        expected_m = beta * expected_m + (1 - beta) * c * directions.dense(
            "bias", model.bias, step, 0
        )
        assert opt.momentum["x"].shape == (6, rank)
        assert torch.allclose(opt.momentum["x"], expected_n, atol=1e-6)
        assert torch.allclose(model.x.detach(), x_before - lr * expected_n @ v.T, atol=1e-6)
        assert torch.allclose(model.bias.detach(), b_before - lr * expected_m, atol=1e-6)


def test_lozo_m_beta_outside_unit_interval_is_refused():
    with pytest.raises(ZoftError, match="optimizer.beta"):
        _lozo(MatrixQuadratic(), LOZOM, LozoMConfig, beta=1.0)


def test_lozo_decays_matrices_only():
    model = MatrixQuadratic()
    opt = _lozo(model, lr=1e-2, weight_decay=0.5)
    x0, b0 = model.x.detach().clone(), model.bias.detach().clone()
    result = opt.step([], 0)
    z_x = opt.engine.directions.dense("x", model.x, 0, 0)
    z_b = opt.engine.directions.dense("bias", model.bias, 0, 0)
    g = result.projected_grad
    assert torch.allclose(model.x.detach(), x0 * (1 - 5e-3) - 1e-2 * g * z_x, atol=1e-6)
    assert torch.allclose(model.bias.detach(), b0 - 1e-2 * g * z_b, atol=1e-6)

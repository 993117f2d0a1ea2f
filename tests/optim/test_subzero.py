"""SubZero against its definition: z = (√(mn)/r)·U Σ Vᵀ with orthonormal U, V from the QR of
keyed normals, the lazy subspace, Σ fresh every step, the update along the probed z, restore."""

import math

import pytest
import torch

from tests.optim.test_lozo import MatrixQuadratic, ModelLoss
from zoft.optim.configs import SubZeroConfig
from zoft.optim.directions import SubspaceDirections, direction_seed
from zoft.optim.subzero import SubZero


def _subzero(model, **kw):
    kw.setdefault("probes", "sequential")  # a loss without a batch has no copies to pair
    return SubZero(SubZeroConfig(**kw), model, ModelLoss(), total_steps=100, seed=0)


def _z(directions, name, param, step):
    u, v = directions.factors(name, param, step, 0)
    return (u @ v.T).double()


@pytest.mark.parametrize("rng", ["philox", "torch"])
def test_direction_is_the_scaled_product_of_orthonormal_bases_and_a_normal_core(rng):
    directions = SubspaceDirections(seed=3, rank=3, interval=4, rng=rng)
    p = torch.zeros(12, 7)
    m, n, r = 12, 7, 3
    step = 5
    normals = directions.normals
    block = step // 4
    g_u = normals.matrix((m, r), direction_seed(3, block, -1, "w#SU"), p.device)
    g_v = normals.matrix((n, r), direction_seed(3, block, -1, "w#SV"), p.device)
    core = normals.matrix((r, r), direction_seed(3, step, 0, "w#S"), p.device)
    q_u, q_v = torch.linalg.qr(g_u.double()).Q, torch.linalg.qr(g_v.double()).Q
    expected = math.sqrt(m * n) / r * q_u @ core.double() @ q_v.T
    assert torch.allclose(_z(directions, "w", p, step), expected, atol=1e-5)
    u, v = directions.factors("w", p, step, 0)
    assert torch.allclose(v.T @ v, torch.eye(r), atol=1e-5)  # V is orthonormal
    # ‖z‖² = (mn/r²)‖Σ‖², so E‖z‖² = mn: a dense Gaussian's norm
    norm = _z(directions, "w", p, step).pow(2).sum()
    assert norm.item() == pytest.approx(m * n / r**2 * core.double().pow(2).sum().item(), rel=1e-5)


def test_bases_change_every_interval_steps_and_the_core_every_step():
    directions = SubspaceDirections(seed=1, rank=2, interval=3)
    p = torch.zeros(6, 5)
    vs = [directions.v("w", p, directions.block(s)) for s in range(7)]
    zs = [_z(directions, "w", p, s) for s in range(7)]
    for step in range(1, 7):
        assert torch.equal(vs[step], vs[step - 1]) == (step % 3 != 0), step
        assert not torch.equal(zs[step], zs[step - 1])
    # within a block z stays in span(U) × span(V): projecting on the bases changes nothing
    u_basis = torch.linalg.qr(directions.u("w", p, 0, 0)).Q.double()
    for step in range(3):
        z = zs[step]
        assert torch.allclose(u_basis @ (u_basis.T @ z), z, atol=1e-5)


def test_rank_is_capped_by_a_narrow_matrix_and_vectors_are_gaussian():
    directions = SubspaceDirections(seed=0, rank=8, interval=10)
    narrow = torch.zeros(3, 20)
    u, v = directions.factors("narrow", narrow, 0, 0)
    assert u.shape == (3, 3) and v.shape == (20, 3)
    assert directions.low_rank("bias", torch.zeros(5), 0, 0) is None


def test_update_uses_exactly_the_probed_direction_and_the_probes_restore():
    model = MatrixQuadratic()
    opt = _subzero(model, lr=1e-2, rank=2, interval=3)
    x0, b0 = model.x.detach().clone(), model.bias.detach().clone()
    estimates, _ = opt.projected_gradients([], 0)
    assert torch.equal(model.x, x0) and torch.equal(model.bias, b0)  # bit-identical after probes
    opt.apply_update(0, estimates)
    directions = opt.engine.directions
    z_x = _z(directions, "x", model.x, 0)
    z_b = directions.dense("bias", model.bias, 0, 0).double()
    g = estimates[0]
    assert torch.allclose(model.x.double(), x0.double() - 1e-2 * g * z_x, atol=1e-6)
    assert torch.allclose(model.bias.double(), b0.double() - 1e-2 * g * z_b, atol=1e-6)


def test_mean_estimate_is_an_unbiased_multiple_of_the_gradient_in_expectation():
    """E[g z] = E[z zᵀ]∇ = ∇ for z with E[z zᵀ] = I (the √(mn)/r scaling): averaged over many
    subspaces (interval 1) the estimate points along the gradient."""
    torch.manual_seed(0)
    model = MatrixQuadratic().double()
    opt = _subzero(model, eps=1e-4, rank=2, interval=1, rng="torch")
    directions = opt.engine.directions
    total = torch.zeros_like(model.x, dtype=torch.float64)
    n = 4000
    for step in range(n):
        g, _ = opt.projected_gradient([], step)
        total += g * _z(directions, "x", model.x, step)
    mean, grad = total / n, model.gradient_x()
    assert (mean - grad).norm() / grad.norm() < 0.25

"""LOZO and LOZO-M against their equations: the estimator's expectation r·∇ (code convention),
the lazy subspace, the update along exactly the probed direction, exact restore, and the
factored momentum with its projection."""

import pytest
import torch
from torch import nn

from tests.conftest import compose, tiny
from zoft.errors import ZoftError
from zoft.optim.configs import LozoConfig, LozoMConfig
from zoft.optim.directions import LowRankDirections
from zoft.optim.lozo import LOZO, LOZOM, project_momentum
from zoft.optim.perturb import PerturbationEngine
from zoft.run.rundir import config_digest


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
    kw.setdefault("rng", "torch")  # the spies below read dense_block: the unfused torch path
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
    """From zero (momentum_init=zero, zoft's earlier rule): N₁ = (1−β)c₁U₁."""
    model = MatrixQuadratic()
    lr, beta, rank, interval = 1e-2, 0.8, 2, 3
    opt = _lozo(model, LOZOM, LozoMConfig, lr=lr, eps=1e-3, rank=rank, interval=interval,
                beta=beta, momentum_init="zero")  # fmt: skip
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


def _float64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def test_lozo_m_first_step_moves_by_the_whole_first_estimate():
    """The official rule (optsuite/LOZO lowrank_zo_update_momentum): N₁ = c₁U₁ and m₁ = c₁z₁, so
    X₁ = X₀ − η(c₁U₁V₁ᵀ + λX₀), not (1−β) of it; recomputed here in float64 from c, U, V."""
    model = MatrixQuadratic()
    lr, beta, decay = 1e-2, 0.9, 0.5
    opt = _lozo(model, LOZOM, LozoMConfig, lr=lr, eps=1e-3, rank=2, interval=3, beta=beta,
                weight_decay=decay)  # fmt: skip
    x0, b0 = _float64(model.x), _float64(model.bias)
    c = opt.step([], 0).projected_grad
    u, v = (_float64(t) for t in opt.engine.directions.factors("x", model.x, 0, 0))
    z_bias = _float64(opt.engine.directions.dense("bias", model.bias, 0, 0))
    expected_x = x0 - lr * (c * u @ v.T + decay * x0)
    expected_b = b0 - lr * c * z_bias  # 1-D parameters are not decayed
    assert torch.allclose(_float64(model.x), expected_x, rtol=0, atol=1e-6)
    assert torch.allclose(_float64(model.bias), expected_b, rtol=0, atol=1e-6)
    moved = (x0 * (1 - lr * decay) - _float64(model.x)).norm()
    assert moved == pytest.approx((lr * c * u @ v.T).norm().item(), rel=1e-4)  # not 1 − β of it
    assert torch.allclose(_float64(opt.momentum["x"]), c * u, rtol=0, atol=1e-6)
    assert torch.allclose(_float64(opt.momentum["bias"]), c * z_bias, rtol=0, atol=1e-6)


def test_lozo_m_second_step_and_a_new_subspace_follow_the_official_recursion():
    """N₂ = βN₁ + (1−β)c₂U₂ in the same subspace; N₄ = βN₃(V_oldᵀV_new)/n + (1−β)c₄U₄ (ν = 3)."""
    model = MatrixQuadratic()
    lr, beta, interval = 1e-2, 0.9, 3
    opt = _lozo(model, LOZOM, LozoMConfig, lr=lr, eps=1e-3, rank=2, interval=interval, beta=beta)
    directions = opt.engine.directions
    for step in range(interval + 1):
        previous_n = _float64(opt.momentum["x"]) if step else None
        previous_m = _float64(opt.momentum["bias"]) if step else None
        x_before = _float64(model.x)
        c = opt.step([], step).projected_grad
        u, v = (_float64(t) for t in directions.factors("x", model.x, step, 0))
        z_bias = _float64(directions.dense("bias", model.bias, step, 0))
        if step == 0:
            expected_n, expected_m = c * u, c * z_bias
        else:
            if step % interval == 0:
                v_old = _float64(directions.v("x", model.x, step // interval - 1))
                previous_n = previous_n @ v_old.T @ v / v.shape[0]
            expected_n = beta * previous_n + (1 - beta) * c * u
            expected_m = beta * previous_m + (1 - beta) * c * z_bias
        assert torch.allclose(_float64(opt.momentum["x"]), expected_n, rtol=0, atol=1e-6), step
        assert torch.allclose(_float64(opt.momentum["bias"]), expected_m, rtol=0, atol=1e-6)
        assert torch.allclose(_float64(model.x), x_before - lr * expected_n @ v.T, atol=1e-6)


@pytest.mark.parametrize("momentum_init", ["first_estimate", "zero"])
def test_lozo_m_resumed_from_its_state_dict_is_bit_identical(momentum_init):
    """The momentum's state_dict keys are unchanged, so checkpoints from before the rule still
    load, and a resumed run continues exactly."""
    kw = dict(lr=1e-2, eps=1e-3, rank=2, interval=3, momentum_init=momentum_init)
    whole = MatrixQuadratic()
    opt = _lozo(whole, LOZOM, LozoMConfig, **kw)
    for step in range(6):
        opt.step([], step)
    resumed = MatrixQuadratic()
    first = _lozo(resumed, LOZOM, LozoMConfig, **kw)
    for step in range(2):
        first.step([], step)
    state = first.state_dict()
    assert {"momentum", "momentum_block"} <= set(state)
    second = _lozo(resumed, LOZOM, LozoMConfig, **kw)
    second.load_state_dict(state)
    for step in range(2, 6):
        second.step([], step)
    assert torch.equal(resumed.x, whole.x) and torch.equal(resumed.bias, whole.bias)


def test_lozo_m_unknown_momentum_init_is_refused():
    with pytest.raises(ZoftError, match="optimizer.momentum_init"):
        _lozo(MatrixQuadratic(), LOZOM, LozoMConfig, momentum_init="ones")


def test_lozo_m_digest_changes_only_with_the_new_default(monkeypatch):
    """momentum_init=zero (with the torch generator of those runs) computes what LOZO-M computed
    before the key existed, so those runs keep their digest (aea6f0c65d); the official
    first-estimate default is a new computation."""
    monkeypatch.setenv("ZOFT_DATA", "/data")
    legacy = config_digest(
        compose(["optimizer=lozo-m", "optimizer.momentum_init=zero", "optimizer.rng=torch"])
    )
    assert legacy == "aea6f0c65d"
    assert config_digest(compose(["optimizer=lozo-m"])) != legacy

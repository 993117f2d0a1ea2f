"""MeZO-M against its recursion: m ← βm + (1−β)ĝ, θ ← θ − η(m + λθ), recomputed in float64 from
the step's own estimates and directions; its first step, its queries, exact resume."""

import pytest
import torch

from tests.optim.test_lozo import MatrixQuadratic, ModelLoss
from zoft.errors import ZoftError
from zoft.optim.configs import MezoMomentumConfig
from zoft.optim.mezo_momentum import MezoMomentum


def _mezo_m(model, **kw):
    kw.setdefault("probes", "sequential")  # a loss without a batch has no copies to pair
    return MezoMomentum(MezoMomentumConfig(**kw), model, ModelLoss(), total_steps=10, seed=0)


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def _estimate(opt, name, param, step, estimates):
    """(1/q) Σ g_q z_q in float64, from the directions the engine drew."""
    zs = [_f64(opt.engine.directions.dense(name, param, step, q)) for q in range(len(estimates))]
    return sum(g * z for g, z in zip(estimates, zs, strict=True)) / len(estimates)


@pytest.mark.parametrize("rng", ["philox", "torch"])
@pytest.mark.parametrize("queries", [1, 2])
def test_mezo_m_follows_the_heavy_ball_recursion(rng, queries):
    model = MatrixQuadratic()
    lr, beta, decay = 1e-2, 0.8, 0.5
    opt = _mezo_m(model, lr=lr, eps=1e-3, beta=beta, weight_decay=decay, rng=rng, queries=queries)
    momentum = {}
    for step in range(4):
        before = {n: _f64(p) for n, p in model.named_parameters()}
        estimates, _ = opt.projected_gradients([], step)
        opt.apply_update(step, estimates)
        for name, p in model.named_parameters():
            g_hat = _estimate(opt, name, p, step, estimates)
            momentum[name] = g_hat if step == 0 else beta * momentum[name] + (1 - beta) * g_hat
            lam = decay if p.ndim >= 2 else 0.0  # biases are not decayed
            expected = before[name] - lr * (momentum[name] + lam * before[name])
            assert torch.allclose(_f64(p), expected, rtol=0, atol=1e-6), (step, name)
            assert torch.allclose(_f64(opt.momentum[name]), momentum[name], rtol=1e-6, atol=1e-6)
            assert opt.momentum[name].dtype == torch.float32  # the dense state is fp32


def test_mezo_m_zero_init_starts_from_zero_momentum():
    model = MatrixQuadratic()
    lr, beta = 1e-2, 0.9
    opt = _mezo_m(model, lr=lr, eps=1e-3, beta=beta, momentum_init="zero")
    x0 = _f64(model.x)
    estimates, _ = opt.projected_gradients([], 0)
    opt.apply_update(0, estimates)
    g_hat = _estimate(opt, "x", model.x, 0, estimates)
    assert torch.allclose(_f64(model.x), x0 - lr * (1 - beta) * g_hat, rtol=0, atol=1e-6)


def test_mezo_m_with_beta_zero_is_mezo():
    """β = 0 leaves m = ĝ: the update is MeZO's θ − η(g·z + λθ), bit for bit in fp32."""
    from zoft.optim.configs import MezoConfig
    from zoft.optim.mezo import MeZO

    plain, heavy = MatrixQuadratic(), MatrixQuadratic()
    mezo = MeZO(MezoConfig(lr=1e-2, probes="sequential"), plain, ModelLoss(), 10, seed=0)
    mezo_m = _mezo_m(heavy, lr=1e-2, beta=0.0)
    for step in range(3):
        mezo.step([], step)
        mezo_m.step([], step)
    assert torch.allclose(plain.x, heavy.x, rtol=0, atol=1e-7)
    assert torch.allclose(plain.bias, heavy.bias, rtol=0, atol=1e-7)


def test_mezo_m_resumed_from_its_state_dict_is_bit_identical():
    kw = dict(lr=1e-2, eps=1e-3, beta=0.9)
    whole = MatrixQuadratic()
    opt = _mezo_m(whole, **kw)
    for step in range(5):
        opt.step([], step)
    resumed = MatrixQuadratic()
    first = _mezo_m(resumed, **kw)
    for step in range(2):
        first.step([], step)
    second = _mezo_m(resumed, **kw)
    second.load_state_dict(first.state_dict())
    for step in range(2, 5):
        second.step([], step)
    assert torch.equal(resumed.x, whole.x) and torch.equal(resumed.bias, whole.bias)


def test_mezo_m_reports_its_dense_state():
    model = MatrixQuadratic()
    opt = _mezo_m(model)
    opt.step([], 0)
    numel = sum(p.numel() for p in model.parameters())
    assert opt.stats()["state_bytes"] == 4 * numel  # one fp32 copy of the trained weights


def test_mezo_m_unknown_momentum_init_is_refused():
    with pytest.raises(ZoftError, match="optimizer.momentum_init"):
        _mezo_m(MatrixQuadratic(), momentum_init="ones")

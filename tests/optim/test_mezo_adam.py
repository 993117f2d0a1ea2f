"""MeZO-Adam against the closed-form AdamW step (transformers' AdamW, as MeZO's medium_models
steps it) on the step's own estimates, recomputed in float64; exact resume; its state."""

import math

import pytest
import torch

from tests.optim.test_lozo import MatrixQuadratic, ModelLoss
from tests.optim.test_mezo_momentum import _estimate, _f64
from zoft.optim.configs import MezoAdamConfig
from zoft.optim.mezo_adam import MezoAdam


def _mezo_adam(model, **kw):
    kw.setdefault("probes", "sequential")  # a loss without a batch has no copies to pair
    return MezoAdam(MezoAdamConfig(**kw), model, ModelLoss(), total_steps=10, seed=0)


@pytest.mark.parametrize("queries", [1, 2])
def test_mezo_adam_matches_the_closed_form_adamw_update(queries):
    model = MatrixQuadratic()
    lr, b1, b2, adam_eps, decay = 1e-2, 0.8, 0.95, 1e-6, 0.3
    opt = _mezo_adam(model, lr=lr, beta1=b1, beta2=b2, adam_eps=adam_eps, weight_decay=decay,
                     queries=queries)  # fmt: skip
    m = {n: torch.zeros_like(_f64(p)) for n, p in model.named_parameters()}
    v = {n: torch.zeros_like(_f64(p)) for n, p in model.named_parameters()}
    for step in range(4):
        t = step + 1
        before = {n: _f64(p) for n, p in model.named_parameters()}
        estimates, _ = opt.projected_gradients([], step)
        opt.apply_update(step, estimates)
        for name, p in model.named_parameters():
            g = _estimate(opt, name, p, step, estimates)
            m[name] = b1 * m[name] + (1 - b1) * g
            v[name] = b2 * v[name] + (1 - b2) * g * g
            size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            expected = before[name] - size * m[name] / (v[name].sqrt() + adam_eps)
            if p.ndim >= 2:  # decoupled decay after the step, on matrices only
                expected = expected - lr * decay * expected
            assert torch.allclose(_f64(p), expected, rtol=0, atol=1e-6), (step, name)
            assert torch.allclose(_f64(opt.exp_avg[name]), m[name], rtol=1e-6, atol=1e-6)
            assert torch.allclose(_f64(opt.exp_avg_sq[name]), v[name], rtol=1e-5, atol=1e-9)


def test_mezo_adam_equals_torch_adam_on_the_same_gradients():
    """An independent reference: torch.optim.Adam fed ĝ as .grad takes the same steps (its ε
    sits after the bias correction, so ε is set negligible here)."""
    model, reference = MatrixQuadratic(), MatrixQuadratic()
    lr = 1e-2
    opt = _mezo_adam(model, lr=lr, adam_eps=1e-12)
    adam = torch.optim.Adam(reference.parameters(), lr=lr, eps=1e-12)
    for step in range(5):
        estimates, _ = opt.projected_gradients([], step)
        opt.apply_update(step, estimates)
        for name, p in reference.named_parameters():
            p.grad = _estimate(opt, name, dict(model.named_parameters())[name], step,
                               estimates).float()  # fmt: skip
        adam.step()
    assert torch.allclose(model.x, reference.x, rtol=0, atol=1e-5)
    assert torch.allclose(model.bias, reference.bias, rtol=0, atol=1e-5)


def test_mezo_adam_resumed_from_its_state_dict_is_bit_identical():
    kw = dict(lr=1e-2)
    whole = MatrixQuadratic()
    opt = _mezo_adam(whole, **kw)
    for step in range(5):
        opt.step([], step)
    resumed = MatrixQuadratic()
    first = _mezo_adam(resumed, **kw)
    for step in range(2):
        first.step([], step)
    state = first.state_dict()
    assert state["updates"] == 2
    second = _mezo_adam(resumed, **kw)
    second.load_state_dict(state)
    for step in range(2, 5):
        second.step([], step)
    assert torch.equal(resumed.x, whole.x) and torch.equal(resumed.bias, whole.bias)


def test_mezo_adam_reports_two_dense_moments():
    model = MatrixQuadratic()
    opt = _mezo_adam(model)
    opt.step([], 0)
    numel = sum(p.numel() for p in model.parameters())
    assert opt.stats()["state_bytes"] == 2 * 4 * numel

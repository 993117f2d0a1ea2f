"""The perturbation engine: keyed directions, exact restore, probes equal explicit perturbation."""

import copy

import pytest
import torch

from tests.conftest import tiny
from zoft.optim import directions as directions_module
from zoft.optim.directions import row_blocks
from zoft.optim.perturb import PerturbationEngine, direction_seed


def _params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _loss(model, ids):
    return model(input_ids=ids).logits.float().logsumexp(-1).mean()


def test_direction_is_keyed_by_name_not_visit_order():
    model = tiny("opt").model
    params = _params(model)
    a = PerturbationEngine(model, params, seed=3)
    b = PerturbationEngine(model, dict(reversed(list(params.items()))), seed=3)
    names = list(params)
    first = {n: a.direction(n, step=5) for n in names}
    second = {n: b.direction(n, step=5) for n in reversed(names)}
    assert all(torch.equal(first[n], second[n]) for n in names)
    assert not torch.equal(a.direction(names[0], 5), a.direction(names[0], 6))
    assert direction_seed(3, 5, 0, "w") != direction_seed(3, 5, 1, "w")


@pytest.mark.parametrize("rng", ["torch", "philox"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_probes_restore_every_parameter_bit_exactly(dtype, rng):
    model = tiny("llama", dtype=dtype).model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    directions = directions_module.GaussianDirections(0, rng=rng)
    engine = PerturbationEngine(model, _params(model), seed=0, directions=directions)
    ids = torch.randint(5, 400, (2, 12))
    with torch.no_grad():
        with engine.probe(step=0, scale=1e-2):
            plus = _loss(model, ids)
        with engine.probe(step=0, scale=-1e-2):
            minus = _loss(model, ids)
    assert plus != minus  # the probes really perturbed the model
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert engine.touched == set(_params(model))  # every parameter, tied ones included, was probed


@pytest.mark.parametrize("arch", ["opt", "llama", "roberta"])
def test_probe_equals_loss_at_explicitly_perturbed_weights(arch):
    model = tiny(arch).model.eval()
    engine = PerturbationEngine(model, _params(model), seed=7)
    ids = torch.randint(5, 400, (2, 10))
    eps = 1e-3
    with torch.no_grad(), engine.probe(step=4, scale=eps):
        probed = model(input_ids=ids).logits
    explicit = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in _params(explicit).items():
            p.add_(engine.direction(name, step=4), alpha=eps)
        reference = explicit(input_ids=ids).logits
    torch.testing.assert_close(probed, reference, rtol=1e-5, atol=1e-5)


def test_update_applies_the_probed_direction_and_decays_matrices_only():
    model = tiny("opt").model
    params = _params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    engine = PerturbationEngine(model, params, seed=1)
    engine.update(step=2, coeff=-0.5, decay=0.1)
    for name, p in params.items():
        z = engine.direction(name, step=2)
        decay = 0.1 if p.ndim >= 2 else 0.0
        torch.testing.assert_close(p.detach(), before[name] * (1 - decay) - 0.5 * z)


def test_pass_counter_counts_regenerated_elements():
    model = tiny("opt").model.eval()
    engine = PerturbationEngine(model, _params(model), seed=0)
    engine.update(step=0, coeff=0.0)
    assert engine.passes == pytest.approx(1.0)


class AttentionBlock(torch.nn.Module):
    """nn.MultiheadAttention reads out_proj's parameters outside out_proj's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.attn(x, x, x)[0]).sum()


@pytest.mark.parametrize("rng", ["torch", "philox"])  # philox on CPU: perturbed in place, fused
def test_parameters_read_outside_their_module_are_still_perturbed_and_restored(rng):
    torch.manual_seed(0)
    model = AttentionBlock().eval()
    params = _params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    directions = directions_module.GaussianDirections(2, rng=rng)
    engine = PerturbationEngine(model, params, seed=2, directions=directions)
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        probed = engine.loss_at(step=0, scale=1e-2, fn=lambda: model(x))
    assert engine.copy_restored == {"attn.out_proj.weight", "attn.out_proj.bias"}
    assert all(torch.equal(p, before[n]) for n, p in params.items())
    explicit = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in _params(explicit).items():
            p.add_(engine.direction(name, step=0), alpha=1e-2)
        torch.testing.assert_close(probed, explicit(x))


def test_an_error_inside_a_probe_leaves_the_weights_restored():
    model = tiny("opt").model.eval()
    params = _params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    engine = PerturbationEngine(model, params, seed=0)

    def failing_forward():
        model(input_ids=torch.randint(5, 400, (1, 6)))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        engine.loss_at(step=0, scale=1.0, fn=failing_forward)
    assert all(torch.equal(p, before[n]) for n, p in params.items())
    assert not engine._active
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_a_pre_hook_failing_midway_restores_what_it_swapped(monkeypatch):
    model = torch.nn.Linear(4, 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    engine = PerturbationEngine(model, _params(model), seed=0)
    real = engine.directions.dense_block

    def dense_block(name, param, step, query, index):
        if name == "bias":
            raise MemoryError("no room for z")
        return real(name, param, step, query, index)

    monkeypatch.setattr(engine.directions, "dense_block", dense_block)
    with pytest.raises(MemoryError), engine.probe(step=0, scale=1.0):
        model(torch.ones(1, 4))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not engine._active


def test_row_blocks_cover_a_large_parameter_in_row_slices(monkeypatch):
    monkeypatch.setattr(directions_module, "BLOCK_ELEMENTS", 10)
    assert row_blocks(torch.zeros(7, 3)) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert row_blocks(torch.zeros(25)) == [slice(0, 10), slice(10, 20), slice(20, 25)]
    assert row_blocks(torch.zeros(2, 5)) == [...]  # small: one block
    assert row_blocks(torch.zeros(())) == [...]
    assert row_blocks(torch.zeros(2, 40)) == [slice(0, 1), slice(1, 2)]  # at least a row each


@pytest.mark.parametrize("rng", ["torch", "philox"])
@pytest.mark.parametrize("kind", ["gaussian", "lowrank"])
def test_block_by_block_probes_and_updates_use_the_whole_direction(monkeypatch, kind, rng):
    """With parameters split into many row blocks: each block of z is keyed on its own, probes
    equal explicit θ + εz with z = direction() (the blocks joined), θ is restored bit-exactly and
    the update adds exactly c·z."""
    monkeypatch.setattr(directions_module, "BLOCK_ELEMENTS", 300)
    model = tiny("llama").model.eval()
    params = _params(model)
    assert any(len(row_blocks(p)) > 1 for p in params.values())
    directions = (
        directions_module.GaussianDirections(3, rng=rng)
        if kind == "gaussian"
        else directions_module.LowRankDirections(3, rank=2, interval=5, rng=rng)
    )
    engine = PerturbationEngine(model, params, seed=3, directions=directions)
    before = {n: p.detach().clone() for n, p in params.items()}
    ids = torch.randint(5, 400, (2, 10))
    with torch.no_grad(), engine.probe(step=1, scale=1e-2):
        probed = model(input_ids=ids).logits
    assert all(torch.equal(p, before[n]) for n, p in params.items())
    explicit = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in _params(explicit).items():
            p.add_(engine.direction(name, step=1), alpha=1e-2)
        torch.testing.assert_close(probed, explicit(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    engine.update(step=1, coeff=-0.5)
    for name, p in params.items():
        z = engine.direction(name, step=1)
        torch.testing.assert_close(p.detach(), before[name] - 0.5 * z, rtol=0, atol=1e-6)


@pytest.mark.skipif(
    not directions_module.philox_kernels(torch.device("cpu")),
    reason="numba is not installed: no fused kernels",
)
@pytest.mark.parametrize("kind", ["gaussian", "lowrank"])
def test_the_fused_philox_kernels_give_the_bits_of_the_unfused_path(monkeypatch, kind):
    """rng=philox on CPU fp32: θ ± εz and the update run in the numba kernels with no z drawn,
    and give exactly the probes and weights of drawing z and using torch ops."""
    from zoft.optim import philox_numba

    def run(fused: bool):
        torch.manual_seed(0)
        model = tiny("llama").model.eval()
        params = _params(model)
        directions = (
            directions_module.GaussianDirections(3, rng="philox")
            if kind == "gaussian"
            else directions_module.LowRankDirections(3, rank=2, interval=5, rng="philox")
        )
        if not fused:
            monkeypatch.setattr(directions, "fused_key", lambda *a: None)
        engine = PerturbationEngine(model, params, seed=3, directions=directions)
        ids = torch.randint(5, 400, (2, 10), generator=torch.Generator().manual_seed(1))
        with torch.no_grad(), engine.probe(step=1, scale=1e-2):
            probed = model(input_ids=ids).logits
        engine.update(step=1, coeff=-0.5, decay=0.01)
        return probed, {n: p.detach().clone() for n, p in params.items()}

    calls = []
    for kernel in ("perturbed_into", "update_inplace"):
        real = getattr(philox_numba, kernel)
        monkeypatch.setattr(
            philox_numba, kernel, lambda *a, _real=real, _k=kernel: calls.append(_k) or _real(*a)
        )
    fused_probe, fused_weights = run(fused=True)
    assert {"perturbed_into", "update_inplace"} <= set(calls)  # the kernels were used
    calls.clear()
    plain_probe, plain_weights = run(fused=False)
    assert not calls
    assert torch.equal(fused_probe, plain_probe)
    assert all(torch.equal(fused_weights[n], plain_weights[n]) for n in plain_weights)


@pytest.mark.gpu
@pytest.mark.parametrize("rng", ["torch", "philox"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_cuda_probes_restore_every_parameter_bit_exactly(dtype, rng):
    model = tiny("llama", dtype=dtype).model.eval().cuda()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    directions = directions_module.GaussianDirections(0, rng=rng)
    engine = PerturbationEngine(model, _params(model), seed=0, directions=directions)
    ids = torch.randint(5, 400, (2, 12), device="cuda")
    with torch.no_grad():
        with engine.probe(step=0, scale=1e-2):
            plus = _loss(model, ids)
        with engine.probe(step=0, scale=-1e-2):
            minus = _loss(model, ids)
    assert plus != minus
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n

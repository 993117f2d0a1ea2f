"""The update's rounding into half-precision weights: round to nearest loses an update below half
a unit of θ; stochastic rounding keeps it in expectation, with keyed random numbers (so a run is
reproducible bit for bit) and no fp32 master copy."""

import pytest
import torch
from torch import nn

from zoft.optim.arithmetic import rounding_key, stochastically_rounded
from zoft.optim.directions import GaussianDirections, LowRankDirections
from zoft.optim.perturb import PerturbationEngine

HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF)
def test_stochastic_rounding_is_unbiased_between_the_two_neighbours(dtype):
    low = torch.tensor(1.0, dtype=dtype)
    high = torch.nextafter(low, torch.tensor(2.0, dtype=dtype))
    value = low.float() + 0.25 * (high.float() - low.float())  # a quarter of the way up
    many = value.expand(200_000).clone()
    rounded = stochastically_rounded(many, dtype, torch.Generator().manual_seed(0))
    assert set(rounded.float().unique().tolist()) == {low.item(), high.item()}
    gap, sigma = (high - low).item(), (0.25 * 0.75 / many.numel()) ** 0.5
    assert (rounded == high).float().mean().item() == pytest.approx(0.25, abs=4 * sigma)
    mean = rounded.double().mean().item()
    assert mean == pytest.approx(value.item(), abs=4 * sigma * gap)
    assert value.to(dtype) == low  # round to nearest: the quarter step is lost every time


@pytest.mark.parametrize("dtype", HALF)
def test_values_the_dtype_holds_and_non_finite_ones_are_kept(dtype):
    exact = torch.tensor([0.0, 1.0, -2.5, 0.125, float("inf"), float("-inf")])
    rounded = stochastically_rounded(exact, dtype, torch.Generator().manual_seed(1))
    assert torch.equal(rounded, exact.to(dtype))
    assert torch.isnan(
        stochastically_rounded(torch.tensor([float("nan")]), dtype, torch.Generator())
    )


def _engine(dtype, rounding, rng="philox", low_rank=False, seed=0):
    torch.manual_seed(0)
    layer = nn.Linear(256, 256).to(dtype)
    with torch.no_grad():
        layer.weight.fill_(1.0)  # a unit of θ: 2⁻⁷ (bf16), 2⁻¹⁰ (fp16)
    directions = (
        LowRankDirections(seed, rank=2, interval=5, rng=rng)
        if low_rank
        else GaussianDirections(seed, rng=rng)
    )
    params = dict(layer.named_parameters())
    return layer, PerturbationEngine(layer, params, seed, directions, rounding=rounding)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("rng", ["philox", "torch"])
def test_an_update_below_the_resolution_is_lost_to_nearest_and_kept_by_stochastic(dtype, rng):
    # |c·z| stays below half the unit under 1.0 (bf16: 2⁻⁹, fp16: 2⁻¹²) for every z drawn here
    coeff = {torch.bfloat16: 2e-4, torch.float16: 2e-5}[dtype]
    layer, engine = _engine(dtype, "nearest", rng)
    engine.update(3, coeff)
    assert torch.equal(layer.weight, torch.ones_like(layer.weight))  # every update lost

    layer, engine = _engine(dtype, "stochastic", rng)
    z = engine.directions.dense("weight", layer.weight.detach(), 3, 0)
    wanted = coeff * z  # the fp32 update
    engine.update(3, coeff)
    moved = layer.weight.detach().float() - 1.0
    assert (moved != 0).float().mean() > 0.01  # some weights took a whole unit
    # the expected update is the fp32 one: along z, and unbiased element by element
    along = float((moved * z).sum() / (wanted * z).sum())  # E[moved] = wanted: 1
    assert along == pytest.approx(1.0, abs=0.1)
    error = moved - wanted
    assert abs(float(error.mean())) < 4 * float(error.std()) / error.numel() ** 0.5


@pytest.mark.parametrize("dtype", HALF)
def test_auto_rounding_is_stochastic_rounding_in_half_precision(dtype):
    after = {}
    for rounding in ("auto", "stochastic", "nearest"):
        layer, engine = _engine(dtype, rounding)
        engine.update(3, {torch.bfloat16: 2e-4, torch.float16: 2e-5}[dtype])
        after[rounding] = layer.weight.detach().clone()
    assert torch.equal(after["auto"], after["stochastic"])  # the same keyed bits
    assert not torch.equal(after["auto"], after["nearest"])


def test_stochastic_rounding_is_keyed_by_seed_step_and_parameter():
    def after(step, seed=0):
        layer, engine = _engine(torch.bfloat16, "stochastic", seed=seed)
        engine.update(step, 2e-3)
        return layer.weight.clone()

    assert torch.equal(after(4), after(4))  # the same key: the same bits
    assert not torch.equal(after(4), after(5))
    assert not torch.equal(after(4), after(4, seed=1))
    assert rounding_key(0, 4, "weight") != rounding_key(0, 4, "bias")


def test_low_rank_updates_round_stochastically_too():
    layer, engine = _engine(torch.bfloat16, "nearest", low_rank=True)
    engine.update(0, 1e-4)
    assert torch.equal(layer.weight, torch.ones_like(layer.weight))
    layer, engine = _engine(torch.bfloat16, "stochastic", low_rank=True)
    engine.update(0, 1e-4)
    assert not torch.equal(layer.weight, torch.ones_like(layer.weight))


def test_fp32_weights_are_rounded_the_same_either_way():
    results = []
    for rounding in ("nearest", "stochastic", "auto"):
        layer, engine = _engine(torch.float32, rounding)
        engine.update(2, 1e-3, decay=1e-2)
        results.append(layer.weight.clone())
    assert all(torch.equal(results[0], other) for other in results[1:])

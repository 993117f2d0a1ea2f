"""The numba Philox kernels against the torch reference: the same uint32 words exactly, normals
within a few ulp (libm differs), the fused θ + scale·z and update bit for bit with arithmetic.py's
torch ops on the same z; and numba is optional."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

from tests.optim.test_philox import kat_vectors
from zoft.optim import philox_numba
from zoft.optim.philox import counters, key_words, philox4x32_10, philox_normal

needs_numba = pytest.mark.skipif(
    not philox_numba.available(),
    reason=f"numba backend not tested: {philox_numba.unavailable_reason()}",
)

# (start, count) pairs: unaligned ends, a single element, empty, and a counter high word of 1
RANGES = [(0, 1), (1, 2), (3, 9), (6, 1001), (5, 0), (4 * 2**32 + 1, 23), (10**6 + 2, 3 * 10**4)]


def ordered(x: torch.Tensor) -> torch.Tensor:
    """fp32 bit patterns as integers that count ulps across zero (int64)."""
    bits = x.view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (ordered(a) - ordered(b)).abs()


def _torch_add_is_fused() -> bool:
    """Whether torch's CPU add_(b, alpha=c) rounds a + c·b once (an FMA), as with AVX2."""
    a, b = torch.full((64,), -1.0), torch.full((64,), 1 + 2**-20)
    return bool((a.add_(b, alpha=1 - 2**-20) != 0).all())


def numba_normals(key: int, start: int, count: int) -> torch.Tensor:
    return philox_numba.normals_into(torch.empty(count), key, start)


def test_without_numba_the_module_says_so_and_refuses(monkeypatch):
    """An import of numba that fails leaves the module importable, available() False."""
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    spec = importlib.util.spec_from_file_location("_philox_numba_bare", philox_numba.__file__)
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    assert not bare.available() and "numba is not installed" in bare.unavailable_reason()
    with pytest.raises(RuntimeError, match="numba"):
        bare.normals_into(torch.empty(4), 1, 0)


@needs_numba
def test_the_words_equal_the_reference_and_the_known_answers():
    for rounds, ctr, key, expected in kat_vectors():
        if rounds == 10:
            assert philox_numba.philox_words(torch.tensor([ctr]), key).tolist() == [expected]
    gen = torch.Generator().manual_seed(2)
    ctr = torch.randint(0, 2**32, (4096, 4), generator=gen, dtype=torch.int64)
    ctr[:4] = torch.tensor([[0] * 4, [2**32 - 1] * 4, [0, 2**32 - 1, 0, 0], [1, 0, 0, 0]])
    keys = torch.randint(0, 2**32, (8, 2), generator=gen, dtype=torch.int64).tolist()
    for key in [(0, 0), (2**32 - 1, 2**32 - 1), *map(tuple, keys)]:
        assert torch.equal(philox_numba.philox_words(ctr, key), philox4x32_10(ctr, key))
    c, k = counters(2**32 - 32, 64), key_words(2**63 - 5)  # the high counter word goes 0 -> 1
    assert torch.equal(philox_numba.philox_words(c, k), philox4x32_10(c, k))


@needs_numba
@pytest.mark.parametrize("start,count", RANGES)
def test_the_normals_match_the_reference_within_3_ulp(start, count):
    """Measured on 6 × 10⁶ normals (three keys): 79.0% equal, 18.6% 1 ulp, 2.3% 2 ulp, 0.09% 3
    ulp apart, none 4: cos and sin within 1 ulp of torch's (SLEEF), r within 2 (see the grid
    test below), the product within 3."""
    key = 0x5DEECE66D_1234
    got, want = numba_normals(key, start, count), philox_normal(key, start, count)
    assert got.shape == want.shape == (count,)
    assert (ulps(got, want) <= 3).all()
    if count > 1000:
        assert (ulps(got, want) > 2).double().mean() < 5e-3


@needs_numba
def test_numba_slices_are_slices_of_one_numba_draw():
    key = 2**63 - 1
    long = numba_normals(key, 0, 4099)
    for start, count in [(0, 4099), (1, 1), (2, 5), (3, 4096), (4098, 1), (9, 0)]:
        assert torch.equal(numba_normals(key, start, count), long[start : start + count])


@needs_numba
@pytest.mark.parametrize("start,count", [(0, 4), (3, 5), (7, 10**5 + 3)])
def test_the_fused_kernels_are_arithmetic_py_ops_on_the_same_z(start, count):
    """Bit for bit: perturbed is Perturbation.perturbed's z.mul_(scale).add_(θ), update is
    update_parameter's θ.mul_(1 − decay).add_(z, alpha=c) (an FMA in torch's CPU kernels)."""
    key, gen = 0xC0FFEE, torch.Generator().manual_seed(3)
    theta = torch.randn(count, generator=gen) * 0.02
    z = numba_normals(key, start, count)
    scale = -1e-3
    out = philox_numba.perturbed_into(torch.empty(count), theta, scale, key, start)
    assert torch.equal(out, z.clone().mul_(scale).add_(theta))
    for coeff, decay in [(-3e-4, 0.0), (2.5e-2, 0.1)]:
        got = philox_numba.update_inplace(theta.clone(), coeff, decay, key, start)
        want = theta.clone().mul_(1.0 - decay).add_(z, alpha=coeff)
        if _torch_add_is_fused():
            assert torch.equal(got, want)
        else:  # a torch build without FMA kernels: c·z rounded once more there
            spacing = torch.nextafter(want.abs(), torch.tensor(float("inf"))) - want.abs()
            assert ((got - want).abs() <= (coeff * z).abs() * 2**-24 + spacing).all()
    in_place = theta.clone()
    philox_numba.perturbed_into(in_place, in_place, scale, key, start)  # out may be θ
    assert torch.equal(in_place, out)


@needs_numba
def test_the_fused_kernels_against_the_reference_normals():
    """With the reference's z the results differ only by c·(z difference) plus one rounding."""
    key, start, count, coeff = 77, 13, 5000, 1e-2
    gen = torch.Generator().manual_seed(4)
    theta = torch.randn(count, generator=gen)
    z_ref, z_nb = philox_normal(key, start, count), numba_normals(key, start, count)
    want = theta.clone().mul_(0.9).add_(z_ref, alpha=coeff)
    got = philox_numba.update_inplace(theta.clone(), coeff, 0.1, key, start)
    spacing = torch.nextafter(want.abs(), torch.tensor(float("inf"))) - want.abs()
    assert ((got - want).abs() <= coeff * (z_nb - z_ref).abs() + spacing).all()


@needs_numba
def test_the_kernels_refuse_what_they_cannot_view():
    with pytest.raises(ValueError, match="fp32"):
        philox_numba.normals_into(torch.empty(4, dtype=torch.float64), 1, 0)
    with pytest.raises(ValueError, match="1-D"):
        philox_numba.normals_into(torch.empty(2, 2), 1, 0)
    with pytest.raises(ValueError, match="contiguous"):
        philox_numba.normals_into(torch.empty(8)[::2], 1, 0)
    with pytest.raises(ValueError, match="differ in length"):
        philox_numba.perturbed_into(torch.empty(4), torch.empty(5), 1.0, 1, 0)
    with pytest.raises(ValueError, match="non-negative"):
        philox_numba.update_inplace(torch.empty(4), 1.0, 0.0, 1, -1)
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        philox_numba.normals_into(torch.empty(4), -1, 0)
    param = torch.nn.Parameter(torch.zeros(8))  # works on the storage, as p.data does
    philox_numba.update_inplace(param, 1.0, 0.0, 9, 0)
    assert torch.equal(param.detach(), philox_numba.normals_into(torch.empty(8), 9, 0))


def uniform_grid(step: int) -> torch.Tensor:
    """Every step-th of the 2²³ fp32 uniforms ((m + 0.5)·2⁻²³, m < 2²³), both ends included."""
    m = torch.cat((torch.arange(0, 2**23, step), torch.tensor([2**23 - 1]))).double()
    return ((m + 0.5) * 2**-23).float()


def error_ulps(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|got − exact| in ulps of fl32(exact) (float64)."""
    spacing = torch.nextafter(exact.float().abs(), torch.tensor(float("inf"))) - exact.float().abs()
    return (got.double() - exact).abs() / spacing.double()


def component_errors(step: int) -> dict[str, tuple[float, float, int]]:
    """(max ulp error vs float64 math, fraction correctly rounded, max ulp apart from torch's
    fp32 result) of the kernels' ln u, r = sqrt(−2 ln u), cos a and sin a for a = fl(fl32(2π)·u),
    over uniform_grid(step). step=1 is the exhaustive check (a few seconds at one thread)."""
    u = uniform_grid(step)
    a = u * philox_numba._TWO_PI
    log, cos, sin = torch.empty_like(u), torch.empty_like(u), torch.empty_like(u)
    philox_numba._log_array(u.numpy(), log.numpy())
    philox_numba._cos_sin_array(a.numpy(), cos.numpy(), sin.numpy())
    r = torch.sqrt(-2.0 * log)
    exact = {
        "log": (log, torch.log(u.double()), torch.log(u)),
        "r": (r, torch.sqrt(-2.0 * torch.log(u.double())), torch.sqrt(-2.0 * torch.log(u))),
        "cos": (cos, torch.cos(a.double()), torch.cos(a)),
        "sin": (sin, torch.sin(a.double()), torch.sin(a)),
    }
    return {
        name: (
            float(error_ulps(got, x).max()),
            float((got == x.float()).double().mean()),
            int(ulps(got, ref).max()),
        )
        for name, (got, x, ref) in exact.items()
    }


@needs_numba
def test_the_log_and_sincos_approximations_on_the_uniform_grid():
    """Exhaustively over all 2²³ uniforms (step=1, in the module docstring): ln u within 0.835
    ulp of the exact value (97.5% correctly rounded), cos a 0.772 and sin a 0.825 (98%); each
    at most 1 ulp from torch's (SLEEF's) fp32 result, r at most 2 (a single u of the 2²³; r
    itself within 1.17 ulp of the exact value). Here a quarter of the grid."""
    errors = component_errors(step=4)
    for name, bound, apart_bound in [("log", 0.84, 1), ("r", 1.17, 2), ("cos", 0.78, 1)]:
        worst, rounded, apart = errors[name]
        assert worst < bound and apart <= apart_bound, (name, errors[name])
        assert rounded > (0.8 if name == "r" else 0.97), (name, errors[name])
    worst, rounded, apart = errors["sin"]
    assert worst < 0.83 and rounded > 0.97 and apart <= 1, errors["sin"]


def test_the_constants_of_the_approximations():
    """π/2 = PIO2_HI + PIO2_LO to 1e-32; e·LN2_HI exact (15 significant bits); ln 2 split."""
    from decimal import Decimal, getcontext

    getcontext().prec = 50
    half_pi = Decimal("3.1415926535897932384626433832795028841971693993751") / 2
    residue = half_pi - Decimal(philox_numba._PIO2_HI) - Decimal(philox_numba._PIO2_LO)
    assert abs(residue) < Decimal("1e-32")
    hi = float(philox_numba._LN2_HI)
    assert philox_numba._LN2_HI.view("int32") == 0x3F317200 and int(hi * 2**15) == hi * 2**15
    assert abs(hi + float(philox_numba._LN2_LO) - math.log(2.0)) < 1e-13

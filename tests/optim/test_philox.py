"""The torch reference of the Philox normals: Random123's known answers, the documented element
mapping (checked against a scalar Python Philox written here), slices of one stream, and the
distribution of the normals."""

from __future__ import annotations

import math

import pytest
import torch

from zoft.optim import philox
from zoft.optim.directions import direction_seed
from zoft.optim.philox import (
    box_muller,
    counters,
    key_words,
    philox4x32,
    philox4x32_10,
    philox_normal,
    uniforms,
)

# Random123's tests/kat_vectors, lines 24-29 (github.com/DEShawResearch/random123, main at commit
# 9545ff6413f258be2f04c1d319d99aaef7521150): rounds, counter (4 words), key (2 words), expected.
KAT = """
philox4x32 7 00000000 00000000 00000000 00000000 00000000 00000000   5f6fb709 0d893f64 4f121f81 4f730a48
philox4x32 7 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   5207ddc2 45165e59 4d8ee751 8c52f662
philox4x32 7 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   4dfccaba 190a87f0 c47362ba b6b5242a
philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d bc57ac4c 9b00dbd8
philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d 41c83b0e a20bc7c6 6d5451fd
philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   d16cfe09 94fdcceb 5001e420 24126ea1
"""


def kat_vectors() -> list[tuple[int, list[int], tuple[int, int], list[int]]]:
    """(rounds, counter, key, expected) of each KAT line (shared with the numba tests)."""
    rows = []
    for line in KAT.strip().splitlines():
        _, rounds, *words = line.split()
        w = [int(x, 16) for x in words]
        rows.append((int(rounds), w[:4], (w[4], w[5]), w[6:]))
    return rows


def scalar_philox(ctr: list[int], key: tuple[int, int], rounds: int = 10) -> list[int]:
    """Philox4x32 on Python integers, straight from the Random123 paper's definition."""
    x0, x1, x2, x3 = ctr
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = 0xD2511F53 * x0, 0xCD9E8D57 * x2
        x0, x1, x2, x3 = (
            (p1 >> 32) ^ x1 ^ k0,
            p1 & 0xFFFFFFFF,
            (p0 >> 32) ^ x3 ^ k1,
            p0 & 0xFFFFFFFF,
        )
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return [x0, x1, x2, x3]


@pytest.mark.parametrize("rounds,ctr,key,expected", kat_vectors())
def test_random123_known_answers(rounds, ctr, key, expected):
    """Random123's published Philox4x32 vectors (zeros, all-ones, the digits of pi), 7 and 10
    rounds, so the round function and the key schedule are both pinned."""
    got = philox4x32(torch.tensor(ctr), key, rounds)
    assert got.tolist() == expected
    assert scalar_philox(ctr, key, rounds) == expected  # the test's own oracle agrees too
    if rounds == 10:
        assert philox4x32_10(torch.tensor([ctr, ctr]), key).tolist() == [expected, expected]


def test_the_split_multiply_is_exact_at_the_extremes():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.tensor([0, 1, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]),
            torch.randint(0, 2**32, (200,), generator=gen, dtype=torch.int64),
        ]
    )
    for m in (philox.PHILOX_M0, philox.PHILOX_M1, 0xFFFFFFFF):
        hi, lo = philox._mulhilo(m, x)
        assert hi.tolist() == [(m * v) >> 32 for v in x.tolist()]
        assert lo.tolist() == [(m * v) & 0xFFFFFFFF for v in x.tolist()]


def test_random_counters_and_keys_match_the_scalar_oracle():
    gen = torch.Generator().manual_seed(1)
    ctr = torch.randint(0, 2**32, (64, 4), generator=gen, dtype=torch.int64)
    for key in [(0, 0), (0xFFFFFFFF, 0x7FFFFFFF), (0x12345678, 0x9ABCDEF0)]:
        got = philox4x32_10(ctr, key).tolist()
        assert got == [scalar_philox(row, key) for row in ctr.tolist()]


def _normal_by_hand(key: int, i: int) -> float:
    """z[i] from the module docstring's mapping, computed in float64 from the scalar Philox."""
    c, lane = divmod(i, 4)
    x = scalar_philox([c & 0xFFFFFFFF, c >> 32, 0, 0], (key & 0xFFFFFFFF, key >> 32))
    u = [((w >> 9) + 0.5) * 2.0**-23 for w in x]
    pair = lane // 2
    r = math.sqrt(-2.0 * math.log(u[2 * pair]))
    a = 2.0 * math.pi * u[2 * pair + 1]
    return r * (math.cos(a) if lane % 2 == 0 else math.sin(a))


@pytest.mark.parametrize("start", [0, 5, 4 * (2**32 + 7) + 3])  # the last: counter high word 1
def test_the_documented_mapping(start):
    key = direction_seed(0, 3, 1, "model.decoder.layers.0.fc1.weight")
    z = philox_normal(key, start, 9)
    want = torch.tensor([_normal_by_hand(key, start + j) for j in range(9)], dtype=torch.float64)
    assert torch.allclose(z.double(), want, rtol=1e-5, atol=1e-6)  # fp32 vs float64 maths


def test_a_slice_is_the_slice_of_a_longer_draw(monkeypatch):
    key = 0xDEADBEEF_CAFEF00D
    long = philox_normal(key, 0, 1003)
    for start, count in [(0, 1), (1, 3), (2, 2), (3, 5), (4, 4), (5, 0), (7, 993), (999, 4)]:
        assert torch.equal(philox_normal(key, start, count), long[start : start + count])
    monkeypatch.setattr(philox, "_CHUNK", 3)  # chunk boundaries inside the range
    assert torch.equal(philox_normal(key, 1, 1001), long[1:1002])


def test_keys_and_counters_give_different_streams():
    base = 0x0123_4567_89AB_CDEF
    z = philox_normal(base, 0, 4096)
    for other in (base ^ 1, base ^ (1 << 40), base + 2**32, 0):
        assert not (z == philox_normal(other, 0, 4096)).any()  # not one equal number
    assert not (z[:2048] == z[2048:]).any()  # the stream does not repeat
    words = philox4x32_10(counters(0, 1024), key_words(base))
    assert words.flatten().unique().numel() == words.numel()  # 4096 distinct 32-bit words


def test_the_normals_have_standard_moments():
    z = philox_normal(direction_seed(7, 0, 0, "w"), 0, 10**6).double()
    assert abs(z.mean()) < 5e-3  # standard error 1e-3
    assert abs(z.var() - 1) < 7e-3  # standard error 1.4e-3
    assert abs((z**3).mean()) < 0.02 and abs((z**4).mean() - 3) < 0.05  # skew 0, kurtosis 3
    assert abs((z.abs() < 1).double().mean() - 0.682689) < 3e-3
    lanes = z.view(-1, 4)
    for lane in range(4):  # cos and sin lanes alike
        assert abs(lanes[:, lane].mean()) < 1e-2 and abs(lanes[:, lane].var() - 1) < 1.5e-2
    corr = torch.corrcoef(lanes.T)
    assert (corr - torch.eye(4, dtype=corr.dtype)).abs().max() < 1e-2  # lanes uncorrelated


def test_uniforms_are_exact_and_never_0_or_1():
    words = torch.tensor([0, 1, 511, 512, 0x80000000, 0xFFFFFE00, 0xFFFFFFFF])
    u = uniforms(words)
    assert u.dtype == torch.float32
    assert u.double().tolist() == [((w >> 9) + 0.5) * 2.0**-23 for w in words.tolist()]  # exact
    assert u.min().item() == 2.0**-24 and u.max().item() == 1 - 2.0**-24
    drawn = uniforms(philox4x32_10(counters(0, 2**18), key_words(5)))
    assert drawn.min().item() > 0 and drawn.max().item() < 1
    z = box_muller(u[[0, 6, 0, 0]])  # the extreme words give finite normals
    assert torch.isfinite(z).all() and z.abs().max() <= math.sqrt(48 * math.log(2)) + 1e-5


def test_direction_seed_keys_and_the_key_range():
    key = direction_seed(0, 3, 1, "model.decoder.layers.0.fc1.weight")
    assert 2**32 <= key < 2**63  # the high word is used
    z = philox_normal(key, 0, 1000)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.equal(z, philox_normal(key, 0, 1000))  # a pure function of the key
    assert not torch.equal(z, philox_normal(key & 0xFFFFFFFF, 0, 1000))
    assert torch.isfinite(philox_normal(2**64 - 1, 0, 8)).all()
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="unsigned 64-bit"):
            philox_normal(bad, 0, 4)
    with pytest.raises(ValueError, match="non-negative"):
        philox_normal(key, -1, 4)
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        philox4x32_10(torch.tensor([2**32, 0, 0, 0]), (0, 0))
    with pytest.raises(ValueError, match="4 words"):
        philox4x32_10(torch.zeros(3, dtype=torch.int64), (0, 0))
    assert philox_normal(key, 10, 0).shape == (0,)


@pytest.mark.gpu
def test_the_reference_on_cuda_draws_the_cpu_stream():
    """The same uint32 words on the GPU; the normals within 2 ulp (CUDA's libm vs SLEEF)."""
    from zoft.optim.philox import counters, philox4x32_10, philox_normal

    key = 0x0123_4567_89AB_CDEF
    cpu = philox4x32_10(counters(5, 4096), key_words(key))
    gpu = philox4x32_10(counters(5, 4096, "cuda"), key_words(key))
    assert torch.equal(cpu, gpu.cpu())
    a, b = philox_normal(key, 3, 100_000), philox_normal(key, 3, 100_000, "cuda").cpu()
    ulps = (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()
    assert int(ulps.max()) <= 2

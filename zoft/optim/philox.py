"""Counter-based keyed normals: Philox4x32-10 and one Gaussian transform, in plain torch ops.

This is the readable reference (the test oracle) for the fast backends: z[i] of a parameter is
a pure function of (key, i), so any block of rows can be generated on its own, in any order, on
any device, with no generator state.

The mapping, for the 63-bit direction key K of directions.direction_seed and element i:

  key words   k0 = K & 0xFFFFFFFF,  k1 = K >> 32
  counter     c = i // 4,  (c & 0xFFFFFFFF, c >> 32, 0, 0)
  words       (x0, x1, x2, x3) = Philox4x32-10(counter, (k0, k1))      (Random123's definition)
  uniforms    u_j = ((x_j >> 9) + 0.5) · 2⁻²³                          (fp32, exact)
  normals     r = sqrt(−2 ln u0), a = 2π·u1:  z[4c] = r cos a,  z[4c+1] = r sin a
              r = sqrt(−2 ln u2), a = 2π·u3:  z[4c+2] = r cos a, z[4c+3] = r sin a
  z[i]        lane i % 4 of counter c

The uniforms keep 23 bits so that (m + 0.5)·2⁻²³ is exact in fp32 (24 significant bits): u lies
in [2⁻²⁴, 1 − 2⁻²⁴], never 0 (ln u finite) nor 1. (With 24 bits, m + 0.5 needs 25 bits and the
top word rounds to u = 1.) Everything after the words is fp32, in this order: −2·ln u (exact
scaling), sqrt, fl(fl32(2π)·u), cos and sin, one product each. The uint32 stream is identical in
every backend; the normals may differ by a few ulp between backends, whose libm log/cos/sin
differ (torch's CPU kernels use SLEEF, numba the C library, CUDA its own).

The 32 × 32 → 64-bit products are done in int64 by splitting the multiplier into 16-bit halves,
so no intermediate reaches 2⁶³ (torch has no general uint64 arithmetic).
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53  # Random123's PHILOX_M4x32_0
PHILOX_M1 = 0xCD9E8D57  # PHILOX_M4x32_1
PHILOX_W0 = 0x9E3779B9  # PHILOX_W32_0, the golden ratio
PHILOX_W1 = 0xBB67AE85  # PHILOX_W32_1, sqrt(3) - 1
ROUNDS = 10
UNIFORM_SHIFT = 9  # a word keeps its top 32 - 9 = 23 bits
UNIFORM_SCALE = 2.0**-23
TWO_PI = math.pi * 2.0  # rounded to fp32 where it multiplies the fp32 uniform
# counters per chunk in philox_normal: bounds its int64 temporaries to a few tens of MB
_CHUNK = 2**20


def key_words(key: int) -> tuple[int, int]:
    """(k0, k1), the low and high 32 bits of a direction key (0 <= key < 2⁶⁴)."""
    if not 0 <= key < 2**64:
        raise ValueError(f"a Philox key is an unsigned 64-bit integer, got {key}")
    return key & MASK32, key >> 32


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of m·x for a 32-bit constant m and uint32 values x in int64:
    m = mh·2¹⁶ + ml, so m·x = (mh·x)·2¹⁶ + ml·x with both partial products below 2⁴⁸."""
    mh, ml = m >> 16, m & 0xFFFF
    p_hi = x * mh
    p_lo = x * ml
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & MASK32
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox4x32(counter: torch.Tensor, key: tuple[int, int], rounds: int = ROUNDS) -> torch.Tensor:
    """Philox4x32 with `rounds` rounds (Random123): counter (..., 4) of uint32 values held in an
    integer tensor, key (k0, k1) -> (..., 4) int64 of uint32 values. Round r uses the key
    bumped r times by the Weyl constants (W0, W1)."""
    if counter.shape[-1:] != (4,):
        raise ValueError(f"a Philox4x32 counter has 4 words in its last dimension: {counter.shape}")
    if counter.dtype.is_floating_point or counter.dtype.is_complex or counter.dtype == torch.bool:
        raise ValueError(f"a Philox counter holds integers, got {counter.dtype}")
    x = counter.to(torch.int64)
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > MASK32):
        raise ValueError("a Philox counter word is an unsigned 32-bit value")
    k0, k1 = key
    if not (0 <= k0 <= MASK32 and 0 <= k1 <= MASK32):
        raise ValueError(f"a Philox4x32 key is two unsigned 32-bit words, got {key}")
    x0, x1, x2, x3 = x.unbind(-1)
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(PHILOX_M0, x0)
        hi1, lo1 = _mulhilo(PHILOX_M1, x2)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
    return torch.stack((x0, x1, x2, x3), dim=-1)


def philox4x32_10(counter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox4x32-10, the variant the normals use (and cuRAND, JAX, Triton's tl.philox)."""
    return philox4x32(counter, key, ROUNDS)


def counters(first: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The Philox counters (c & 0xFFFFFFFF, c >> 32, 0, 0) of c = first, ..., first + count - 1,
    as a (count, 4) int64 tensor."""
    c = torch.arange(first, first + count, dtype=torch.int64, device=device)
    zero = torch.zeros_like(c)
    return torch.stack((c & MASK32, c >> 32, zero, zero), dim=-1)


def uniforms(words: torch.Tensor) -> torch.Tensor:
    """fp32 uniforms ((x >> 9) + 0.5)·2⁻²³ of uint32 words: exact, in [2⁻²⁴, 1 − 2⁻²⁴]."""
    return ((words >> UNIFORM_SHIFT).to(torch.float32) + 0.5) * UNIFORM_SCALE


def box_muller(u: torch.Tensor) -> torch.Tensor:
    """Normals (..., 4) of uniforms (..., 4): lanes 0, 1 from (u0, u1) and 2, 3 from (u2, u3),
    r = sqrt(−2 ln u0), z0 = r cos 2πu1, z1 = r sin 2πu1, all in fp32."""
    r = torch.sqrt(-2.0 * torch.log(u[..., 0::2]))
    a = u[..., 1::2] * TWO_PI
    return torch.stack((r * torch.cos(a), r * torch.sin(a)), dim=-1).flatten(-2)


def philox_normal(
    key: int, start: int, count: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """z[start : start + count] of the direction keyed by `key`: fp32, on `device`. Any start:
    the counters covering the range are drawn and the ends trimmed."""
    if start < 0 or count < 0:
        raise ValueError(f"start and count are non-negative, got {start} and {count}")
    words = key_words(key)
    out = torch.empty(count, dtype=torch.float32, device=device)
    end = start + count
    first = start // 4
    while first * 4 < end:
        n = min(_CHUNK, (end + 3) // 4 - first)
        z = box_muller(uniforms(philox4x32_10(counters(first, n, device), words))).flatten()
        lo, hi = max(start, first * 4), min(end, (first + n) * 4)
        out[lo - start : hi - start] = z[lo - first * 4 : hi - first * 4]
        first += n
    return out

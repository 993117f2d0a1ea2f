"""The Philox normals of zoft.optim.philox on the CPU, compiled with numba (an optional extra).

The same uint32 stream exactly and the normals by the same formula, for any (start, count), with
no z array stored by the fused kernels: θ + scale·z is formed and θ updated in one pass over θ.

Speed comes from LLVM's loop vectoriser (AVX2: 4 counters per vpmuludq, 8 fp32 lanes), which
needs plain loops with no calls and no branches: a tile of _TILE counters is drawn in three
loops (words -> uniforms, r = sqrt(−2 ln u), then cos/sin and the products) with ln, cos and
sin written out here in fp32 instead of the C library's scalar calls. The normals therefore
are this module's own fp32 evaluation of the documented transform, within 3 ulp of torch's
(measured: 79.0% equal, 18.6% 1 ulp, 2.3% 2 ulp, 0.09% 3 ulp, none 4 on 6 × 10⁶; the tests
assert ≤ 3). Checked exhaustively over all 2²³ uniforms against float64 math: ln u within
0.835 ulp (97.5% correctly rounded), cos a within 0.772 and sin a within 0.825 (98%), each
within 1 ulp of torch's SLEEF result.

  ln u   u = 2ᵉ·m with m in [√½, √2) (a bit split of u at fl32(√½), e an integer), f = m − 1
         (exact), s = f/(2 + f), z = s², R = z·(A1 + z·(A2 + z·(A3 + z·(A4 + z·A5)))) with
         Aₖ = fl32(2/(2k + 1)) (the 2·atanh series, ln m = 2s + s·R: truncation below 2⁻³⁴ of
         the result for |s| ≤ 3 − 2√2), hfsq = fl(f²/2);
         ln u = hi + ((s·(hfsq + R) + (e·LN2_LO + err)) − hfsq), (hi, err) = TwoSum(e·LN2_HI, f),
         LN2_HI = 0x3f317200 (15 bits: e·LN2_HI exact), LN2_LO = fl32(ln 2 − LN2_HI).
         fdlibm's logf decomposition f − hfsq + s·(hfsq + R), with Taylor coefficients in place
         of its minimax ones and the e·ln 2 + f sum compensated.
  cos a, sin a   for a = fl(fl32(2π)·u) in (0, 2π): k = ⌊a·2/π + ½⌋, x = a − k·π/2 in float64
         (π/2 = fl64(π/2) + 6.123233995736766e-17, two FMAs), xh = fl32(x), xl = fl32(x − xh),
         z = fl(xh²); sin x = xh + (xh·z·S(z) + xl), S = S1 + z·(S2 + z·(S3 + z·S4)),
         Sₖ = fl32((−1)ᵏ/(2k + 1)!); cos x = w + ((((1 − w) − z/2) − (zl/2 + xh·xl)) +
         z²·C(z)), w = fl(1 − z/2), zl = fma(xh, xh, −z), C = C2 + z·(C3 + z·(C4 + z·C5)),
         Cₖ = fl32((−1)ᵏ/(2k)!) (Taylor: truncation below 2⁻²⁸ on |x| ≤ π/4); then the
         quadrant k mod 4 swaps and negates. All FMAs explicit (llvm.fma); numba never contracts.

The rest is the reference's fp32 arithmetic: u exact, −2·ln u exact, sqrt, fl(fl32(2π)·u), one
product per normal.

The kernels work on torch tensors through .numpy() views: 1-D, fp32, contiguous, on the CPU
(anything else is refused with a ValueError; a bf16 weight is converted by the caller). They
write into the tensor's storage, as p.data does (autograd is not told). The arithmetic on z is
fp32, in arithmetic.py's order and with its roundings, so that given the same z the result is
the same bits as its torch ops:
  perturbed  out = fl(θ + fl(fl32(scale)·z))                 z.mul_(scale).add_(θ)
  update     θ ← fma(fl32(coeff), z, fl(θ·fl32(1 − decay)))   θ.mul_(1 − decay).add_(z, alpha=coeff)
torch's vectorised CPU add_ with alpha is a fused multiply-add (Vectorized::fmadd; checked on
AVX2), hence the explicit llvm.fma here: numba itself never contracts a·b + c. coeff carries
the sign and the learning rate; several queries are several calls, decay given with the first
only, as update_parameter applies it once (and only to 2+-dimensional parameters: the caller's
choice, decay=0 otherwise).

numba missing, available() is False, the kernels raise and nothing else is affected; with it,
`python -m zoft.optim.philox_numba --measure` times them against torch.randn and the torch
reference, back to back.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from zoft.optim.philox import (
    MASK32,
    PHILOX_M0,
    PHILOX_M1,
    PHILOX_W0,
    PHILOX_W1,
    ROUNDS,
    TWO_PI,
    UNIFORM_SCALE,
    UNIFORM_SHIFT,
    key_words,
)

try:
    import numba
except ImportError as error:  # the optional extra: pip install 'zoft[fast]'
    numba = None
    _WHY = f"numba is not installed or not importable ({error}); pip install 'zoft[fast]'"
else:
    _WHY = ""

if numba is not None:
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def _fma(typingctx, a, b, c):
        """fl(a·b + c) rounded once (llvm.fma: one instruction where the CPU has FMA), for
        three fp32 or three fp64 operands."""
        if not (a == b == c and a in (types.float32, types.float64)):
            return None
        return a(a, b, c), lambda context, builder, sig, args: builder.fma(*args)

    @intrinsic
    def _bits(typingctx, x):
        """The bit pattern of an fp32 as an int32 (a bitcast, which vectorises)."""
        if x != types.float32:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(types.int32))

        return types.int32(x), codegen

    @intrinsic
    def _from_bits(typingctx, x):
        """The fp32 whose bit pattern is the int32 x."""
        if x != types.int32:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(types.float32))

        return types.float32(x), codegen

    # error_model="numpy": a float division never raises, so no branch blocks the vectoriser
    # cache=True: the first process compiles (~12 s on 2 cores) and stores the machine code in
    # __pycache__ (or numba's user cache when that is read-only); later processes load it (~1 s)
    _inline = numba.njit(inline="always", error_model="numpy", cache=True)
    _jit = numba.njit(error_model="numpy", cache=True)
    _parallel = numba.njit(parallel=True, error_model="numpy", cache=True)
    prange = numba.prange
else:  # the functions below stay plain Python, never called (see _require)

    def _jit(f):
        return f

    _inline = _parallel = _jit
    prange = range

    def _fma(a, b, c):
        return a * b + c

    def _bits(x):
        return np.int32(np.float32(x).view(np.int32))

    def _from_bits(x):
        return np.int32(x).view(np.float32)


# uint64 constants, so numba keeps every word operation unsigned (a signed operand would
# promote uint64 to float64)
_M0, _M1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
_W0, _W1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
_MASK, _S32, _ZERO = np.uint64(MASK32), np.uint64(32), np.uint64(0)
_USHIFT = np.uint64(UNIFORM_SHIFT)
_F = np.float32
_HALF, _USCALE = _F(0.5), _F(UNIFORM_SCALE)
_MINUS_TWO, _TWO_PI = _F(-2.0), _F(TWO_PI)
_ONE, _TWO = _F(1.0), _F(2.0)
# log: the split at fl32(√½), ln 2 = LN2_HI + LN2_LO with LN2_HI = 0x3f317200 (15 significant
# bits, so e·LN2_HI is exact for |e| < 2⁹), and the 2·atanh series' coefficients 2/(2k + 1)
_SQRT_HALF_BITS = np.int32(_F(math.sqrt(0.5)).view(np.int32))
_MANTISSA = np.int32(0x7FFFFF)
_LN2_HI = _F(0.693145751953125)
_LN2_LO = _F(math.log(2.0) - 0.693145751953125)
_A1, _A2, _A3, _A4, _A5 = (_F(2.0 / (2 * k + 1)) for k in range(1, 6))
# sincos: π/2 = PIO2_HI + PIO2_LO in float64 (PIO2_LO = π/2 − fl64(π/2) to 17 digits) and the
# Taylor coefficients (−1)ᵏ/(2k + 1)! of sin (k = 1..4) and (−1)ᵏ/(2k)! of cos (k = 2..5)
_PIO2_HI = math.pi / 2
_PIO2_LO = 6.123233995736766e-17
_TWO_OVER_PI = 2.0 / math.pi
_S1, _S2, _S3, _S4 = (_F((-1) ** k / math.factorial(2 * k + 1)) for k in range(1, 5))
_C2, _C3, _C4, _C5 = (_F((-1) ** k / math.factorial(2 * k)) for k in range(2, 6))
if ROUNDS != 10:  # _philox writes the rounds out
    raise ImportError(f"_philox has 10 rounds written out, the reference {ROUNDS}")
# counters per tile: the tile's uniforms and normals (2 × 8 KiB) stay in L1
_TILE = 512
# tiles per parallel task (one pair of scratch arrays each)
_BLOCK = 16


def available() -> bool:
    """Whether numba is importable, hence the kernels usable."""
    return numba is not None


def unavailable_reason() -> str:
    """Why the kernels are not usable ('' when they are)."""
    return _WHY


@_inline
def _round(x0, x1, x2, x3, k0, k1):
    """One Philox round on uint64 values below 2³² (the masks tell LLVM so: vpmuludq)."""
    p0 = _M0 * x0  # exact: both factors are below 2³²
    p1 = _M1 * x2
    return (
        ((p1 >> _S32) ^ x1 ^ k0) & _MASK,
        p1 & _MASK,
        ((p0 >> _S32) ^ x3 ^ k1) & _MASK,
        p0 & _MASK,
    )


@_inline
def _bump(k0, k1):
    return (k0 + _W0) & _MASK, (k1 + _W1) & _MASK


@_inline
def _philox(x0, x1, x2, x3, k0, k1):
    """Philox4x32-10, the ten rounds written out (no inner loop left for the vectoriser)."""
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, k0, k1)
    k0, k1 = _bump(k0, k1)
    return _round(x0, x1, x2, x3, k0, k1)


@_inline
def _uniform(x):
    """((x >> 9) + 0.5)·2⁻²³ via int32 (a vector conversion; uint64 -> fp32 is not one)."""
    return (_F(np.int32(x >> _USHIFT)) + _HALF) * _USCALE


@_inline
def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@_inline
def _log(u):
    """ln u for a positive normal fp32 u, in fp32 (see the module docstring)."""
    ix = np.int32(_bits(u) - _SQRT_HALF_BITS)
    e = _F(np.int32(ix >> 23))
    f = _from_bits(np.int32((ix & _MANTISSA) + _SQRT_HALF_BITS)) - _ONE  # exact
    s = f / (_TWO + f)
    z = s * s
    r = z * _fma(_fma(_fma(_fma(_A5, z, _A4), z, _A3), z, _A2), z, _A1)
    hfsq = _HALF * f * f
    hi, err = _two_sum(e * _LN2_HI, f)
    return hi + (_fma(s, hfsq + r, _fma(e, _LN2_LO, err)) - hfsq)


@_inline
def _cos_sin(a):
    """(cos a, sin a) for an fp32 a in [0, 2π], in fp32 (see the module docstring)."""
    ad = np.float64(a)
    k = np.floor(ad * _TWO_OVER_PI + 0.5)
    xd = _fma(-k, _PIO2_LO, _fma(-k, _PIO2_HI, ad))
    x = _F(xd)
    xl = _F(xd - np.float64(x))
    z = x * x
    sin = x + _fma(x * z, _fma(_fma(_fma(_S4, z, _S3), z, _S2), z, _S1), xl)
    w = _ONE - _HALF * z
    tail = ((_ONE - w) - _HALF * z) - _fma(_HALF, _fma(x, x, -z), x * xl)
    cos = w + (tail + z * z * _fma(_fma(_fma(_C5, z, _C4), z, _C3), z, _C2))
    q = np.int32(k) & 3
    odd = (q & 1) == 1
    c = sin if odd else cos
    s = cos if odd else sin
    return (-c if q == 1 or q == 2 else c), (-s if q >= 2 else s)


@_jit
def _normals_tile(z, uu, c0, k0, k1):
    """z[4j + lane] of the counters c0 + j, j < _TILE, in loops that vectorise: the words to
    uniforms uu (4, _TILE), r in place of u0 and u2, then the sines and cosines. A constant
    trip count lets LLVM interleave two vectors (independent chains hide the latencies); one
    compiled tile serves every kernel."""
    count = _TILE
    for j in range(count):
        c = c0 + np.uint64(j)
        x0, x1, x2, x3 = _philox(c & _MASK, c >> _S32, _ZERO, _ZERO, k0, k1)
        uu[0, j] = _uniform(x0)
        uu[1, j] = _uniform(x1)
        uu[2, j] = _uniform(x2)
        uu[3, j] = _uniform(x3)
    r0, u1, r2, u3 = uu[0], uu[1], uu[2], uu[3]
    for j in range(count):
        r0[j] = np.sqrt(_MINUS_TWO * _log(r0[j]))
    for j in range(count):
        r2[j] = np.sqrt(_MINUS_TWO * _log(r2[j]))
    for j in range(count):
        c1, s1 = _cos_sin(_TWO_PI * u1[j])
        c3, s3 = _cos_sin(_TWO_PI * u3[j])
        z[4 * j] = r0[j] * c1
        z[4 * j + 1] = r0[j] * s1
        z[4 * j + 2] = r2[j] * c3
        z[4 * j + 3] = r2[j] * s3


@_parallel
def _words_kernel(ctr, out, k0, k1):
    for j in prange(ctr.shape[0]):
        x = _philox(ctr[j, 0], ctr[j, 1], ctr[j, 2], ctr[j, 3], k0, k1)
        for w in range(4):
            out[j, w] = x[w]


@_jit
def _log_array(u, out):
    """out[i] = _log(u[i]) (for the accuracy tests)."""
    for i in range(u.shape[0]):
        out[i] = _log(u[i])


@_jit
def _cos_sin_array(a, cos, sin):
    """(cos[i], sin[i]) = _cos_sin(a[i]) (for the accuracy tests)."""
    for i in range(a.shape[0]):
        cos[i], sin[i] = _cos_sin(a[i])


# Each kernel visits the tiles of counters covering [start, start + n), blocks of tiles in
# parallel, draws a tile's normals into a scratch z and uses those inside the range (only the
# last tile computes counters past the end).


@_parallel
def _normals_kernel(out, k0, k1, start):
    n = out.shape[0]
    first = start // 4
    tiles = ((start + n + 3) // 4 - first + _TILE - 1) // _TILE
    for b in prange((tiles + _BLOCK - 1) // _BLOCK):
        uu = np.empty((4, _TILE), np.float32)
        z = np.empty(4 * _TILE, np.float32)
        for t in range(b * _BLOCK, min(tiles, (b + 1) * _BLOCK)):
            c0 = first + t * _TILE
            lo, hi = c0 * 4 - start, (c0 + _TILE) * 4 - start
            if lo >= 0 and hi <= n:  # an inner tile: straight into out (a copy costs ~10%)
                _normals_tile(out[lo:hi], uu, np.uint64(c0), k0, k1)
                continue
            _normals_tile(z, uu, np.uint64(c0), k0, k1)
            lo, hi = max(0, lo), min(n, hi)
            zs, o = z[lo + start - c0 * 4 :], out[lo:hi]
            for j in range(
                hi - lo
            ):  # 0-based: no negative-index wraparound to block the vectoriser
                o[j] = zs[j]


@_parallel
def _perturbed_kernel(out, theta, scale, k0, k1, start):
    n = out.shape[0]
    first = start // 4
    tiles = ((start + n + 3) // 4 - first + _TILE - 1) // _TILE
    for b in prange((tiles + _BLOCK - 1) // _BLOCK):
        uu = np.empty((4, _TILE), np.float32)
        z = np.empty(4 * _TILE, np.float32)
        for t in range(b * _BLOCK, min(tiles, (b + 1) * _BLOCK)):
            c0 = first + t * _TILE
            _normals_tile(z, uu, np.uint64(c0), k0, k1)
            lo, hi = max(0, c0 * 4 - start), min(n, (c0 + _TILE) * 4 - start)
            zs, o, th = z[lo + start - c0 * 4 :], out[lo:hi], theta[lo:hi]
            for j in range(hi - lo):
                o[j] = th[j] + scale * zs[j]


@_parallel
def _update_kernel(theta, coeff, keep, k0, k1, start):
    n = theta.shape[0]
    first = start // 4
    tiles = ((start + n + 3) // 4 - first + _TILE - 1) // _TILE
    for b in prange((tiles + _BLOCK - 1) // _BLOCK):
        uu = np.empty((4, _TILE), np.float32)
        z = np.empty(4 * _TILE, np.float32)
        for t in range(b * _BLOCK, min(tiles, (b + 1) * _BLOCK)):
            c0 = first + t * _TILE
            _normals_tile(z, uu, np.uint64(c0), k0, k1)
            lo, hi = max(0, c0 * 4 - start), min(n, (c0 + _TILE) * 4 - start)
            zs, th = z[lo + start - c0 * 4 :], theta[lo:hi]
            for j in range(hi - lo):
                th[j] = _fma(coeff, zs[j], th[j] * keep)


@_parallel
def _perturbed_rows_kernel(out, theta, rows, scale, k0, k1):
    """out[i] = θ[rows[i]] + scale·z of that row (counters from rows[i]·width), rows in
    parallel: the embedding rows a batch looks up, without the rest of the table's z."""
    width = out.shape[1]
    for i in prange(rows.shape[0]):
        uu = np.empty((4, _TILE), np.float32)
        z = np.empty(4 * _TILE, np.float32)
        start = rows[i] * width
        first = start // 4
        tiles = ((start + width + 3) // 4 - first + _TILE - 1) // _TILE
        o, th = out[i], theta[rows[i]]
        for t in range(tiles):
            c0 = first + t * _TILE
            _normals_tile(z, uu, np.uint64(c0), k0, k1)
            lo, hi = max(0, c0 * 4 - start), min(width, (c0 + _TILE) * 4 - start)
            zs = z[lo + start - c0 * 4 :]
            for j in range(hi - lo):
                o[lo + j] = th[lo + j] + scale * zs[j]


def _require() -> None:
    if numba is None:
        raise RuntimeError(f"the numba Philox kernels are unavailable: {_WHY}")


def _vector(t: torch.Tensor, what: str) -> np.ndarray:
    """The fp32 array view of a 1-D contiguous CPU tensor (anything else is refused)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{what} is a torch tensor, got {type(t).__name__}")
    if t.device.type != "cpu" or t.dtype != torch.float32 or t.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D fp32 CPU tensor, got {t.ndim}-D {t.dtype} on {t.device}"
        )
    if not t.is_contiguous():
        raise ValueError(f"{what} must be contiguous (view a block of rows with .view(-1))")
    return t.detach().numpy()


def _key_start(key: int, start: int) -> tuple[np.uint64, np.uint64, np.int64]:
    if start < 0:
        raise ValueError(f"start is a non-negative element index, got {start}")
    k0, k1 = key_words(key)
    return np.uint64(k0), np.uint64(k1), np.int64(start)


def philox_words(counter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox4x32-10 of (n, 4) counters (uint32 values in an integer tensor): (n, 4) int64,
    the same as philox.philox4x32_10."""
    _require()
    ctr = counter.detach().cpu().to(torch.int64).numpy()
    if ctr.ndim != 2 or ctr.shape[1] != 4 or (ctr.size and (ctr.min() < 0 or ctr.max() > MASK32)):
        raise ValueError("counters are an (n, 4) array of unsigned 32-bit words")
    k0, k1 = key
    if not (0 <= k0 <= MASK32 and 0 <= k1 <= MASK32):
        raise ValueError(f"a Philox4x32 key is two unsigned 32-bit words, got {key}")
    out = np.empty(ctr.shape, dtype=np.uint64)
    _words_kernel(ctr.astype(np.uint64), out, np.uint64(k0), np.uint64(k1))
    return torch.from_numpy(out.astype(np.int64))


def normals_into(out: torch.Tensor, key: int, start: int) -> torch.Tensor:
    """Write z[start : start + len(out)] of the direction keyed by `key` into `out`."""
    _require()
    _normals_kernel(_vector(out, "out"), *_key_start(key, start))
    return out


def perturbed_into(
    out: torch.Tensor, theta: torch.Tensor, scale: float, key: int, start: int
) -> torch.Tensor:
    """out = θ + scale·z[start : start + len(θ)] (out may be θ itself), no z stored."""
    _require()
    o, t = _vector(out, "out"), _vector(theta, "theta")
    if o.shape != t.shape:
        raise ValueError(f"out {tuple(o.shape)} and theta {tuple(t.shape)} differ in length")
    k0, k1, s = _key_start(key, start)
    _perturbed_kernel(o, t, np.float32(scale), k0, k1, s)
    return out


def perturbed_rows_into(
    out: torch.Tensor, theta: torch.Tensor, rows: torch.Tensor, scale: float, key: int
) -> torch.Tensor:
    """out[i] = θ[rows[i]] + scale·z[rows[i]] for a 2-D θ (z's rows addressed by counter), no
    other row of z drawn."""
    _require()
    if out.ndim != 2 or theta.ndim != 2 or out.shape != (len(rows), theta.shape[1]):
        raise ValueError(
            f"out {tuple(out.shape)} must be (len(rows), width) of theta {tuple(theta.shape)}"
        )
    for t, what in ((out, "out"), (theta, "theta")):
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{what} must be a contiguous fp32 CPU tensor")
    index = rows.detach().to("cpu", torch.int64).numpy()
    if index.size and (index.min() < 0 or index.max() >= theta.shape[0]):
        raise ValueError(f"rows must lie in [0, {theta.shape[0]})")
    k0, k1, _ = _key_start(key, 0)
    _perturbed_rows_kernel(
        out.detach().numpy(), theta.detach().numpy(), index, np.float32(scale), k0, k1
    )
    return out


def update_inplace(
    theta: torch.Tensor, coeff: float, decay: float, key: int, start: int
) -> torch.Tensor:
    """θ ← θ·(1 − decay) + coeff·z[start : start + len(θ)] in place, no z stored."""
    _require()
    k0, k1, s = _key_start(key, start)
    _update_kernel(_vector(theta, "theta"), np.float32(coeff), np.float32(1.0 - decay), k0, k1, s)
    return theta


def _rates(fns: dict[str, Callable[[], object]], n: int, repeats: int) -> dict[str, float]:
    """Elements per second of each fn over n elements: the candidates alternate (one warm-up
    call each, then `repeats` rounds), the median per candidate, so that a loaded machine
    slows them alike and their ratios hold."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {name: n / float(np.median(t)) for name, t in times.items()}


def measure(n: int = 10**7, key: int = 0x1234_5678_9ABC_DEF, repeats: int = 5) -> dict[str, float]:
    """Elements per second of the numba kernels, seeded torch.randn (as keyed_normal calls it,
    a fresh tensor each time, and into a preallocated one: the generation alone) and one fp32
    axpy pass (the memory-pass floor), measured back to back over n elements in the current
    threads, and the torch reference philox_normal (slow: once, over n // 10)."""
    from zoft.optim.philox import philox_normal

    a, b, buf = torch.zeros(n), torch.ones(n), torch.empty(n)
    gen = torch.Generator().manual_seed(key)
    fns: dict[str, Callable[[], object]] = {
        # what directions.keyed_normal does: a fresh generator and tensor per key
        "torch.randn (seeded generator)": lambda: torch.randn(
            n, generator=torch.Generator().manual_seed(key)
        ),
        "torch.randn(out=, generator=)": lambda: torch.randn(n, generator=gen, out=buf),
        "axpy a.add_(b, alpha=0.5)": lambda: a.add_(b, alpha=0.5),
    }
    if available():
        out = torch.empty(n)
        fns["numba normals_into"] = lambda: normals_into(out, key, 1)
        fns["numba perturbed_into"] = lambda: perturbed_into(out, a, 1e-3, key, 1)
        fns["numba update_inplace"] = lambda: update_inplace(a, 1e-6, 0.0, key, 1)
    rates = _rates(fns, n, repeats)
    m = max(n // 10, 1)
    rates["torch reference philox_normal"] = _rates(
        {"ref": lambda: philox_normal(key, 0, m)}, m, 1
    )["ref"]
    return rates


def main(argv: list[str] | None = None) -> None:
    """--measure: print the rates of measure() (numba and torch threads as the environment
    sets them: NUMBA_NUM_THREADS, OMP_NUM_THREADS)."""
    parser = argparse.ArgumentParser(prog="python -m zoft.optim.philox_numba")
    parser.add_argument("--measure", action="store_true", help="time the kernels")
    parser.add_argument("--n", type=float, default=1e7, help="elements (default 1e7)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args(argv)
    if not args.measure:
        parser.print_help()
        return
    threads = numba.get_num_threads() if available() else 0
    print(f"numba available: {available()} {_WHY}".rstrip())
    print(f"threads: numba {threads}, torch {torch.get_num_threads()}; n = {int(args.n):,}")
    rates = measure(int(args.n), repeats=args.repeats)
    randn = rates["torch.randn(out=, generator=)"]
    for name, rate in rates.items():
        print(f"{name:34s} {rate / 1e6:9.1f} M elements/s  {rate / randn:6.2f} x randn(out=)")


if __name__ == "__main__":
    main()

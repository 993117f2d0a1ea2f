"""The Philox normals of zoft.optim.philox on the CPU, compiled with numba (an optional extra).

The same uint32 stream exactly and the normals by the same formula (within a few ulp: numba's
log/cos/sin are the C library's, torch's are SLEEF's), for any (start, count), with no z array
stored by the fused kernels: θ + scale·z is formed and θ updated in one pass over θ.

The kernels work on torch tensors through .numpy() views: 1-D, fp32, contiguous, on the CPU
(anything else is refused with a ValueError; a bf16 weight is converted by the caller). They
write into the tensor's storage, as p.data does (autograd is not told). The arithmetic is fp32,
in arithmetic.py's order and with its roundings, so that given the same z the result is the
same bits as its torch ops:
  perturbed  out = fl(θ + fl(fl32(scale)·z))                 z.mul_(scale).add_(θ)
  update     θ ← fma(fl32(coeff), z, fl(θ·fl32(1 − decay)))   θ.mul_(1 − decay).add_(z, alpha=coeff)
torch's vectorised CPU add_ with alpha is a fused multiply-add (Vectorized::fmadd; checked on
AVX2), hence the explicit llvm.fma here: numba itself never contracts a·b + c. coeff carries
the sign and the learning rate; several queries are several calls, decay given with the first
only, as update_parameter applies it once (and only to 2+-dimensional parameters: the caller's
choice, decay=0 otherwise).

numba missing, available() is False, the kernels raise and nothing else is affected; with it,
`python -m zoft.optim.philox_numba --measure` times them against the torch reference.
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
        """fl32(a·b + c) rounded once (llvm.fma.f32: one instruction where the CPU has FMA)."""
        if not all(t == types.float32 for t in (a, b, c)):
            return None
        return types.float32(a, b, c), lambda context, builder, sig, args: builder.fma(*args)

    _jit = numba.njit(cache=False)
    _parallel = numba.njit(parallel=True, cache=False)
    prange = numba.prange
else:  # the functions below stay plain Python, never called (see _require)

    def _jit(f):
        return f

    _parallel = _jit
    prange = range

    def _fma(a, b, c):
        return a * b + c


# uint64 constants, so numba keeps every word operation unsigned (a signed operand would
# promote uint64 to float64)
_M0, _M1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
_W0, _W1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
_MASK, _S32, _ZERO = np.uint64(MASK32), np.uint64(32), np.uint64(0)
_USHIFT = np.uint64(UNIFORM_SHIFT)
_HALF, _USCALE = np.float32(0.5), np.float32(UNIFORM_SCALE)
_MINUS_TWO, _TWO_PI = np.float32(-2.0), np.float32(TWO_PI)


def available() -> bool:
    """Whether numba is importable, hence the kernels usable."""
    return numba is not None


def unavailable_reason() -> str:
    """Why the kernels are not usable ('' when they are)."""
    return _WHY


@_jit
def _philox(x0, x1, x2, x3, k0, k1):  # uint64 values below 2³²
    for _ in range(ROUNDS):
        p0 = _M0 * x0  # exact: both factors are below 2³²
        p1 = _M1 * x2
        x0, x1, x2, x3 = (p1 >> _S32) ^ x1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ x3 ^ k1, p0 & _MASK
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return x0, x1, x2, x3


@_jit
def _uniform(x):
    return (np.float32(x >> _USHIFT) + _HALF) * _USCALE


@_jit
def _normals4(c, k0, k1):
    """The four normals of counter c (a uint64)."""
    x0, x1, x2, x3 = _philox(c & _MASK, c >> _S32, _ZERO, _ZERO, k0, k1)
    r = math.sqrt(_MINUS_TWO * math.log(_uniform(x0)))
    a = _TWO_PI * _uniform(x1)
    s = math.sqrt(_MINUS_TWO * math.log(_uniform(x2)))
    b = _TWO_PI * _uniform(x3)
    return r * math.cos(a), r * math.sin(a), s * math.cos(b), s * math.sin(b)


@_parallel
def _words_kernel(ctr, out, k0, k1):
    for j in prange(ctr.shape[0]):
        x = _philox(ctr[j, 0], ctr[j, 1], ctr[j, 2], ctr[j, 3], k0, k1)
        for w in range(4):
            out[j, w] = x[w]


# Each kernel visits the counters covering [start, start + n) in parallel and handles the four
# lanes of each, skipping those outside the range (only at the two ends).


@_parallel
def _normals_kernel(out, k0, k1, start):
    n = out.shape[0]
    first = start // 4
    for b in prange((start + n + 3) // 4 - first):
        c = first + b
        z = _normals4(np.uint64(c), k0, k1)
        for lane in range(4):
            i = c * 4 + lane - start
            if i >= 0 and i < n:
                out[i] = z[lane]


@_parallel
def _perturbed_kernel(out, theta, scale, k0, k1, start):
    n = out.shape[0]
    first = start // 4
    for b in prange((start + n + 3) // 4 - first):
        c = first + b
        z = _normals4(np.uint64(c), k0, k1)
        for lane in range(4):
            i = c * 4 + lane - start
            if i >= 0 and i < n:
                out[i] = theta[i] + scale * z[lane]


@_parallel
def _update_kernel(theta, coeff, keep, k0, k1, start):
    n = theta.shape[0]
    first = start // 4
    for b in prange((start + n + 3) // 4 - first):
        c = first + b
        z = _normals4(np.uint64(c), k0, k1)
        for lane in range(4):
            i = c * 4 + lane - start
            if i >= 0 and i < n:
                theta[i] = _fma(coeff, z[lane], theta[i] * keep)


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


def update_inplace(
    theta: torch.Tensor, coeff: float, decay: float, key: int, start: int
) -> torch.Tensor:
    """θ ← θ·(1 − decay) + coeff·z[start : start + len(θ)] in place, no z stored."""
    _require()
    k0, k1, s = _key_start(key, start)
    _update_kernel(_vector(theta, "theta"), np.float32(coeff), np.float32(1.0 - decay), k0, k1, s)
    return theta


def _rate(fn: Callable[[], object], n: int, repeats: int = 3) -> float:
    """Elements per second of fn over n elements, best of `repeats` (after one warm-up call)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return n / best


def measure(n: int = 10**7, key: int = 0x1234_5678_9ABC_DEF) -> dict[str, float]:
    """Elements per second of the numba kernels, the torch reference, seeded torch.randn and
    one fp32 axpy pass (the memory-pass floor), over n elements in the current threads."""
    from zoft.optim.directions import keyed_normal
    from zoft.optim.philox import philox_normal

    a, b = torch.zeros(n), torch.ones(n)
    rates = {
        "torch.randn (seeded generator)": _rate(lambda: keyed_normal((n,), key, a.device), n),
        "torch reference philox_normal": _rate(lambda: philox_normal(key, 0, n), n, repeats=1),
        "axpy a.add_(b, alpha=0.5)": _rate(lambda: a.add_(b, alpha=0.5), n),
    }
    if available():
        out = torch.empty(n)
        rates["numba normals_into"] = _rate(lambda: normals_into(out, key, 1), n)
        rates["numba perturbed_into"] = _rate(lambda: perturbed_into(out, a, 1e-3, key, 1), n)
        rates["numba update_inplace"] = _rate(lambda: update_inplace(a, 1e-6, 0.0, key, 1), n)
    return rates


def main(argv: list[str] | None = None) -> None:
    """--measure: print the rates of measure() (numba and torch threads as the environment
    sets them: NUMBA_NUM_THREADS, OMP_NUM_THREADS)."""
    parser = argparse.ArgumentParser(prog="python -m zoft.optim.philox_numba")
    parser.add_argument("--measure", action="store_true", help="time the kernels")
    parser.add_argument("--n", type=float, default=1e7, help="elements (default 1e7)")
    args = parser.parse_args(argv)
    if not args.measure:
        parser.print_help()
        return
    threads = numba.get_num_threads() if available() else 0
    print(f"numba available: {available()} {_WHY}".rstrip())
    print(f"threads: numba {threads}, torch {torch.get_num_threads()}; n = {int(args.n):,}")
    for name, rate in measure(int(args.n)).items():
        print(f"{name:34s} {rate / 1e6:9.1f} M elements/s")


if __name__ == "__main__":
    main()

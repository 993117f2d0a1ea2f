"""The Philox normals of zoft.optim.philox as Triton kernels, for CUDA tensors.

The same mapping and formula as the torch reference (its docstring): counter c = i // 4 with key
words (k0, k1) of the direction key, Philox4x32-10 (Triton's tl.philox, Random123's rounds),
u = ((x >> 9) + 0.5)·2⁻²³, Box–Muller in fp32. Each program draws BLOCK counters and writes the
4·BLOCK elements they cover that fall in [start, start + n). Three modes, one kernel:

  normals    out[j] = z[start + j]
  perturbed  out[j] = fl(θ[j] + fl(s·z))                      (θ in its dtype, computed in fp32)
  update     θ[j] ← fma(c, z, fl(θ[j]·keep))                   (rounded once to θ's dtype)

so no z array is stored by the fused modes. The uint32 words are the reference's exactly; the
normals differ by a few ulp where the device's log/cos/sin do. On a machine without a GPU the
kernel logic runs under Triton's interpreter (TRITON_INTERPRET=1, as CI tests it).
"""

from __future__ import annotations

import math
import os

import torch

from zoft.optim.philox import ROUNDS, UNIFORM_SCALE, UNIFORM_SHIFT, key_words

try:
    import triton
    import triton.language as tl
except ImportError as error:  # the optional extra: pip install 'zoft[gpu]'
    triton = tl = None
    _WHY = f"triton is not installed or not importable ({error})"
else:
    _WHY = ""

BLOCK = 256  # counters per program (1024 elements)
_NORMALS, _PERTURBED, _UPDATE = 0, 1, 2
TWO_PI_F32 = float(torch.tensor(math.pi * 2.0, dtype=torch.float32))


def available(device: torch.device | str = "cuda") -> bool:
    """Whether the kernels can run on `device`: triton importable, and a CUDA device (or the
    interpreter, for CPU tensors)."""
    if triton is None:
        return False
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available()
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason() -> str:
    return _WHY or ("" if torch.cuda.is_available() else "no CUDA device")


if triton is not None:

    @triton.jit
    def _kernel(
        out_ptr,
        theta_ptr,
        k0,
        k1,
        start,
        n,
        scale,
        keep,
        MODE: tl.constexpr,
        BLOCK: tl.constexpr,
        SHIFT: tl.constexpr,
        USCALE: tl.constexpr,
        TWO_PI: tl.constexpr,
        N_ROUNDS: tl.constexpr,
    ):
        first = start // 4
        c = first + tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        c_lo = (c & 0xFFFFFFFF).to(tl.uint32)
        c_hi = (c >> 32).to(tl.uint32)
        zero = tl.zeros_like(c_lo)
        seed = (k1.to(tl.uint64) << 32) | k0.to(tl.uint64)
        x0, x1, x2, x3 = tl.philox(seed, c_lo, c_hi, zero, zero, N_ROUNDS)
        u0 = ((x0 >> SHIFT).to(tl.float32) + 0.5) * USCALE
        u1 = ((x1 >> SHIFT).to(tl.float32) + 0.5) * USCALE
        u2 = ((x2 >> SHIFT).to(tl.float32) + 0.5) * USCALE
        u3 = ((x3 >> SHIFT).to(tl.float32) + 0.5) * USCALE
        r01 = tl.sqrt(-2.0 * tl.log(u0))
        r23 = tl.sqrt(-2.0 * tl.log(u2))
        a01 = u1 * TWO_PI
        a23 = u3 * TWO_PI
        lanes = (r01 * tl.cos(a01), r01 * tl.sin(a01), r23 * tl.cos(a23), r23 * tl.sin(a23))
        for lane in tl.static_range(4):
            z = lanes[lane]
            j = c * 4 + lane - start  # the element's place in out / θ
            inside = (j >= 0) & (j < n)
            if MODE == 0:
                tl.store(out_ptr + j, z, mask=inside)
            elif MODE == 1:
                theta = tl.load(theta_ptr + j, mask=inside)
                value = theta.to(tl.float32) + scale * z
                tl.store(out_ptr + j, value.to(theta.dtype), mask=inside)
            else:
                theta = tl.load(theta_ptr + j, mask=inside)
                value = tl.fma(scale, z, theta.to(tl.float32) * keep)
                tl.store(theta_ptr + j, value.to(theta.dtype), mask=inside)


def _launch(mode: int, out: torch.Tensor, theta: torch.Tensor, key: int, start: int,
            scale: float = 0.0, keep: float = 1.0) -> None:  # fmt: skip
    if triton is None:
        raise RuntimeError(f"the Triton Philox kernels are unavailable: {_WHY}")
    for t in (out, theta):
        if t.ndim != 1 or not t.is_contiguous():
            raise ValueError(
                f"the Triton kernels take 1-D contiguous tensors, got {tuple(t.shape)}"
            )
    k0, k1 = key_words(key)
    n = out.numel()
    counters = (start + n + 3) // 4 - start // 4
    grid = (triton.cdiv(max(counters, 1), BLOCK),)
    _kernel[grid](
        out, theta, k0, k1, start, n, float(scale), float(keep), MODE=mode, BLOCK=BLOCK,
        SHIFT=UNIFORM_SHIFT, USCALE=UNIFORM_SCALE, TWO_PI=TWO_PI_F32, N_ROUNDS=ROUNDS,
    )  # fmt: skip


def normals_into(out: torch.Tensor, key: int, start: int) -> torch.Tensor:
    """Write z[start : start + len(out)] of the direction keyed by `key` (fp32) into `out`."""
    if out.dtype != torch.float32:
        raise ValueError(f"normals are fp32, got {out.dtype}")
    _launch(_NORMALS, out, out, key, start)
    return out


def perturbed_into(
    out: torch.Tensor, theta: torch.Tensor, scale: float, key: int, start: int
) -> torch.Tensor:
    """out = θ + scale·z[start : start + len(θ)] in θ's dtype (out may be θ), no z stored."""
    if out.shape != theta.shape or out.dtype != theta.dtype:
        raise ValueError("out and theta must have one shape and dtype")
    _launch(_PERTURBED, out, theta, key, start, scale)
    return out


def perturbed_rows_into(
    out: torch.Tensor, theta: torch.Tensor, rows: torch.Tensor, scale: float, key: int
) -> torch.Tensor:
    """out[i] = θ[rows[i]] + scale·z[rows[i]] for a 2-D θ (z's rows addressed by counter), one
    launch per row."""
    if out.ndim != 2 or theta.ndim != 2 or out.shape != (len(rows), theta.shape[1]):
        raise ValueError(
            f"out {tuple(out.shape)} must be (len(rows), width) of theta {tuple(theta.shape)}"
        )
    width = theta.shape[1]
    for i, row in enumerate(rows.tolist()):
        perturbed_into(out[i], theta[row], scale, key, row * width)
    return out


def update_inplace(
    theta: torch.Tensor, coeff: float, decay: float, key: int, start: int
) -> torch.Tensor:
    """θ ← θ·(1 − decay) + coeff·z[start : start + len(θ)] in place, rounded once, no z."""
    _launch(_UPDATE, theta, theta, key, start, coeff, 1.0 - decay)
    return theta

"""The Triton Philox kernels' logic under Triton's interpreter on the CPU (TRITON_INTERPRET=1):
the reference's words exactly, its normals within a few ulp, the fused modes as torch's ops on
the same z. On a GPU the same checks run on CUDA (`gpu`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoft.optim import philox

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

# Triton reads TRITON_INTERPRET when it is imported, which torch may do before any test runs:
# the checks below run in a child pytest whose environment sets it from the start.
INNER = os.environ.get("ZOFT_TRITON_CHECKS") == "1"
KEY = 0x0123_4567_89AB_CDEF


def _child(interpret: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOFT_TRITON_CHECKS": "1", "OMP_NUM_THREADS": "1"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).parent)


@pytest.mark.skipif(INNER, reason="the child run itself")
def test_the_kernels_under_the_interpreter():
    done = _child(interpret=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout or "passed" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(INNER, reason="the child run itself")
def test_the_kernels_on_cuda():
    done = _child(interpret=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


inner = pytest.mark.skipif(not INNER, reason="run by the tests above, in a child process")


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.view(torch.int32).long() - b.view(torch.int32).long()).abs().max())


def _device() -> str:
    return "cuda" if os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


@inner
@pytest.mark.parametrize("start,count", [(0, 1024), (3, 1021), (2**34 + 1, 700)])
def test_normals_are_the_references_within_a_few_ulp(start, count):
    from zoft.optim import philox_triton

    out = torch.empty(count, dtype=torch.float32, device=_device())
    philox_triton.normals_into(out, KEY, start)
    expected = philox.philox_normal(KEY, start, count)
    assert _ulps(out.cpu(), expected) <= 4


@inner
def test_the_words_are_the_references():
    """The uniforms are exact functions of the words: equal uniforms for the lanes whose
    transform is a plain scaling show the words agree (r and the angle both come from them)."""
    from zoft.optim import philox_triton

    out = torch.empty(4096, dtype=torch.float32, device=_device())
    philox_triton.normals_into(out, KEY, 0)
    words = philox.philox4x32_10(philox.counters(0, 1024), philox.key_words(KEY))
    u = philox.uniforms(words)
    # z0² + z1² = −2 ln u0 exactly up to rounding: the radius comes from the same word
    z = out.cpu().view(1024, 4).double()
    radius = (z[:, 0] ** 2 + z[:, 1] ** 2).sqrt()
    torch.testing.assert_close(radius, (-2 * u[:, 0].double().log()).sqrt(), rtol=1e-6, atol=0)


@inner
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fused_modes_equal_torch_ops_on_the_same_z(dtype):
    from zoft.optim import philox_triton

    n, start = 2000, 5
    theta = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(dtype).to(_device())
    z = torch.empty(n, dtype=torch.float32, device=_device())
    philox_triton.normals_into(z, KEY, start)
    out = torch.empty_like(theta)
    philox_triton.perturbed_into(out, theta, 1e-2, KEY, start)
    perturbed = (theta.float() + 1e-2 * z).to(dtype)
    updated = theta.clone()
    philox_triton.update_inplace(updated, -0.5, 0.1, KEY, start)
    expected = (theta.float() * 0.9 + (-0.5) * z).to(dtype)  # two roundings; the kernel's FMA one
    if dtype == torch.float32:
        assert torch.equal(out, perturbed)
        assert _ulps(updated.cpu(), expected.cpu()) <= 1
    else:  # the interpreter emulates bf16 by truncation, a GPU rounds to nearest: 1 bf16 ulp
        exact = 0 if _device() == "cuda" else 1
        assert _bf16_ulps(out, perturbed) <= exact
        assert _bf16_ulps(updated, expected) <= 1


def _bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.cpu().view(torch.int16).long() - b.cpu().view(torch.int16).long()).abs().max())


@inner
def test_the_rows_mode_gives_the_rows_of_the_range_mode():
    """perturbed_rows_into (an embedding's looked-up rows) equals those rows of perturbed_into
    over the whole table."""
    from zoft.optim import philox_triton

    theta = torch.randn(9, 70, generator=torch.Generator().manual_seed(2)).to(_device())
    full = torch.empty_like(theta)
    philox_triton.perturbed_into(full.view(-1), theta.view(-1), 0.25, KEY, 0)
    rows = torch.tensor([8, 0, 3, 3], device=_device())
    out = torch.empty(len(rows), 70, device=_device())
    philox_triton.perturbed_rows_into(out, theta, rows, 0.25, KEY)
    assert torch.equal(out, full[rows])

"""Directions under both generators (optimizer.rng): torch reproduces every earlier run's
stream; philox draws z[i] as a pure function of (the parameter's key, i), so row blocks are
independent of how a parameter is split, and LOZO's U and V come from the same generator."""

import pytest
import torch

from tests.conftest import compose
from zoft.optim import directions as directions_module
from zoft.optim import philox, philox_numba
from zoft.optim.configs import LozoConfig, MezoConfig
from zoft.optim.directions import (
    GaussianDirections,
    LowRankDirections,
    direction_seed,
    keyed_normal,
    row_blocks,
)
from zoft.run.rundir import config_digest


def test_torch_directions_are_the_earlier_stream(monkeypatch):
    """rng=torch is torch.randn from the (seed, step, query, name) key, and name@index per row
    block of a large parameter: what every run before issue 19 drew."""
    param = torch.zeros(6, 5)
    z = GaussianDirections(3).dense("w", param, step=2, query=1)
    assert torch.equal(z, keyed_normal((6, 5), direction_seed(3, 2, 1, "w"), param.device))
    monkeypatch.setattr(directions_module, "BLOCK_ELEMENTS", 10)
    block = GaussianDirections(3).dense_block("w", param, step=2, query=1, index=1)
    assert torch.equal(block, keyed_normal((2, 5), direction_seed(3, 2, 1, "w@1"), param.device))


def test_philox_directions_are_the_keyed_stream_of_the_parameter():
    param = torch.zeros(7, 3)
    z = GaussianDirections(3, rng="philox").dense("w", param, step=2, query=1)
    expected = philox.philox_normal(direction_seed(3, 2, 1, "w"), 0, 21).view(7, 3)
    # the numba kernels (when installed) and the torch reference agree within a few ulp
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "lowrank"])
def test_philox_blocks_do_not_depend_on_the_block_size(monkeypatch, kind):
    """A block of rows is drawn at its element offset: the same z whether the parameter is one
    block or many (with torch, each block has its own key, so the split changes z)."""
    make = {
        "gaussian": lambda: GaussianDirections(4, rng="philox"),
        "lowrank": lambda: LowRankDirections(4, rank=2, interval=3, rng="philox"),
    }[kind]
    param = torch.zeros(9, 7)
    whole = make().dense("layer.weight", param, step=5, query=0)
    monkeypatch.setattr(directions_module, "BLOCK_ELEMENTS", 14)
    assert len(row_blocks(param)) == 5
    assert torch.equal(make().dense("layer.weight", param, step=5, query=0), whole)


def test_lozo_factors_come_from_the_chosen_generator():
    param = torch.zeros(8, 6)
    lozo = LowRankDirections(2, rank=3, interval=4, rng="philox")
    u, v = lozo.factors("w", param, step=5, query=0)
    torch.testing.assert_close(
        u, philox.philox_normal(direction_seed(2, 5, 0, "w#U"), 0, 24).view(8, 3), rtol=0,
        atol=1e-5,
    )  # fmt: skip
    torch.testing.assert_close(
        v, philox.philox_normal(direction_seed(2, 1, -1, "w#V"), 0, 18).view(6, 3), rtol=0,
        atol=1e-5,
    )  # fmt: skip
    torch_u, _ = LowRankDirections(2, rank=3, interval=4).factors("w", param, step=5, query=0)
    assert not torch.allclose(u, torch_u)


def test_the_generator_is_read_from_the_method_config():
    assert GaussianDirections.from_config(1, MezoConfig(rng="philox")).rng == "philox"
    assert LowRankDirections.from_config(1, LozoConfig(rng="philox")).rng == "philox"
    assert GaussianDirections.from_config(1, object()).rng == "torch"  # a config without the key


def test_only_philox_enters_the_digest(monkeypatch):
    """philox is the default since issue 19 (a new computation, so a new digest); rng=torch is
    the legacy value, left out of the digest, so runs finished before the key existed keep their
    folders (342a60efce and e40e43489d: MeZO's and LMAO's default digests before the change)."""
    monkeypatch.setenv("ZOFT_DATA", "/data")
    base = ["optimizer=mezo"]
    plain = config_digest(compose(base))
    assert config_digest(compose([*base, "optimizer.rng=philox"])) == plain
    assert config_digest(compose([*base, "optimizer.rng=torch"])) == "342a60efce" != plain
    lmao = ["optimizer=lmao"]
    assert config_digest(compose([*lmao, "optimizer.rng=torch"])) == "e40e43489d"
    assert config_digest(compose(lmao)) != "e40e43489d"


@pytest.mark.skipif(not philox_numba.available(), reason="numba is not installed")
def test_philox_on_cpu_uses_the_numba_kernels(monkeypatch):
    calls = []
    real = philox_numba.normals_into
    monkeypatch.setattr(philox_numba, "normals_into", lambda *a: calls.append(a) or real(*a))
    GaussianDirections(0, rng="philox").dense("w", torch.zeros(4, 4), step=0, query=0)
    assert len(calls) == 1

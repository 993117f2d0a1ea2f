"""Row forwards of a sequential probe (zoft.optim.row_forwards): with philox directions an
Embedding perturbs only the rows its batch looks up and a large Linear runs block by block, so
no θ-sized transient is formed; the probe computes what a fully perturbed copy computes."""

import pytest
import torch

from tests.conftest import tiny
from zoft.optim import arithmetic, row_forwards
from zoft.optim import directions as directions_module
from zoft.optim.perturb import PerturbationEngine

KERNELS = directions_module.philox_kernels(torch.device("cpu"))


def _directions(kind: str, rng: str = "philox"):
    if kind == "gaussian":
        return directions_module.GaussianDirections(3, rng=rng)
    return directions_module.LowRankDirections(3, rank=2, interval=5, rng=rng)


def _probe(monkeypatch, kind, *, rows: bool, fused: bool = True, rng: str = "philox"):
    """(logits under a +ε probe, the names perturbed() formed in full, weights afterwards)."""
    torch.manual_seed(0)
    model = tiny("llama").model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    directions = _directions(kind, rng)
    if not fused:
        monkeypatch.setattr(directions, "fused_key", lambda *a: None)
    if not rows:
        monkeypatch.setattr(row_forwards, "_ROW_FORWARDS", {})
    engine = PerturbationEngine(model, params, seed=3, directions=directions)
    whole: list[str] = []
    real = arithmetic.Perturbation.perturbed

    def spy(self, name, *args, **kwargs):
        whole.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(arithmetic.Perturbation, "perturbed", spy)
    ids = torch.randint(5, 400, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), engine.probe(step=1, scale=1e-2):
        logits = model(input_ids=ids).logits
    monkeypatch.undo()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # restore stays exact
    assert engine.touched == set(params)
    assert not any("forward" in m.__dict__ for m in model.modules())  # overrides removed
    return logits, set(whole), engine


@pytest.mark.parametrize("fused", [True, False] if KERNELS else [False])
def test_the_embedding_draws_only_its_rows_and_gives_the_same_bits(monkeypatch, fused):
    """Dense philox z: the lookup in θ[rows] + εz[rows] is bit for bit the lookup in a fully
    perturbed table, and the table is never formed whole."""
    rows_logits, rows_whole, engine = _probe(monkeypatch, "gaussian", rows=True, fused=fused)
    full_logits, full_whole, _ = _probe(monkeypatch, "gaussian", rows=False, fused=fused)
    embedding = "model.embed_tokens.weight"
    assert embedding in full_whole and embedding not in rows_whole
    assert torch.equal(rows_logits, full_logits)


def test_low_rank_embedding_rows_are_u_rows_times_v(monkeypatch):
    rows_logits, rows_whole, _ = _probe(monkeypatch, "lowrank", rows=True)
    full_logits, _, _ = _probe(monkeypatch, "lowrank", rows=False)
    assert "model.embed_tokens.weight" not in rows_whole
    torch.testing.assert_close(rows_logits, full_logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "lowrank"])
def test_a_large_linear_runs_block_by_block_of_rows(monkeypatch, kind):
    """Every Linear above the block size (here: all of them) forms only blocks of θ + εz."""
    monkeypatch.setattr(row_forwards, "LINEAR_BLOCK_ELEMENTS", 256)
    blocks: list[tuple[str, slice]] = []
    real = arithmetic.Perturbation.perturbed_rows

    def spy(self, name, original, rows, *args):
        if isinstance(rows, slice):
            blocks.append((name, rows))
        return real(self, name, original, rows, *args)

    monkeypatch.setattr(arithmetic.Perturbation, "perturbed_rows", spy)
    rows_logits, rows_whole, engine = _probe(monkeypatch, kind, rows=True)
    linears = {
        f"{n}.weight" for n, m in engine.model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    assert linears and not linears & rows_whole  # no Linear weight formed whole
    monkeypatch.setattr(row_forwards, "LINEAR_BLOCK_ELEMENTS", 256)
    full_logits, _, _ = _probe(monkeypatch, kind, rows=False)
    torch.testing.assert_close(rows_logits, full_logits, rtol=1e-5, atol=1e-6)


def test_the_torch_generator_keeps_the_whole_transient(monkeypatch):
    """rng=torch draws a block at once: no row forward, the old path bit for bit."""
    _, whole, _ = _probe(monkeypatch, "gaussian", rows=True, rng="torch")
    assert "model.embed_tokens.weight" in whole


@pytest.mark.skipif(not KERNELS, reason="numba is not installed")
def test_the_rows_kernel_gives_the_rows_of_the_range_kernel():
    from zoft.optim import philox_numba

    theta = torch.randn(37, 29)
    full = torch.empty_like(theta)
    philox_numba.perturbed_into(full.view(-1), theta.view(-1), 0.3, 12345, 0)
    rows = torch.tensor([36, 0, 5, 5, 17])
    out = torch.empty(len(rows), 29)
    philox_numba.perturbed_rows_into(out, theta, rows, 0.3, 12345)
    assert torch.equal(out, full[rows])
    with pytest.raises(ValueError, match="rows must lie"):
        philox_numba.perturbed_rows_into(out, theta, torch.tensor([0, 1, 2, 3, 37]), 0.3, 1)

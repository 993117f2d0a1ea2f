"""The shared ZO step: micro-batches (gradient accumulation with one perturbation) equal the
whole batch, and q queries (n-SPSA) average their estimates into one update."""

import pytest
import torch

from tests.conftest import tiny
from zoft.errors import ZoftError
from zoft.optim.base import batch_loss, micro_batches
from zoft.optim.configs import LozoConfig, MezoConfig
from zoft.optim.lozo import LOZO
from zoft.optim.mezo import MeZO
from zoft.scoring import build_scorer
from zoft.tasks import get_task


def _setup(data_dir, task_name="sst2", n=8):
    loaded = tiny("opt")
    task = get_task(task_name)
    batch = task.load_local("train", data_dir)[:n]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    return loaded.model, scorer, batch


def test_micro_batches_cover_the_batch_in_order():
    parts = micro_batches(list(range(10)), 3)
    assert [len(p) for p in parts] == [3, 4, 3]
    assert [x for p in parts for x in p] == list(range(10))
    assert len(micro_batches(list(range(2)), 5)) == 2  # never an empty part
    with pytest.raises(ZoftError, match="micro_batches"):
        micro_batches([1], 0)


@pytest.mark.parametrize("task_name", ["sst2", "squad"])  # candidate CE and token-level LM loss
def test_micro_batch_loss_equals_the_whole_batch_loss(task_name, data_dir):
    loaded = tiny("opt")
    task = get_task(task_name)
    batch = task.load_local("train", data_dir)[:6]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    loaded.model.eval()  # dropout off, as in every ZO forward
    whole = batch_loss(scorer, loaded.model, batch, 1)
    assert batch_loss(scorer, loaded.model, batch, 3) == pytest.approx(whole, rel=1e-5)
    assert batch_loss(scorer, loaded.model, batch, 4) == pytest.approx(whole, rel=1e-5)


@pytest.mark.parametrize("cls,config", [(MeZO, MezoConfig), (LOZO, LozoConfig)])
def test_accumulated_step_equals_the_step_on_the_concatenated_batch(cls, config, data_dir):
    """Same z over k micro-batches, one update: the same parameters as one step on the batch."""
    outcomes = []
    for k in (1, 4):
        model, scorer, batch = _setup(data_dir)
        opt = cls(config(lr=1e-2, eps=1e-3, micro_batches=k), model, scorer, 10, seed=3)
        result = opt.step(batch, step=0)
        outcomes.append((result, {n: p.detach().clone() for n, p in model.named_parameters()}))
    (whole, after_whole), (accumulated, after_acc) = outcomes
    assert accumulated.projected_grad == pytest.approx(whole.projected_grad, rel=1e-4)
    assert accumulated.loss == pytest.approx(whole.loss, rel=1e-5)
    for name, p in after_whole.items():
        # equal up to fp32 summation order in the loss (g agrees to ~1e-5 relative)
        assert torch.allclose(after_acc[name], p, atol=1e-5), name


def test_queries_average_their_estimates_into_one_update(data_dir):
    model, scorer, batch = _setup(data_dir)
    lr, queries = 1e-2, 3
    opt = MeZO(MezoConfig(lr=lr, eps=1e-3, queries=queries), model, scorer, 10, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    estimates, _ = opt.projected_gradients(batch, step=5)
    assert len(estimates) == queries and len(set(estimates)) == queries  # distinct directions
    opt.apply_update(5, estimates)
    for name, p in model.named_parameters():
        step = sum(g * opt.engine.direction(name, 5, q) for q, g in enumerate(estimates))
        assert torch.allclose(p.detach(), before[name] - lr * step / queries, atol=1e-6), name


def test_a_step_reports_two_forwards_per_query(data_dir):
    model, scorer, batch = _setup(data_dir)
    opt = MeZO(MezoConfig(queries=2), model, scorer, 10, seed=0)
    result = opt.step(batch, 0)
    assert (result.forwards, result.backwards) == (4, 0)
    with pytest.raises(ZoftError, match="optimizer.queries"):
        MeZO(MezoConfig(queries=0), model, scorer, 10, seed=0)

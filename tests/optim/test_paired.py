"""Paired probes: one forward over [B; B] gives the two losses of sequential probes, θ is never
written, a model that cannot be paired is caught at the first step, and the sweeps are counted."""

import logging
from collections import Counter

import pytest
import torch
from torch import nn

from tests.conftest import DATA_DIR, model_cfg, tiny
from zoft.errors import ZoftError
from zoft.models.loading import load_model
from zoft.optim import directions as directions_module
from zoft.optim.base import batch_loss, batch_loss_pair
from zoft.optim.configs import LozoConfig, MezoConfig
from zoft.optim.directions import GaussianDirections, LowRankDirections
from zoft.optim.lozo import LOZO
from zoft.optim.mezo import MeZO
from zoft.optim.perturb import PerturbationEngine, pairs_by_default
from zoft.optim.probes import _INCONCLUSIVE_CHECKS, PairingPolicy
from zoft.scoring import build_scorer
from zoft.scoring import causal as scoring
from zoft.scoring.base import chunks
from zoft.tasks import get_task

KINDS = {"opt": "causal_lm", "llama": "causal_lm", "roberta": "masked_lm"}
DIRECTIONS = {  # each kind under both generators (optimizer.rng)
    "gaussian": lambda: GaussianDirections(5),
    "lowrank": lambda: LowRankDirections(5, rank=2, interval=3),
    "gaussian-philox": lambda: GaussianDirections(5, rng="philox"),
    "lowrank-philox": lambda: LowRankDirections(5, rank=2, interval=3, rng="philox"),
}
# fp32 compares the estimate L+ − L− itself; half precision rounds θ ± εz differently on the
# sequential path (the paired one never forms W + εUVᵀ), so each loss is compared
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2, "fp16": 1e-2}


def _case(arch: str, task_name: str = "sst2", dtype: str = "fp32", n: int = 4):
    loaded = tiny(arch, dtype=dtype)
    task = get_task(task_name)
    scorer = build_scorer(KINDS[arch], task, loaded.tokenizer, "mezo", 256)
    return loaded.model.eval(), scorer, task.load_local("train", DATA_DIR)[:n]


def _params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _both(engine, model, scorer, batch, step=3, eps=1e-2):
    with torch.no_grad():
        sequential = engine._sequential(step, eps, lambda: batch_loss(scorer, model, batch, 1), 0)
        with engine.paired_probe(step, eps, 0).installed():
            paired = batch_loss_pair(scorer, model, batch, 1)
    return sequential, paired


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
@pytest.mark.parametrize("arch,task_name", [("opt", "sst2"), ("opt", "squad"), ("llama", "copa"),
                                            ("llama", "squad"), ("roberta", "sst2")])  # fmt: skip
def test_paired_losses_equal_sequential_ones_and_theta_is_untouched(arch, task_name, kind):
    model, scorer, batch = _case(arch, task_name)
    params = _params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    engine = PerturbationEngine(model, params, seed=5, directions=DIRECTIONS[kind]())
    (seq_plus, seq_minus), (plus, minus) = _both(engine, model, scorer, batch)
    assert seq_plus != seq_minus  # the probes really moved the loss
    assert plus == pytest.approx(seq_plus, rel=1e-5)
    assert minus == pytest.approx(seq_minus, rel=1e-5)
    assert (plus - minus) == pytest.approx(seq_plus - seq_minus, rel=1e-3)
    for name, p in params.items():
        assert torch.equal(p, before[name]), name
    assert engine.touched == set(params)  # tied embeddings / lm_head included


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_paired_probes_restore_bit_exactly_in_every_dtype(dtype, kind):
    model, scorer, batch = _case("llama", dtype=dtype)
    params = _params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    engine = PerturbationEngine(model, params, seed=1, directions=DIRECTIONS[kind]())
    (seq_plus, seq_minus), (plus, minus) = _both(engine, model, scorer, batch, eps=1e-2)
    assert plus == pytest.approx(seq_plus, rel=TOLERANCE[dtype])
    assert minus == pytest.approx(seq_minus, rel=TOLERANCE[dtype])
    for name, p in params.items():
        assert torch.equal(p, before[name]), name


def test_an_encoder_with_position_ids_shared_by_all_rows_is_paired():
    """BERT (MiniLM) feeds its position embedding ids of shape 1 × T: the two outputs are
    expanded to the batch, so rows still see their own sign."""
    loaded = load_model(model_cfg("minilm-l6"), "fp32", "cpu", 2)
    model = loaded.model.eval()
    task = get_task("sst2")
    scorer = build_scorer("classifier", task, loaded.tokenizer, "mezo", 64)
    batch = task.load_local("train", DATA_DIR)[:3]
    engine = PerturbationEngine(model, _params(model), seed=2, directions=DIRECTIONS["lowrank"]())
    (seq_plus, seq_minus), (plus, minus) = _both(engine, model, scorer, batch, eps=1e-2)
    assert plus == pytest.approx(seq_plus, rel=1e-5)
    assert minus == pytest.approx(seq_minus, rel=1e-5)
    assert engine.touched == set(_params(model))


def test_chunked_causal_forwards_keep_the_two_copies_aligned(monkeypatch):
    """When the logits budget splits the inputs over several forwards, each forward still takes
    the same inputs from both copies, first copy first."""
    model, scorer, batch = _case("opt", n=6)
    engine = PerturbationEngine(model, _params(model), seed=4)
    whole = _both(engine, model, scorer, batch)
    monkeypatch.setattr(scoring, "LOGIT_BUDGET", 4 * 1024)  # a couple of rows per forward
    chunked = _both(engine, model, scorer, batch)
    for a, b in zip(whole, chunked, strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_input_groups_take_equal_slices_of_both_copies():
    assert chunks(6, 4, paired=False) == [[0, 1, 2, 3], [4, 5]]
    assert chunks(6, 4, paired=True) == [[0, 1, 3, 4], [2, 5]]
    assert chunks(4, 1, paired=True) == [[0, 2], [1, 3]]


class RowMixer(nn.Module):
    """A model that averages over the batch before a perturbed layer: its rows are not
    independent, so a paired forward cannot stand for two probes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.outer = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x).mean(0, keepdim=True))


def _row_mixer_losses(model):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))

    def loss() -> float:
        return float(model(x).square().sum())

    def loss_pair() -> tuple[float, float]:
        out = model(torch.cat([x, x]))
        half = out.shape[0] // 2
        return float(out[:half].square().sum()), float(out[half:].square().sum())

    return loss, loss_pair


def _counted(scorer, model, batch):
    calls = {"loss": 0, "pair": 0}

    def loss() -> float:
        calls["loss"] += 1
        return batch_loss(scorer, model, batch, 1)

    def loss_pair() -> tuple[float, float]:
        calls["pair"] += 1
        return batch_loss_pair(scorer, model, batch, 1)

    return calls, loss, loss_pair


def test_auto_pairs_on_cuda_only():
    """A fixed rule, so the same command computes the same bits on the same kind of device."""
    assert pairs_by_default(torch.device("cuda")) is True
    assert pairs_by_default(torch.device("cpu")) is False
    model, scorer, batch = _case("opt")
    engine = PerturbationEngine(model, _params(model), seed=0, probes="auto")
    calls, loss, loss_pair = _counted(scorer, model, batch)
    with torch.no_grad():
        engine.two_point(0, 1e-3, loss, loss_pair)
    assert calls == {"loss": 2, "pair": 0} and engine.paired is False


def test_probes_paired_checks_once_then_pairs(caplog):
    model, scorer, batch = _case("opt")
    engine = PerturbationEngine(model, _params(model), seed=0, probes="paired")
    calls, loss, loss_pair = _counted(scorer, model, batch)
    with caplog.at_level(logging.INFO, logger="zoft.optim.probes"), torch.no_grad():
        first = engine.two_point(0, 1e-3, loss, loss_pair)
        assert calls == {"loss": 2, "pair": 1} and engine.paired is True
        engine.two_point(1, 1e-3, loss, loss_pair)
    assert calls == {"loss": 2, "pair": 2}
    assert first[0] != first[1]
    assert "paired probes agree with sequential probes" in caplog.text


def test_a_model_that_mixes_rows_falls_back_to_sequential_probes(caplog):
    model = RowMixer()
    engine = PerturbationEngine(model, _params(model), seed=0, probes="auto")
    engine.paired = None  # as on CUDA, where auto pairs
    loss, loss_pair = _row_mixer_losses(model)
    with caplog.at_level(logging.INFO, logger="zoft.optim.probes"), torch.no_grad():
        values = engine.two_point(0, 1e-2, loss, loss_pair)
        assert values == engine._sequential(0, 1e-2, loss, 0)  # the step used sequential probes
    assert engine.paired is False
    assert "paired probes are off for this run" in caplog.text


def test_probes_paired_refuses_a_model_that_cannot_be_paired():
    model = RowMixer()
    engine = PerturbationEngine(model, _params(model), seed=0, probes="paired")
    loss, loss_pair = _row_mixer_losses(model)
    with pytest.raises(ZoftError, match="optimizer.probes=paired cannot be used"), torch.no_grad():
        engine.two_point(0, 1e-2, loss, loss_pair)


def test_an_unknown_probe_mode_is_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(ZoftError, match="optimizer.probes='twice' is invalid"):
        PerturbationEngine(model, _params(model), seed=0, probes="twice")


def _optimizer(cls, config, probes, **kw):
    model, scorer, batch = _case("opt")
    opt = cls(config(lr=1e-3, eps=1e-3, probes=probes, **kw), model, scorer, 10, seed=0)
    return opt, model, batch


@pytest.mark.parametrize("cls,config", [(MeZO, MezoConfig), (LOZO, LozoConfig)])
def test_paired_and_sequential_steps_reach_the_same_weights(cls, config):
    after = {}
    for probes in ("sequential", "paired"):
        opt, model, batch = _optimizer(cls, config, probes)
        results = [opt.step(batch, step) for step in range(3)]
        after[probes] = ({n: p.detach().clone() for n, p in model.named_parameters()}, results)
    (seq, seq_results), (paired, paired_results) = after["sequential"], after["paired"]
    for a, b in zip(seq_results, paired_results, strict=True):
        assert b.projected_grad == pytest.approx(a.projected_grad, rel=1e-3, abs=1e-4)
        assert b.forwards == a.forwards == 2  # a paired forward counts as the two it replaces
    for name, p in seq.items():  # g agrees to float rounding (~1e-4 relative), steps ~1e-2
        torch.testing.assert_close(paired[name], p, rtol=0, atol=1e-5)


def test_the_pass_counter_reports_the_sweeps_each_scheme_makes():
    """Sequential MeZO forms z for each use of a parameter in each probe, then once for the
    update; paired MeZO once per use for both probes; paired LOZO writes matrices only in the
    update and forms the 1-D parameters' Gaussian z once for both probes. (A tied embedding is
    used twice, by the input embedding and the LM head.)"""
    per_step = {}
    for name, (cls, config, probes) in {
        "mezo-sequential": (MeZO, MezoConfig, "sequential"),
        "mezo-paired": (MeZO, MezoConfig, "paired"),
        "lozo-paired": (LOZO, LozoConfig, "paired"),
    }.items():
        opt, model, batch = _optimizer(cls, config, probes, rng="torch")  # whole transients
        opt.step(batch, 0)  # a paired run's first step also probes sequentially, to compare
        before = opt.engine.swept
        opt.step(batch, 1)
        per_step[name] = (opt.engine.swept - before) / opt.engine.numel
        assert opt.stats()["paired_probes"] == float(probes == "paired")
    engine = opt.engine
    params = engine.params
    uses = Counter(name for _, owned in engine.owners() for _, name in owned)
    repeated = sum((uses[n] - 1) * p.numel() for n, p in params.items()) / engine.numel
    # formed in the probes of paired LOZO: 1-D parameters, and matrices of modules other than
    # Linear and Embedding (OPT's learned positional embedding has a forward of its own)
    corrected = (nn.Linear, nn.Embedding)
    formed = {
        name
        for module, owned in engine.owners()
        for _, name in owned
        if params[name].ndim < 2 or type(module) not in corrected
    }
    formed_share = sum(params[n].numel() for n in formed) / engine.numel
    assert repeated > 0  # tiny-opt ties its LM head to the input embedding
    assert any(params[n].ndim >= 2 for n in formed)  # ... and has a learned positional embedding
    assert per_step["mezo-sequential"] == pytest.approx(3.0 + 2 * repeated)
    assert per_step["mezo-paired"] == pytest.approx(2.0 + repeated)
    assert per_step["lozo-paired"] == pytest.approx(1.0 + formed_share)


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
def test_parameters_in_several_row_blocks_pair_like_sequential_probes(monkeypatch, kind):
    monkeypatch.setattr(directions_module, "BLOCK_ELEMENTS", 500)
    model, scorer, batch = _case("opt")
    params = _params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    engine = PerturbationEngine(model, params, seed=5, directions=DIRECTIONS[kind]())
    (seq_plus, seq_minus), (plus, minus) = _both(engine, model, scorer, batch)
    assert plus == pytest.approx(seq_plus, rel=1e-5)
    assert minus == pytest.approx(seq_minus, rel=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in params.items())


def _swapped(scorer, model, batch):
    """A paired forward whose copies come back in the wrong order: L− reported as L+."""

    def loss_pair() -> tuple[float, float]:
        plus, minus = batch_loss_pair(scorer, model, batch, 1)
        return minus, plus

    return loss_pair


@pytest.mark.parametrize("kind", ["gaussian", "lowrank"])  # the case is one torch-drawn z
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_a_sign_swapped_pairing_is_refused_in_half_precision(dtype, kind):
    """|L+ − L−| ≈ 1e-2 here (step 3, ε = 1e-3), within 2e-2 of either loss: comparing each loss
    accepted the swap; comparing the estimate, with the dtype's loss resolution, refuses it."""
    model, scorer, batch = _case("opt", dtype=dtype)
    engine = PerturbationEngine(model, _params(model), seed=1, directions=DIRECTIONS[kind](),
                                probes="paired")  # fmt: skip
    sequential = engine._sequential(3, 1e-3, lambda: batch_loss(scorer, model, batch, 1), 0)
    difference = sequential[0] - sequential[1]
    assert engine.pairing._tolerance(sequential) < abs(difference) < 2e-2  # the case at issue
    with torch.no_grad(), pytest.raises(ZoftError, match="optimizer.probes=paired cannot"):
        engine.two_point(3, 1e-3, lambda: batch_loss(scorer, model, batch, 1),
                         _swapped(scorer, model, batch))  # fmt: skip


@pytest.mark.parametrize("kind", sorted(DIRECTIONS))
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_a_correct_pairing_is_kept_in_half_precision(dtype, kind):
    model, scorer, batch = _case("opt", dtype=dtype)
    engine = PerturbationEngine(model, _params(model), seed=1, directions=DIRECTIONS[kind](),
                                probes="paired")  # fmt: skip
    calls, loss, loss_pair = _counted(scorer, model, batch)
    with torch.no_grad():
        engine.two_point(3, 1e-3, loss, loss_pair)
    assert engine.paired is True and calls == {"loss": 2, "pair": 1}


def test_a_swapped_pairing_falls_back_under_auto_in_half_precision(caplog):
    model, scorer, batch = _case("opt", dtype="bf16")
    engine = PerturbationEngine(model, _params(model), seed=1,
                                directions=DIRECTIONS["gaussian"](), probes="auto")  # fmt: skip
    engine.paired = None  # as on CUDA, where auto pairs
    loss = lambda: batch_loss(scorer, model, batch, 1)  # noqa: E731
    with caplog.at_level(logging.INFO, logger="zoft.optim.probes"), torch.no_grad():
        values = engine.two_point(3, 1e-3, loss, _swapped(scorer, model, batch))
    assert engine.paired is False and values == engine._sequential(3, 1e-3, loss, 0)
    assert "paired probes are off for this run" in caplog.text


def test_an_estimate_below_the_loss_resolution_is_checked_again_then_given_up():
    """bf16 resolves a loss near 0.7 to about 4e-3: a difference of 1e-3 cannot show a sign
    error, so the check is repeated, and pairing given up when it never becomes measurable."""
    policy = PairingPolicy("auto", torch.device("cuda"), torch.finfo(torch.bfloat16).eps)
    sequential = (0.7010, 0.7000)

    def paired(verify: bool) -> tuple[float, float]:
        return sequential[1], sequential[0]  # swapped, and invisible at this resolution

    for step in range(_INCONCLUSIVE_CHECKS - 1):
        assert policy.two_point(step, lambda: sequential, paired) == sequential
        assert policy.paired is None  # still to be verified
    policy.two_point(_INCONCLUSIVE_CHECKS, lambda: sequential, paired)
    assert policy.paired is False


def test_fp32_pairing_verdicts_are_unchanged():
    """fp32 keeps its rule: |ΔL_paired − ΔL_sequential| ≤ 1e-2·|ΔL| + 1e-5·max(1, |L|)."""
    policy = PairingPolicy("paired", torch.device("cpu"), torch.finfo(torch.float32).eps)
    sequential = (0.7010, 0.7000)
    assert policy.two_point(0, lambda: sequential, lambda verify: (0.70101, 0.7)) == (0.70101, 0.7)
    assert policy.paired is True
    policy = PairingPolicy("paired", torch.device("cpu"), torch.finfo(torch.float32).eps)
    with pytest.raises(ZoftError, match="cannot be used"):
        policy.two_point(0, lambda: sequential, lambda verify: (0.70103, 0.7))


def test_inconclusive_pairing_checks_survive_a_checkpoint():
    """A resumed run gives pairing up at the same step as an uninterrupted one."""
    model = RowMixer()
    engine = PerturbationEngine(model, _params(model), seed=0, probes="paired")
    engine.pairing.inconclusive = 3
    state = engine.state_dict()
    resumed = PerturbationEngine(model, _params(model), seed=0, probes="paired")
    resumed.load_state_dict(state)
    assert resumed.pairing.inconclusive == 3
    state.pop("pairing_inconclusive")  # a checkpoint from before the counter existed
    resumed.load_state_dict(state)
    assert resumed.pairing.inconclusive == 0


@pytest.mark.gpu
@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_paired_probes_in_fp16_on_an_opt_1_3b_shape(rng):
    """The paper-scale path: random OPT-1.3B weights in fp16 on one GPU, both probes in one
    forward at 2B, equal to two sequential forwards within fp16's resolution, θ restored."""
    from zoft.benchmark.methods import SyntheticScorer
    from zoft.benchmark.models import BENCH_MODELS

    model, _ = BENCH_MODELS.get("opt-1.3b-random")("fp16", "cuda")
    model.eval()
    scorer = SyntheticScorer(model, batch=4, seq_len=64)
    params = _params(model)
    watched = {n: params[n].detach().clone() for n in list(params)[:3] + list(params)[-3:]}
    engine = PerturbationEngine(
        model, params, seed=1, directions=GaussianDirections(1, rng=rng), probes="paired"
    )
    with torch.no_grad():
        sequential = engine._sequential(3, 1e-3, lambda: batch_loss(scorer, model, [], 1), 0)
        paired = engine.two_point(
            3, 1e-3, lambda: batch_loss(scorer, model, [], 1),
            lambda: batch_loss_pair(scorer, model, [], 1),
        )  # fmt: skip
    assert engine.paired is True
    assert paired == pytest.approx(sequential, rel=1e-2)
    for name, value in watched.items():
        assert torch.equal(params[name], value), name

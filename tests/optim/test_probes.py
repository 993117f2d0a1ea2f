"""The pairing policy (zoft.optim.probes): probes=auto pairs only where pairing is the faster mode
and its measured peak stays within optimizer.max_memory_ratio of inference; the decision and its
reason are kept."""

import pytest
import torch

from zoft.optim.probes import PairingPolicy

MIB = 2**20


def _scripted(peaks: list[int]):
    """A measure that runs fn and reports the next scripted peak (inference first)."""
    queue = list(peaks)

    def measure(fn):
        return fn(), queue.pop(0)

    return measure


def _first_step(policy: PairingPolicy):
    calls: list[str] = []

    def sequential():
        calls.append("sequential")
        return 2.0, 1.0

    def paired(verify: bool):
        calls.append("paired")
        return 2.0, 1.0

    def inference():
        calls.append("inference")
        return 1.5

    losses = policy.two_point(0, sequential, paired, inference=inference)
    return losses, calls


@pytest.mark.parametrize(
    ("paired_peak", "kept"), [(1040 * MIB, True), (1050 * MIB, True), (1200 * MIB, False)]
)
def test_auto_pairs_only_within_the_memory_ratio_of_inference(paired_peak, kept):
    policy = PairingPolicy(
        "auto", torch.device("cuda"), 1e-7, 1.05, measure=_scripted([1000 * MIB, paired_peak])
    )
    losses, calls = _first_step(policy)
    assert losses == (2.0, 1.0)
    assert calls == ["inference", "paired", "sequential"]  # measured, then checked
    assert policy.paired is kept
    assert policy.decision == ("paired" if kept else "sequential")
    ratio = f"{paired_peak / (1000 * MIB):.3f} x the inference peak 1000 MiB"
    assert ratio in policy.reason
    if not kept:
        assert "above optimizer.max_memory_ratio=1.05" in policy.reason
        assert _first_step(policy)[1] == ["sequential"]  # from then on


def test_a_larger_ratio_lets_auto_pair():
    policy = PairingPolicy(
        "auto", torch.device("cuda"), 1e-7, 1.25, measure=_scripted([1000 * MIB, 1200 * MIB])
    )
    _first_step(policy)
    assert policy.paired is True and "max_memory_ratio 1.25" in policy.reason


def test_explicit_paired_is_not_gated_by_memory():
    policy = PairingPolicy("paired", torch.device("cpu"), 1e-7, measure=_scripted([]))
    _, calls = _first_step(policy)
    assert calls == ["paired", "sequential"] and policy.paired is True
    assert policy.reason.startswith("optimizer.probes=paired: paired and sequential probes agree")


def test_auto_on_a_cpu_runs_sequential_and_says_why():
    policy = PairingPolicy("auto", torch.device("cpu"), 1e-7, measure=_scripted([]))
    assert policy.decision == "sequential" and "auto on cpu" in policy.reason
    assert _first_step(policy)[1] == ["sequential"]


def test_the_decision_survives_a_resume():
    from tests.conftest import tiny
    from zoft.optim.perturb import PerturbationEngine

    model = tiny("llama").model
    params = {n: p for n, p in model.named_parameters()}
    engine = PerturbationEngine(model, params, seed=0, probes="auto")
    engine.pairing.paired, engine.pairing.reason = False, "measured: too much memory"
    resumed = PerturbationEngine(model, params, seed=0, probes="auto")
    resumed.load_state_dict(engine.state_dict())
    assert resumed.pairing.reason == "measured: too much memory"

"""zoft.zo, the library API: the runner's optimizers fed by a closure. Bit-identical to the
runner's own steps, exact resume, clear refusals, and the documented example runs."""

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import compose, tiny
from zoft import zo
from zoft.errors import ZoftError
from zoft.models.adapters import add_adapter
from zoft.optim import METHODS, build_optimizer
from zoft.scoring import build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Example

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"
ZO_METHODS = sorted(m for m in METHODS if METHODS.facts(m).zeroth_order)


def test_every_zeroth_order_method_has_a_class():
    assert sorted(zo.METHOD_NAMES.values()) == ZO_METHODS
    assert set(zo.METHOD_NAMES) <= set(zo.__all__)


def _batch(loaded):
    task = get_task("sst2")
    sentences = ["a great film", "a bad film", "it is good", "it is terrible"]
    examples = [Example({"sentence": s}, i % 2) for i, s in enumerate(sentences)]
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 64)
    return scorer, examples


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", ZO_METHODS)
def test_a_library_step_is_the_runners_step(method):
    """The same three steps through zo and through the runner's optimizer: bit-identical."""
    options = {"lr": 1e-3, "eps": 1e-3}
    runs = []
    for through_library in (True, False):
        torch.manual_seed(0)  # the prefix's initial tokens come from the global generator
        loaded = tiny("opt")
        scorer, batch = _batch(loaded)
        cfg = compose([f"optimizer={method}", *(f"optimizer.{k}={v}" for k, v in options.items())])
        if through_library:
            opt = zo.optimizer(method, loaded.model, seed=5, **options)
            for _ in range(3):
                opt.step(lambda m=loaded.model, s=scorer, b=batch: s.loss(m, b))
        else:
            if cfg.optimizer.adapter != "none":
                add_adapter(loaded.model, cfg.optimizer, compose(["model=tiny-opt"]).model)
            runner = build_optimizer(cfg.optimizer, loaded.model, scorer, 3, 5)
            for step in range(3):
                runner.step(batch, step)
        runs.append(_weights(loaded.model))
    library, runner_weights = runs
    assert library.keys() == runner_weights.keys()
    assert all(torch.equal(library[n], runner_weights[n]) for n in library)


def test_state_dict_resumes_bit_identically():
    def fresh():
        loaded = tiny("llama")
        scorer, batch = _batch(loaded)
        opt = zo.LOZOM(loaded.model, lr=1e-3, eps=1e-3, seed=3)
        return loaded.model, opt, (lambda: scorer.loss(loaded.model, batch))

    model, opt, closure = fresh()
    for _ in range(4):
        opt.step(closure)
    straight = _weights(model)

    model, opt, closure = fresh()
    for _ in range(2):
        opt.step(closure)
    saved = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "zo": opt.state_dict()}
    model, opt, closure = fresh()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["zo"])
    assert opt.steps == 2
    for _ in range(2):
        opt.step(closure)
    assert all(torch.equal(straight[n], p) for n, p in _weights(model).items())


def test_only_what_requires_grad_trains_and_the_mode_is_restored():
    loaded = tiny("opt")
    scorer, batch = _batch(loaded)
    model = loaded.model.train()
    for name, p in model.named_parameters():
        p.requires_grad_("layers.1." in name)
    before = _weights(model)
    opt = zo.MeZO(model, lr=1e-2, eps=1e-3)
    loss = opt.step(lambda: scorer.loss(model, batch))
    assert model.training and isinstance(loss, float) and opt.last.projected_grad is not None
    changed = {n for n, p in _weights(model).items() if not torch.equal(p, before[n])}
    assert changed and all("layers.1." in n for n in changed)
    assert {n for n, _ in opt.parameters()} == {n for n in before if "layers.1." in n}


def test_paired_probes_take_the_doubled_closure():
    loaded = tiny("opt")
    scorer, batch = _batch(loaded)
    model = loaded.model
    opt = zo.MeZO(model, lr=1e-3, eps=1e-3, probes="paired")
    pairs = []

    def closure_pair():
        (plus, n_plus), (minus, n_minus) = scorer.loss_sum_pair(model, batch)
        pairs.append(1)
        return plus / n_plus, minus / n_minus

    for _ in range(2):
        opt.step(lambda: scorer.loss(model, batch), closure_pair)
    assert pairs and opt.stats()["probes"] == "paired"


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda m: zo.MeZO(m, lr=-1.0), "lr"),
        (lambda m: zo.MeZO(m, lrr=1e-3), "lrr"),
        (lambda m: zo.optimizer("ft", m), "no zeroth-order method 'ft'"),
        (lambda m: zo.MeZO(m, micro_batches=2), "micro_batches"),
    ],
)
def test_bad_options_are_refused_by_name(make, message):
    with pytest.raises((ZoftError, ValueError), match=message):
        make(tiny("opt").model)


def test_the_documented_example_runs_and_learns(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 25  # "a 20-line example"
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {"__name__": "example"})
    printed = capsys.readouterr().out
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", printed).groups())
    assert last < first - 0.3
    # the doc shows this run (to float rounding: another CPU's kernels may differ in the last bits)
    shown = re.search(r"It prints `MeZO, 100 steps: loss ([\d.]+) -> ([\d.]+)`", DOC.read_text())
    assert shown and abs(float(shown[1]) - first) < 0.02 and abs(float(shown[2]) - last) < 0.05
    assert (tmp_path / "checkpoint.pt").is_file()

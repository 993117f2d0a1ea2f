"""zoft-bench on a tiny model: every method runs in one process and the report holds every
ratio (a smoke test: no timing is asserted)."""

import json

import pytest

from zoft.benchmark.cli import bench_main
from zoft.benchmark.methods import (
    BENCH_METHODS,
    DEFAULT_METHODS,
    BenchContext,
    ReferenceMeZO,
    SyntheticScorer,
)
from zoft.benchmark.models import BENCH_MODELS
from zoft.benchmark.report import markdown
from zoft.benchmark.run import BenchSettings, run_benchmark
from zoft.optim import OPTIMIZERS


@pytest.fixture(scope="module")
def tiny_result():
    settings = BenchSettings(model="tiny-opt", batch=2, seq_len=8, repeats=2, warmup=1, threads=1)
    return run_benchmark(settings)


def test_every_method_is_measured_in_one_run(tiny_result):
    assert [m.method for m in tiny_result.methods] == list(DEFAULT_METHODS)
    for m in tiny_result.methods:
        assert len(m.step_times_s) == 2 and m.step_s > 0, m.method
        assert m.peak_mib > 0, m.method
    rows = {m.method: m for m in tiny_result.methods}
    assert rows["mezo-reference"].passes_per_step == 4.0
    assert rows["mezo-paired"].passes_per_step < rows["mezo-sequential"].passes_per_step < 4.0
    assert rows["lozo-paired"].passes_per_step < rows["mezo-paired"].passes_per_step
    assert rows["ft"].passes_per_step is None  # first-order steps sweep nothing
    assert (rows["lmao"].forwards, rows["lmao"].backwards) == (3, 1)


def test_every_registered_method_is_benched_with_the_passes_its_facts_declare(tiny_result):
    stepped: dict[str, list[str]] = {}
    for m in tiny_result.methods:
        optimizer = BENCH_METHODS.meta(m.method).get("optimizer")
        if optimizer is not None:
            stepped.setdefault(optimizer, []).append(m.method)
            facts = OPTIMIZERS.facts(optimizer)
            if BENCH_METHODS.meta(m.method)["replay"]:  # the recorded update alone: one sweep
                assert (m.forwards, m.backwards, m.passes_per_step) == (0, 0, 1.0), m.method
            else:
                assert (m.forwards, m.backwards) == (facts.forwards, facts.backwards), m.method
            assert m.pure_zo == facts.zeroth_order, m.method
    assert list(stepped) == OPTIMIZERS.in_paper_order()
    for name in OPTIMIZERS:  # ZO methods once per probe order (a prefix cannot be paired)
        probes = ["sequential", "paired"] if OPTIMIZERS.facts(name).zeroth_order else [""]
        if OPTIMIZERS.config(name)().adapter == "prefix":
            probes = probes[:1]
        if OPTIMIZERS.get(name).replayable:  # and the replay of a step (zoft-replay)
            probes.append("replay")
        assert stepped[name] == [f"{name}-{p}".rstrip("-") for p in probes], name


def test_the_report_prints_ratios_and_targets(tiny_result):
    text = markdown(tiny_result)
    for m in tiny_result.methods:
        assert f"| {m.label} |" in text
    assert "## Targets (DESIGN §8)" in text
    assert "| MeZO step ≤ 2.2 × one forward | MeZO, paired probes |" in text
    assert "GPU target; for information" in text  # LOZO's 1.3 × goal, on CPU
    assert "## Replay (zoft-replay, trajectory checkpoints)" in text
    assert "| MeZO | " in text.split("## Replay")[1]  # against "MeZO, paired probes"


def test_the_command_writes_markdown_and_json(tmp_path, capsys):
    bench_main(
        ["--model", "tiny-llama", "--batch", "2", "--seq-len", "8", "--repeats", "1",
         "--warmup", "1", "--methods", "forward,mezo-reference,lozo-paired",
         "--out", str(tmp_path / "bench")]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "LOZO, paired probes" in printed and "wrote" in printed
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["forward", "mezo-reference", "lozo-paired"]
    assert (tmp_path / "bench.md").read_text().startswith("# zoft-bench: tiny-llama, fp32, cpu")


def test_both_generators_are_timed_in_one_run_with_the_perturbation_share(capsys):
    bench_main(
        ["--model", "tiny-opt", "--batch", "2", "--seq-len", "8", "--repeats", "1",
         "--warmup", "1", "--methods", "forward,mezo-sequential,ft", "--rng", "torch,philox"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert "| MeZO, sequential probes, torch directions |" in text
    assert "| MeZO, sequential probes, philox directions |" in text
    assert text.count("| FT |") == 1  # a step that draws no directions runs once
    assert "perturbation share" in text and "## Generators against one memory pass" in text
    for what in ("torch normals", "philox normals", "fp32 axpy pass"):
        assert f"| {what} |" in text
    assert "GB/s" in text


def test_perturbation_share_is_the_step_less_its_forwards():
    from zoft.benchmark.report import perturbation_share
    from zoft.benchmark.run import MethodResult

    def row(method, step_s, forwards, pure_zo=True):
        return MethodResult(method, method, step_s, [step_s], forwards, 0, None, 1.0, pure_zo)

    forward = row("forward", 1.0, 1, pure_zo=False)
    assert perturbation_share(row("mezo-sequential", 2.5, 2), forward) == pytest.approx(0.2)
    assert perturbation_share(row("mezo-paired", 1.8, 2), forward) == 0.0  # pairing is cheaper
    assert perturbation_share(row("ft", 3.0, 1, pure_zo=False), forward) is None


def test_bad_settings_are_refused_before_anything_runs():
    with pytest.raises(SystemExit, match="Unknown benchmark method 'mezzo'"):
        bench_main(["--methods", "forward,mezzo"])
    with pytest.raises(SystemExit, match="--warmup=0 is out of range: it must be >= 1"):
        bench_main(["--warmup", "0"])
    with pytest.raises(SystemExit, match="--batch=0 is out of range: it must be >= 1"):
        bench_main(["--batch", "0"])
    with pytest.raises(SystemExit, match="--device tpu is invalid"):
        bench_main(["--device", "tpu"])
    with pytest.raises(SystemExit, match="--rng mt19937 is invalid: use philox, torch"):
        bench_main(["--rng", "mt19937"])


def test_the_reference_pattern_moves_weights_as_minus_lr_g_z():
    """Its four regenerations redraw the same z: the weights end at θ − ηgz up to the rounding
    of its out-of-place passes."""
    model, model_cfg = BENCH_MODELS.get("tiny-opt")("fp32", "cpu")
    scorer = SyntheticScorer(model, batch=2, seq_len=8)
    ctx = BenchContext(model, model_cfg, scorer, total_steps=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = ReferenceMeZO(ctx, eps=1e-3, lr=0.0)
    reference.step(0)
    for name, p in model.named_parameters():  # lr 0: +ε −2ε +ε returns to θ, inexactly
        assert (p.detach() - before[name]).abs().max() < 1e-6, name
    assert reference.sweeps() == 4.0


def test_published_opt_shapes_build_with_random_weights():
    """The GPU tables' models need no download: OPT-125M's published shape, built here."""
    model, model_cfg = BENCH_MODELS.get("opt-125m-random")("fp32", "cpu")
    assert 125e6 < sum(p.numel() for p in model.parameters()) < 126e6
    assert model.config.ffn_dim == 3072 and model.config.num_hidden_layers == 12
    assert list(model_cfg.lora_targets) == ["q_proj", "v_proj"]

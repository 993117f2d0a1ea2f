"""Data parallelism with torchrun on 2 CPU processes (gloo): ZO runs equal the single-process run
on the concatenated batch bit for bit; FT-LoRA trains under FSDP2 as under plain data
parallelism; FSDP runs resume from per-rank shards bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoft.run import distributed
from zoft.run.replay import replay

COMMON = [
    "model=tiny-opt",
    "steps=6",
    "batch_size=4",
    "eval_every=3",
    "log_every=1",
    "task.kshot_test_cap=32",
    "eval_batch_size=8",
    "save_weights=true",
    "threads=1",
]


def _launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "zoft"]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*run, f"--nproc-per-node={processes}", "-m", "zoft"]


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "ZOFT_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}


def _run(args: list[str], results: Path, data_dir: Path, processes: int = 1):
    results.mkdir(parents=True, exist_ok=True)
    cmd = [*_launcher(processes), *COMMON, *args, f"results_dir={results}"]
    env = _env(data_dir)
    proc = subprocess.run(cmd, env=env, cwd=results, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (result,) = results.rglob("result.json")
    return result.parent


def _losses(run_dir: Path) -> list[tuple]:
    lines = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"], r.get("projected_grad"), r.get("dev_accuracy")) for r in lines]


@pytest.mark.parametrize("rng", ["torch", "philox"])
@pytest.mark.parametrize("method", ["mezo", "lozo-m"])
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(method, rng, data_dir, tmp_path):
    args = [f"optimizer={method}", "optimizer.lr=1e-3", f"optimizer.rng={rng}"]
    # one process cuts the batch in 2 micro-batches: the shards the 2 ranks compute
    single = _run([*args, "optimizer.micro_batches=2"], tmp_path / "one", data_dir)
    pair = _run(args, tmp_path / "two", data_dir, processes=2)
    a, b = (
        load_file(str(single / "weights.safetensors")),
        load_file(str(pair / "weights.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(single) == _losses(pair)
    one, two = (json.loads((d / "result.json").read_text()) for d in (single, pair))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["test"] == two["test"] and one["dev"] == two["dev"]
    assert len(list((tmp_path / "two").rglob("result.json"))) == 1  # rank 0 writes alone
    # rank 0's trajectory holds the all-reduced estimates: one process replays the pair's run
    replay(pair, None, tmp_path / "replayed.safetensors")
    rebuilt = load_file(str(tmp_path / "replayed.safetensors"))
    assert rebuilt.keys() == b.keys() and all(torch.equal(rebuilt[k], b[k]) for k in b)


def test_ft_lora_under_fsdp2_trains_like_plain_data_parallelism(data_dir, tmp_path):
    args = ["optimizer=ft-lora", "optimizer.lr=1e-3"]
    plain = _run(args, tmp_path / "ddp", data_dir, processes=2)
    sharded = _run([*args, "fsdp=true"], tmp_path / "fsdp", data_dir, processes=2)
    a, b = (
        load_file(str(plain / "weights.safetensors")),
        load_file(str(sharded / "weights.safetensors")),
    )
    assert a.keys() == b.keys()
    for name in a:  # whole tensors gathered from the shards
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)
    first, second = _losses(plain), _losses(sharded)
    assert [s for s, *_ in first] == [s for s, *_ in second]
    for (_, x, *_), (_, y, *_) in zip(first, second, strict=True):
        assert y == pytest.approx(x, rel=1e-4)


def test_a_single_process_is_its_own_shard():
    batch = list(range(5))
    assert distributed.shard(batch) == batch
    assert distributed.all_sum([1.5, 2]) == [1.5, 2]
    assert distributed.gather_shards(["a"]) == ["a"]
    assert distributed.world_size() == 1 and distributed.is_main()


@pytest.mark.parametrize(
    "method,fsdp",
    [("ft-lora", True), ("ft", True), ("lozo-m", False)],
    ids=["fsdp-ft-lora", "fsdp-ft", "dp-lozo-m"],
)
def test_a_multiprocess_run_killed_and_resumed_equals_an_uninterrupted_one(
    method, fsdp, data_dir, tmp_path
):
    """torchrun passes SIGTERM on to the ranks, which agree on the step to stop after. Under FSDP
    each rank checkpoints its own shards (weights, AdamW moments, best-dev copy); under plain
    data parallelism rank 0 writes the checkpoint every rank resumes from (LOZO-M's: its
    trajectory, which every rank replays). Either way: the
    uninterrupted run's weights bit for bit, and its metrics."""
    from tests.run.test_resume import _interrupt_after, _metrics

    args = [f"optimizer={method}", "optimizer.lr=1e-3", f"fsdp={fsdp}", "steps=30", "eval_every=7"]
    straight = _run(args, tmp_path / "straight", data_dir, processes=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    cmd = [*_launcher(2), *COMMON, *args, f"results_dir={broken}"]
    assert _interrupt_after(cmd, _env(data_dir), broken, step=9) != 0
    (checkpoint,) = broken.rglob("checkpoints/step-*")
    sharded = {"weights-rank1.safetensors", "state-rank1.pt", "best-rank1.safetensors"}
    trajectory = {"trajectory.jsonl", "state.pt", "meta.json"}  # LOZO-M: rank 0's, no weights
    if fsdp:
        assert {p.name for p in checkpoint.iterdir()} >= sharded
    else:
        assert {p.name for p in checkpoint.iterdir()} == trajectory
    resumed = _run(args, broken, data_dir, processes=2)
    a = load_file(str(straight / "weights.safetensors"))
    b = load_file(str(resumed / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(straight) == _metrics(resumed)
    assert json.loads((resumed / "result.json").read_text())["resumed_at_steps"][0] >= 9

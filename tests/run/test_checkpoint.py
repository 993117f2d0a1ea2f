"""Checkpoints: written atomically, the latest complete one is found, another config's refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from zoft.run.checkpoint import (
    Checkpointer,
    CheckpointError,
    capture_rng,
    load_weights,
    restore_rng,
)


def _params() -> dict[str, torch.nn.Parameter]:
    return {"w": torch.nn.Parameter(torch.randn(3, 4)), "b": torch.nn.Parameter(torch.zeros(4))}


def test_the_latest_complete_checkpoint_is_found_and_older_ones_removed(tmp_path):
    keeper = Checkpointer(tmp_path, "abc")
    params = _params()
    keeper.save(5, params, None, {"note": 5})
    keeper.save(10, params, {"w": params["w"] * 2, "b": params["b"]}, {"note": 10})
    assert sorted(p.name for p in keeper.root.iterdir()) == ["latest", "step-000000010"]
    (keeper.root / ".step-000000015-half").mkdir()  # a save killed half-way: no meta.json
    found = keeper.load()
    assert found.step == 10 and found.state == {"note": 10}
    assert torch.equal(found.best_weights()["w"], params["w"] * 2)
    copy = {n: torch.nn.Parameter(torch.zeros_like(p)) for n, p in params.items()}
    load_weights(copy, found.weights_file)
    assert all(torch.equal(copy[n], params[n]) for n in params)


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    Checkpointer(tmp_path, "abc").save(1, _params(), None, {})
    with pytest.raises(CheckpointError, match=r"different config .*resume=false"):
        Checkpointer(tmp_path, "xyz").load()


def test_mismatched_parameters_are_refused(tmp_path):
    keeper = Checkpointer(tmp_path, "abc")
    keeper.save(1, _params(), None, {})
    other = {"w": torch.nn.Parameter(torch.zeros(4, 3)), "b": torch.nn.Parameter(torch.zeros(4))}
    with pytest.raises(CheckpointError, match=r"parameter w is torch.float32 \(3, 4\)"):
        load_weights(other, keeper.load().weights_file)
    with pytest.raises(CheckpointError, match="do not match the model's"):
        load_weights({"w": other["w"]}, keeper.load().weights_file)


def test_set_aside_keeps_the_old_checkpoints(tmp_path):
    keeper = Checkpointer(tmp_path, "abc")
    keeper.save(1, _params(), None, {})
    moved = keeper.set_aside()
    assert moved.name.startswith("checkpoints.") and (moved / "latest").is_file()
    assert keeper.load() is None


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    keeper = Checkpointer(tmp_path, "abc")
    keeper.save(1, _params(), None, {"rng": capture_rng()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(keeper.load().state["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]

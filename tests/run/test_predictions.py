"""predictions.jsonl: the reported test evaluation, one line per test example, from the same pass
as result.json's numbers (so the file's accuracy is the result's)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import compose
from zoft.report.collect import collect
from zoft.run.predictions import is_correct, read_predictions
from zoft.run.rundir import PREDICTIONS_FILE
from zoft.run.runner import run


def _run(tmp_path, data_dir, *overrides: str) -> tuple[dict, list[dict]]:
    cfg = compose(
        [
            "model=tiny-llama",
            f"output_dir={tmp_path}",
            f"task.data_dir={data_dir}",
            "threads=1",
            *overrides,
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete"
    return result, read_predictions(tmp_path / PREDICTIONS_FILE)


@pytest.mark.parametrize(
    "task, n_candidates",
    [("sst2", 2), ("cb", 3), ("copa", 2)],
)
def test_zero_shot_predictions_give_the_result_accuracy(tmp_path, data_dir, task, n_candidates):
    result, lines = _run(
        tmp_path,
        data_dir,
        f"task={task}",
        "task.protocol=large",
        "task.num_eval=12",
        "task.num_train=8",
        "task.num_dev=4",
        "steps=0",
    )
    assert len(lines) == result["num_test"] == 12
    assert all(set(line) == {"id", "scores", "prediction", "gold"} for line in lines)
    assert all(len(line["scores"]) == n_candidates for line in lines)
    for line in lines:  # the prediction is the argmax of the written scores
        assert line["prediction"] == max(range(n_candidates), key=line["scores"].__getitem__)
    accuracy = sum(line["prediction"] == line["gold"] for line in lines) / len(lines)
    assert accuracy == result["test"]["accuracy"]


def test_ids_are_the_official_idx_of_the_sampled_test_examples(tmp_path, data_dir):
    """Test = permutation(len(val), seed=data_seed)[:num_eval]; SuperGLUE's idx is the row's."""
    import numpy as np

    _, lines = _run(
        tmp_path,
        data_dir,
        "task=rte",
        "task.protocol=large",
        "task.num_eval=6",
        "task.num_train=4",
        "task.num_dev=2",
        "steps=0",
        "data_seed=0",
    )
    rows = [json.loads(x) for x in (data_dir / "superglue/RTE/val.jsonl").read_text().splitlines()]
    order = np.random.RandomState(0).permutation(len(rows))[:6]
    assert [line["id"] for line in lines] == [rows[i]["idx"] for i in order]


def test_sst2_ids_are_data_rows_of_the_ready_kshot_test_file(tmp_path, data_dir):
    """Without an official idx, the id is the example's 0-based data row in its file."""
    _, lines = _run(tmp_path, data_dir, "task.kshot_test_cap=10", "steps=0")
    assert len({line["id"] for line in lines}) == 10
    assert all(isinstance(line["id"], int) and line["id"] >= 0 for line in lines)


def test_a_trained_run_writes_the_final_test_evaluation(tmp_path, data_dir):
    result, lines = _run(
        tmp_path, data_dir, "optimizer=mezo", "steps=2", "task.kshot_test_cap=10", "batch_size=4"
    )
    accuracy = sum(line["prediction"] == line["gold"] for line in lines) / len(lines)
    assert len(lines) == 10
    assert accuracy == result["test"]["accuracy"]


def test_generation_predictions_give_the_result_f1(tmp_path, data_dir):
    result, lines = _run(
        tmp_path,
        data_dir,
        "task=squad",
        "task.protocol=large",
        "task.num_eval=4",
        "task.num_train=4",
        "task.num_dev=2",
        "steps=0",
    )
    assert all(set(line) == {"id", "prediction", "golds", "f1", "em"} for line in lines)
    assert sum(line["f1"] for line in lines) / len(lines) == pytest.approx(result["test"]["f1"])
    assert sum(line["em"] for line in lines) / len(lines) == pytest.approx(result["test"]["em"])


def test_the_table_reads_a_run_directory_holding_predictions(tmp_path, data_dir):
    _run(tmp_path / "sst2", data_dir, "task.kshot_test_cap=6", "steps=0")
    assert (tmp_path / "sst2" / PREDICTIONS_FILE).is_file()
    found = collect(tmp_path)
    assert [r.task for r in found.results] == ["sst2"] and not found.unreadable


def test_examples_with_fewer_candidates_have_only_their_own_scores(tmp_path, data_dir):
    """ReCoRD's candidate count varies: the batch's -inf filler is not written."""
    from zoft.tasks import get_task
    from zoft.tasks.sampling import with_row_ids

    result, lines = _run(
        tmp_path,
        data_dir,
        "task=record",
        "task.protocol=large",
        "task.num_eval=4",
        "task.num_train=4",
        "task.num_dev=2",
        "steps=0",
        "eval_batch_size=4",
        "data_seed=0",
    )
    pool = with_row_ids(get_task("record").load_local("validation", data_dir))
    by_id = {ex.id: ex for ex in pool}
    counts = [len(by_id[line["id"]].fields["candidates"]) for line in lines]
    assert len(set(counts)) > 1  # the batch mixes candidate counts
    assert [len(line["scores"]) for line in lines] == counts
    assert all(isinstance(line["gold"], list) and line["gold"] for line in lines)
    accuracy = sum(is_correct(line) for line in lines) / len(lines)
    assert accuracy == result["test"]["accuracy"]

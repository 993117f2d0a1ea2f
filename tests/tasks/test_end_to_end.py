"""Every task trains 2 steps end to end on a tiny model with the local data (DROP on a file in
the official format, since ../shared/data has none)."""

import json

import pytest

from tests.conftest import compose
from zoft.run.runner import run
from zoft.tasks import TASKS

LOCAL_TASKS = [t for t in TASKS if t != "drop"]


def _run(task: str, optimizer: str, results_dir) -> dict:
    cfg = compose(
        [
            f"task={task}",
            "model=tiny-opt",
            f"optimizer={optimizer}",
            "steps=2",
            "batch_size=2",
            "task.protocol=large",
            "task.num_train=8",
            "task.num_dev=4",
            "task.num_eval=6",
            "eval_batch_size=4",
            f"results_dir={results_dir}",
        ]
    )
    return run(cfg)


@pytest.mark.parametrize("optimizer", ["ft", "mezo"])
@pytest.mark.parametrize("task", LOCAL_TASKS)
def test_task_trains_two_steps(task, optimizer, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOFT_DATA", str(data_dir))
    result = _run(task, optimizer, tmp_path)
    assert result["status"] == "complete"
    assert (result["steps"], result["num_train"], result["num_test"]) == (2, 8, 6)
    metric = "f1" if TASKS.get(task).generative else "accuracy"
    assert 0.0 <= result["test"][metric] <= 1.0
    assert result["train_loss_first"] > 0  # a real loss was computed on the batch
    assert result["dev"] is not None


def test_drop_trains_from_a_local_official_file(tmp_path, monkeypatch):
    qa = [
        {
            "question": f"How many yards was touchdown {i}?",
            "answer": {
                "number": str(10 + i),
                "date": {"day": "", "month": "", "year": ""},
                "spans": [],
            },
            "query_id": f"q{i}",
        }
        for i in range(6)
    ]
    passage = {
        "passage": "The touchdowns were 10, 11, 12, 13, 14 and 15 yards long.",
        "qa_pairs": qa,
    }
    (tmp_path / "drop").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "drop" / f"drop_dataset_{split}.json").write_text(
            json.dumps({"p1": passage, "p2": passage})
        )
    monkeypatch.setenv("ZOFT_DATA", str(tmp_path))
    result = _run("drop", "ft", tmp_path / "runs")
    assert result["status"] == "complete" and set(result["test"]) == {"f1", "em"}

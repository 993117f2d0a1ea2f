"""predictions.jsonl: one line per test example of the reported test evaluation, so zoft's
numbers can be diffed against another scorer example by example (zoft-table ignores the file)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoft.run.rundir import atomic_write
from zoft.scoring.base import ScoredPredictions
from zoft.tasks.base import Example, Task
from zoft.tasks.metrics import best_over_golds


def prediction_records(
    task: Task, scored: ScoredPredictions, examples: Sequence[Example]
) -> list[dict[str, Any]]:
    """Generation: {id, prediction, golds, f1, em}; otherwise {id, scores, prediction, gold}
    with `scores` in the task's candidate order and prediction / gold as candidate indices
    (gold a list of indices where several answers count)."""
    if task.generative:
        return [
            {
                "id": ex.id,
                "prediction": answer,
                "golds": list(ex.fields["answers"]),
                **best_over_golds(answer, ex.fields["answers"]),
            }
            for answer, ex in zip(scored.predictions, examples, strict=True)
        ]
    scores = scored.scores if scored.scores is not None else [None] * len(examples)
    return [
        {"id": ex.id, "scores": row, "prediction": choice, "gold": gold_of(task, ex)}
        for choice, row, ex in zip(scored.predictions, scores, examples, strict=True)
    ]


def gold_of(task: Task, ex: Example) -> int | list[int]:
    """The gold candidate index; a list of them where any gold answer counts (ReCoRD), as
    MeZO's `one_step_pred` keeps `correct_candidate_id` for a list of correct candidates."""
    if task.has_candidates and "answers" in ex.fields:
        candidates = ex.fields["candidates"]
        return [candidates.index(a) for a in ex.fields["answers"] if a in candidates]
    return ex.label


def is_correct(record: dict[str, Any]) -> bool:
    """Whether a classification record's prediction is (one of) its gold candidate(s)."""
    gold = record["gold"]
    return record["prediction"] in gold if isinstance(gold, list) else record["prediction"] == gold


def write_predictions(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """The records as JSON lines, written atomically."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def read_predictions(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

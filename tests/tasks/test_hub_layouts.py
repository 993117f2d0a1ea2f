"""Every hub loader against a local mock of the repository's Parquet branch: the real
`<config>/<split>/NNNN.parquet` layout and the real column names and types, read through the
same load_dataset(data_files=..., revision=...) call as on the hub; only the location (repo id
-> local folder) is mocked, so a wrong config folder, split name or column fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets import ClassLabel, Features, Sequence, Value

from zoft.tasks import base, get_task

S, I32, I64 = Value("string"), Value("int32"), Value("int64")


def _labels(*names: str) -> ClassLabel:
    return ClassLabel(names=list(names))


def _rows(features: Features, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in features}


# repo -> config folder -> features, and the rows of each split (as the hub has them)
_NLI = {"premise": "A man sleeps.", "hypothesis": "A man rests."}
_BOOLQ_SG = {"question": "is it true", "passage": "It is.", "idx": 0, "label": 1}
_RECORD = {
    "passage": "Paris is big.\n@highlight\nParis",
    "query": "@placeholder is big",
    "entities": ["Paris"],
    "entity_spans": {"text": ["Paris"], "start": [0], "end": [5]},
    "answers": ["Paris"],
    "idx": {"passage": 0, "query": 0},
}
LAYOUTS: dict[str, dict[str, tuple[Features, dict[str, list[dict[str, Any]]]]]] = {
    "nyu-mll/glue": {
        "sst2": (
            Features({"sentence": S, "label": _labels("negative", "positive"), "idx": I32}),
            {
                "train": [{"sentence": "a gem ", "label": 1, "idx": 0}],
                "validation": [{"sentence": "dull .", "label": 0, "idx": 0}],
            },
        ),
        "mnli": (
            Features(
                {
                    "premise": S,
                    "hypothesis": S,
                    "label": _labels("entailment", "neutral", "contradiction"),
                    "idx": I32,
                }
            ),
            {
                "train": [{**_NLI, "label": 0, "idx": 0}],
                "validation_matched": [{**_NLI, "label": 2, "idx": 0}],
            },
        ),
    },
    "stanfordnlp/snli": {
        "plain_text": (
            Features(
                {
                    "premise": S,
                    "hypothesis": S,
                    "label": _labels("entailment", "neutral", "contradiction"),
                }
            ),
            {
                "train": [{**_NLI, "label": 1}],
                "validation": [{**_NLI, "label": 0}, {**_NLI, "label": -1}],
                "test": [{**_NLI, "label": 2}],
            },
        )
    },
    "SetFit/sst5": {
        "default": (
            Features({"text": S, "label": I64, "label_text": S}),
            {
                "train": [{"text": "fine .", "label": 2, "label_text": "neutral"}],
                "validation": [{"text": "bad .", "label": 1, "label_text": "negative"}],
                "test": [{"text": "great .", "label": 4, "label_text": "very positive"}],
            },
        )
    },
    "CogComp/trec": {
        "default": (
            Features(
                {
                    "text": S,
                    "coarse_label": _labels("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
                    "fine_label": ClassLabel(num_classes=50),
                }
            ),
            {
                "train": [{"text": "Who is he ?", "coarse_label": 3, "fine_label": 0}],
                "test": [{"text": "What is AI ?", "coarse_label": 0, "fine_label": 0}],
            },
        )
    },
    "rajpurkar/squad": {
        "plain_text": (
            Features(
                {
                    "id": S,
                    "title": S,
                    "context": S,
                    "question": S,
                    "answers": Sequence({"text": S, "answer_start": I32}),
                }
            ),
            {
                split: [
                    {
                        "id": "q1",
                        "title": "T",
                        "context": "C is c.",
                        "question": "What is C? ",
                        "answers": {"text": ["c", "c"], "answer_start": [5, 5]},
                    }
                ]
                for split in ("train", "validation")
            },
        )
    },
    "ucinlp/drop": {
        "default": (
            Features(
                {
                    "section_id": S,
                    "query_id": S,
                    "passage": S,
                    "question": S,
                    "answers_spans": Sequence({"spans": S, "types": S}),
                }
            ),
            {
                split: [
                    {
                        "section_id": "nfl_1",
                        "query_id": "q1",
                        "passage": "P.",
                        "question": "How many?",
                        "answers_spans": {"spans": ["14"], "types": ["number"]},
                    }
                ]
                for split in ("train", "validation")
            },
        )
    },
    "google/boolq": {
        "default": (
            Features({"question": S, "answer": Value("bool"), "passage": S}),
            {
                "train": [{"question": "is it true", "answer": True, "passage": "It is."}],
                "validation": [{"question": "is it false", "answer": False, "passage": "No."}],
            },
        )
    },
    "aps/super_glue": {
        "boolq": (
            Features({"question": S, "passage": S, "idx": I32, "label": _labels("False", "True")}),
            {"train": [_BOOLQ_SG], "validation": [_BOOLQ_SG]},
        ),
        "rte": (
            Features(
                {
                    "premise": S,
                    "hypothesis": S,
                    "idx": I32,
                    "label": _labels("entailment", "not_entailment"),
                }
            ),
            {
                "train": [{**_NLI, "idx": 0, "label": 0}],
                "validation": [{**_NLI, "idx": 0, "label": 1}],
                "test": [{**_NLI, "idx": 0, "label": -1}],
            },
        ),
        "cb": (
            Features(
                {
                    "premise": S,
                    "hypothesis": S,
                    "idx": I32,
                    "label": _labels("entailment", "contradiction", "neutral"),
                }
            ),
            {
                "train": [{**_NLI, "idx": 0, "label": 2}],
                "validation": [{**_NLI, "idx": 0, "label": 1}],
            },
        ),
        "wic": (
            Features(
                {
                    "word": S,
                    "sentence1": S,
                    "sentence2": S,
                    "start1": I32,
                    "start2": I32,
                    "end1": I32,
                    "end2": I32,
                    "idx": I32,
                    "label": _labels("False", "True"),
                }
            ),
            {
                split: [
                    {
                        "word": "bank",
                        "sentence1": "The bank is open.",
                        "sentence2": "The river bank.",
                        "start1": 4,
                        "start2": 10,
                        "end1": 8,
                        "end2": 14,
                        "idx": 0,
                        "label": 0,
                    }
                ]
                for split in ("train", "validation")
            },
        ),
        "wsc.fixed": (
            Features(
                {
                    "text": S,
                    "span1_index": I32,
                    "span2_index": I32,
                    "span1_text": S,
                    "span2_text": S,
                    "idx": I32,
                    "label": _labels("False", "True"),
                }
            ),
            {
                split: [
                    {
                        "text": "Mark told Pete he was late.",
                        "span1_index": 0,
                        "span2_index": 3,
                        "span1_text": "Mark",
                        "span2_text": "he",
                        "idx": 0,
                        "label": 1,
                    }
                ]
                for split in ("train", "validation")
            },
        ),
        "multirc": (
            Features(
                {
                    "paragraph": S,
                    "question": S,
                    "answer": S,
                    "idx": {"paragraph": I32, "question": I32, "answer": I32},
                    "label": _labels("False", "True"),
                }
            ),
            {
                split: [
                    {
                        "paragraph": "P.",
                        "question": "Q?",
                        "answer": "A",
                        "idx": {"paragraph": 0, "question": 0, "answer": 0},
                        "label": 1,
                    }
                ]
                for split in ("train", "validation")
            },
        ),
        "copa": (
            Features(
                {
                    "premise": S,
                    "choice1": S,
                    "choice2": S,
                    "question": S,
                    "idx": I32,
                    "label": _labels("choice1", "choice2"),
                }
            ),
            {
                split: [
                    {
                        "premise": "The sun rose.",
                        "choice1": "It got light.",
                        "choice2": "It got dark.",
                        "question": "effect",
                        "idx": 0,
                        "label": 0,
                    }
                ]
                for split in ("train", "validation")
            },
        ),
        "record": (
            Features(
                {
                    "passage": S,
                    "query": S,
                    "entities": Sequence(S),
                    "entity_spans": Sequence({"text": S, "start": I32, "end": I32}),
                    "answers": Sequence(S),
                    "idx": {"passage": I32, "query": I32},
                }
            ),
            {"train": [_RECORD], "validation": [_RECORD, {**_RECORD, "answers": []}]},
        ),
    },
}

# task -> (repo, config folder, validation rows it keeps, what the first one holds)
EXPECTED = {
    "sst2": ("nyu-mll/glue", "sst2", 1, {"sentence": "dull ."}),
    "mnli": ("nyu-mll/glue", "mnli", 1, {"premise": "A man sleeps."}),
    "snli": ("stanfordnlp/snli", "plain_text", 1, {"hypothesis": "A man rests."}),
    "sst5": ("SetFit/sst5", "default", 1, {"sentence": "great ."}),  # official test
    "trec": ("CogComp/trec", "default", 1, {"question": "What is AI ?"}),
    "squad": ("rajpurkar/squad", "plain_text", 1, {"answers": ("c", "c")}),
    "drop": ("ucinlp/drop", "default", 1, {"answers": ("14",)}),
    "boolq": ("google/boolq", "default", 1, {"question": "is it false"}),
    "rte": ("aps/super_glue", "rte", 1, {"premise": "A man sleeps."}),
    "cb": ("aps/super_glue", "cb", 1, {"premise": "A man sleeps."}),
    "wic": ("aps/super_glue", "wic", 1, {"word": "bank"}),
    "wsc": ("aps/super_glue", "wsc.fixed", 1, {"span2_text": "he"}),
    "multirc": ("aps/super_glue", "multirc", 1, {"answer": "A"}),
    "copa": ("aps/super_glue", "copa", 1, {"question": "effect"}),
    "record": ("aps/super_glue", "record", 1, {"answers": ("Paris",)}),
}
LABELS = {"sst2": 0, "mnli": 2, "snli": 0, "sst5": 4, "trec": 2, "boolq": 0, "rte": 1, "cb": 1}


@pytest.fixture(scope="module")
def mock_hub(tmp_path_factory) -> Path:
    """The Parquet branch of every repository, written with datasets (ClassLabel metadata)."""
    root = tmp_path_factory.mktemp("hub")
    for repo, configs in LAYOUTS.items():
        for config, (features, splits) in configs.items():
            for split, rows in splits.items():
                folder = root / repo / config / split
                folder.mkdir(parents=True)
                table = datasets.Dataset.from_dict(_rows(features, rows), features=features)
                table.to_parquet(str(folder / "0000.parquet"))
    return root


@pytest.fixture
def on_mock_hub(mock_hub, monkeypatch, tmp_path) -> Path:
    monkeypatch.setattr(base, "hub_location", lambda repo: str(mock_hub / repo))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return mock_hub


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_hub_loader_reads_the_real_layout(on_mock_hub, name):
    repo, config, kept, fields = EXPECTED[name]
    task = get_task(name)
    assert (task.hub_path, task.hub_config) == (repo, config)
    assert task.hub_revision == "refs/convert/parquet"
    validation = task.load_hub("validation")
    assert len(validation) == kept
    assert {k: validation[0].fields[k] for k in fields} == fields
    if name in LABELS:
        assert validation[0].label == LABELS[name]
    assert task.load_hub("train")


def test_a_wrong_config_folder_fails_against_the_layout(on_mock_hub, monkeypatch):
    task = get_task("snli")
    monkeypatch.setattr(type(task), "hub_config", "default")  # the layout has plain_text/
    with pytest.raises(base.DataError, match="stanfordnlp/snli"):
        task.load_hub("validation")


def test_snli_reads_the_validation_split_not_test(on_mock_hub):
    # the mock's test split holds one contradiction, its validation an entailment and a -1 row
    assert [ex.label for ex in get_task("snli").load_hub("validation")] == [0]

"""SQuAD and DROP: golden prompts, loaders (DROP from a synthetic official-format file), hub
rows and the averaged F1/EM score."""

import json

import pytest

from zoft.tasks import get_task
from zoft.tasks.io import DataError
from zoft.tasks.metrics import best_over_golds
from zoft.tasks.squad import drop_golds


def test_squad_local_splits_have_the_documented_sizes(data_dir):
    task = get_task("squad")
    train = task.load_local("train", data_dir)
    dev = task.load_local("validation", data_dir)
    assert (len(train), len(dev)) == (4370, 10570)
    assert all(len(e.fields["answers"]) == 1 for e in train)  # train: one answer per question
    assert sum(len(e.fields["answers"]) for e in dev) == 34726  # README: 34,726 answers


def test_squad_causal_prompt_is_golden(data_dir):
    ex = get_task("squad").load_local("train", data_dir)[2646]
    p = get_task("squad").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Title: IPod\n"
        "Context: Universal Music Group decided not to renew their contract with the iTunes Store "
        "on July 3, 2007. Universal will now supply iTunes in an 'at will' capacity.\n"
        "Question: What company ended its deal with Apple's music store in July of 2007?\n"
        "Answer:"
    )
    assert p.options == (" Universal Music Group\n",)
    assert p.gold == 0 and p.objective == "lm"


def test_squad_dev_keeps_every_gold_and_targets_the_first(data_dir):
    ex = get_task("squad").load_local("validation", data_dir)[8242]
    assert ex.fields["answers"] == ("1900", "On 7 January 1900", "7 January 1900")
    p = get_task("squad").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Title: Nikola_Tesla\n"
        "Context: On 7 January 1900, Tesla left Colorado Springs.[citation needed] His lab was "
        "torn down in 1904, and its contents were sold two years later to satisfy a debt.\n"
        "Question: When did Tesla depart from Colorado Springs?\n"
        "Answer:"
    )
    assert p.options == (" 1900\n",)


def test_squad_hub_row_reads_answer_texts():
    row = {
        "id": "5733be284776f41900661182",
        "title": "University_of_Notre_Dame",
        "context": "Architecturally, the school has a Catholic character.",
        "question": "What character does the school have? ",
        "answers": {"text": ["Catholic", "a Catholic character"], "answer_start": [34, 32]},
    }
    ex = get_task("squad").from_hub_row(row)
    assert ex.fields == {
        "title": "University_of_Notre_Dame",
        "context": "Architecturally, the school has a Catholic character.",
        "question": "What character does the school have?",
        "answers": ("Catholic", "a Catholic character"),
    }


def test_squad_score_averages_f1_and_em(data_dir):
    task = get_task("squad")
    tesla = task.load_local("validation", data_dir)[8242]  # golds 1900 / On 7 January 1900 / ..
    ipod = task.load_local("train", data_dir)[2646]  # gold "Universal Music Group"
    # tesla: "7 January" vs "7 January 1900": P 2/2, R 2/3 -> F1 0.8, EM 0 (best gold)
    # ipod: "Universal Music Group." normalises to the gold -> F1 1, EM 1
    scores = task.score(["7 January", "Universal Music Group."], [tesla, ipod])
    assert scores["f1"] == pytest.approx((0.8 + 1.0) / 2)
    assert scores["em"] == pytest.approx(0.5)


# --- DROP -------------------------------------------------------------------------------


def _drop_answer(number="", day="", month="", year="", spans=()):
    return {
        "number": number,
        "date": {"day": day, "month": month, "year": year},
        "spans": list(spans),
    }


def _write_drop(root, split_file):
    data = {
        "nfl_1": {
            "passage": "The Bears scored 14 points. Smith ran on 3 May 2001.",
            "qa_pairs": [
                {
                    "question": "Who ran? ",
                    "answer": _drop_answer(spans=["Smith"]),
                    "validated_answers": [_drop_answer(spans=["Smith"])],
                    "query_id": "q1",
                },
                {
                    "question": "How many points?",
                    "answer": _drop_answer(number="14"),
                    "validated_answers": [_drop_answer(number="14.0")],
                    "query_id": "q2",
                },
                {
                    "question": "When did Smith run?",
                    "answer": _drop_answer(day="3", month="May", year="2001"),
                    "validated_answers": [_drop_answer(month="May", year="2001")],
                    "query_id": "q3",
                },
                {
                    "question": "Unanswered?",
                    "answer": _drop_answer(),
                    "validated_answers": [],
                    "query_id": "q4",
                },
            ],
        }
    }
    folder = root / "drop"
    folder.mkdir()
    (folder / split_file).write_text(json.dumps(data))


def test_drop_without_local_files_points_at_the_hub(tmp_path):
    with pytest.raises(DataError, match=r"drop_dataset_train\.json.*task\.data_dir=hub"):
        get_task("drop").load_local("train", tmp_path)


def test_drop_validation_golds_are_the_validated_answers_only(tmp_path):
    _write_drop(tmp_path, "drop_dataset_dev.json")
    examples = get_task("drop").load_local("validation", tmp_path)
    # as HF's ucinlp/drop: the original `answer` is not a validation gold; unanswered left out
    assert [e.fields["answers"] for e in examples] == [("Smith",), ("14.0",), ("May 2001",)]
    assert examples[0].fields["question"] == "Who ran?"
    assert examples[0].fields["passage"] == "The Bears scored 14 points. Smith ran on 3 May 2001."


def test_drop_train_golds_are_the_original_answer(tmp_path):
    _write_drop(tmp_path, "drop_dataset_train.json")
    examples = get_task("drop").load_local("train", tmp_path)
    assert [e.fields["answers"] for e in examples] == [("Smith",), ("14",), ("3 May 2001",)]


def test_drop_golds_follow_hfs_answer_building():
    qa = {
        "answer": _drop_answer(spans=["A"]),
        "validated_answers": [
            _drop_answer(spans=["A", "B"]),  # a multi-span answer: each span a gold
            _drop_answer(day="5", year="1990"),  # the empty month stays: two spaces
            _drop_answer(spans=["A"]),  # duplicates are kept
        ],
    }
    assert drop_golds(qa, "validation") == ["A", "B", "5  1990", "A"]
    assert best_over_golds("5 1990", drop_golds(qa, "validation"))["f1"] == 1.0
    inconsistent = {**qa, "validated_answers": [_drop_answer(number="3", spans=["x"])]}
    assert drop_golds(inconsistent, "validation") == []  # HF drops such a question
    assert drop_golds(qa, "train") == ["A"]


def test_drop_is_at_revision_2():
    assert get_task("drop").revision == 2


def test_local_squad_dev_carries_the_article_order_note():
    note = get_task("squad").local_notes["validation"]
    assert "orders its 48 articles differently" in note


def test_drop_causal_prompt_targets_the_first_answer(tmp_path):
    _write_drop(tmp_path, "drop_dataset_train.json")
    task = get_task("drop")
    ex = task.load_local("train", tmp_path)[2]
    p = task.causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Passage: The Bears scored 14 points. Smith ran on 3 May 2001.\n"
        "Question: When did Smith run?\n"
        "Answer:"
    )
    assert p.options == (" 3 May 2001\n",) and p.objective == "lm"


def test_drop_hub_row_reads_answer_spans():
    task = get_task("drop")
    row = {
        "section_id": "nfl_1",
        "query_id": "q1",
        "passage": "P.",
        "question": "How many? ",
        "answers_spans": {"spans": ["14", "fourteen"], "types": ["number", "number"]},
    }
    ex = task.from_hub_row(row)
    assert ex.fields == {"passage": "P.", "question": "How many?", "answers": ("14", "fourteen")}
    assert task.from_hub_row({**row, "answers_spans": {"spans": [], "types": []}}) is None

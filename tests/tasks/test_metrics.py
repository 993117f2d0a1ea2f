"""SQuAD answer normalisation, token F1 and EM on hand-checked cases; the tasks' scores."""

import pytest

from zoft.tasks import get_task
from zoft.tasks.metrics import best_over_golds, exact_match, normalize_answer, token_f1


def test_normalize_drops_case_punctuation_articles_and_extra_spaces():
    assert normalize_answer("  The Denver  Broncos!") == "denver broncos"
    assert normalize_answer("a cat, an owl and THE dog.") == "cat owl and dog"
    assert normalize_answer("Levi's Stadium") == "levis stadium"  # apostrophe removed, no split
    assert normalize_answer("theatre another") == "theatre another"  # articles as words only


def test_articles_do_not_count():
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert token_f1("the Denver Broncos", "Denver Broncos") == 1.0


def test_punctuation_and_case_do_not_count():
    assert exact_match("Denver, Broncos.", "denver broncos") == 1.0
    assert exact_match("DENVER BRONCOS", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_partial_overlap_f1_is_hand_computed():
    # pred [santa, clara, california] (3), gold [levis, stadium, in, santa, clara] (5),
    # common 2: P = 2/3, R = 2/5, F1 = 2 * (2/3)(2/5) / (2/3 + 2/5) = (8/15) / (16/15) = 0.5
    assert token_f1("Santa Clara, California", "Levi's Stadium in Santa Clara") == pytest.approx(
        0.5
    )
    # pred [denver, broncos, team] (3), gold [denver, broncos] (2), common 2:
    # P = 2/3, R = 1, F1 = 2 * (2/3) / (5/3) = 0.8
    assert token_f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    assert exact_match("Denver Broncos team", "the Denver Broncos") == 0.0


def test_repeated_tokens_count_once_per_gold_occurrence():
    # pred [new, new, new] (3), gold [new, york] (2), common min(3, 1) = 1:
    # P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    assert token_f1("new new new", "New York") == pytest.approx(0.4)


def test_several_golds_take_the_maximum_of_each_metric():
    scores = best_over_golds("Denver Broncos", ["Broncos", "Denver Broncos", "the Broncos"])
    assert scores == {"f1": 1.0, "em": 1.0}
    # vs "Broncos": P 1/2, R 1 -> 2/3; vs "Denver Broncos team": P 1, R 2/3 -> 0.8; no EM
    scores = best_over_golds("Broncos team", ["Broncos", "Denver Broncos team"])
    assert scores["f1"] == pytest.approx(0.8) and scores["em"] == 0.0


def test_empty_prediction_scores_zero():
    assert token_f1("", "Denver Broncos") == 0.0
    assert exact_match("", "Denver Broncos") == 0.0
    assert best_over_golds("", ["Denver", "Broncos"]) == {"f1": 0.0, "em": 0.0}
    assert token_f1("The.", "Denver") == 0.0  # normalises to nothing
    assert token_f1("Denver", "") == 0.0


def test_squad_task_score_averages_per_example_best_f1_and_em():
    task = get_task("squad")

    def example(answers):
        row = {"title": "T", "context": "C", "question": "Q", "answers": {"text": answers}}
        return task.from_hub_row(row)

    examples = [example(["Denver Broncos", "Broncos"]), example(["Levi's Stadium in Santa Clara"])]
    # example 1: "the Broncos" matches "Broncos" (F1 1, EM 1); example 2: F1 0.5, EM 0 (above)
    scores = task.score(["the Broncos", "Santa Clara, California"], examples)
    assert scores["f1"] == pytest.approx(0.75) and scores["em"] == pytest.approx(0.5)
    empty = task.score([], [])
    assert set(empty) == {"f1", "em"} and all(v != v for v in empty.values())  # NaN


def test_record_task_score_counts_any_gold_candidate():
    task = get_task("record")
    row = {"passage": "P", "query": "@placeholder", "entities": ["A", "AB", "B", "C"]}
    ex = task.from_hub_row({**row, "answers": ["AB", "A"]})  # candidates A, AB, B, C
    assert task.score([0, 1, 2, 3], [ex] * 4) == {"accuracy": 0.5}

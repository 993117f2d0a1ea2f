"""RTE: golden prompt strings from the real data, loaders, labels."""

import json

import pytest

from zoft.tasks import get_task
from zoft.tasks.base import Example
from zoft.tasks.io import DataError
from zoft.tasks.superglue import fix_wsc_spans

PREMISE = "No Weapons of Mass Destruction Found in Iraq Yet."
HYPOTHESIS = "Weapons of Mass Destruction Found in Iraq."


def test_local_splits_have_the_documented_sizes(data_dir):
    task = get_task("rte")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (2490, 277)
    assert sum(e.label == 0 for e in train) == 1249  # entailment


def test_causal_prompt_is_golden(data_dir):
    ex = get_task("rte").load_local("train", data_dir)[0]
    assert ex.fields == {"premise": PREMISE, "hypothesis": HYPOTHESIS} and ex.label == 1
    p = get_task("rte").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "No Weapons of Mass Destruction Found in Iraq Yet.\n"
        'Does this mean that "Weapons of Mass Destruction Found in Iraq." is true? Yes or No?\n'
    )
    assert p.options == ("Yes", "No") and p.gold == 1


def test_masked_prompt_is_golden(data_dir):
    ex = get_task("rte").load_local("train", data_dir)[0]
    p = get_task("rte").masked_prompt(ex)
    assert p.text == (
        "No Weapons of Mass Destruction Found in Iraq Yet?<mask>, "
        "weapons of Mass Destruction Found in Iraq."
    )
    assert p.label_words == (" Yes", " No")


def test_ready_kshot_split_reads_glue_columns(data_dir):
    splits = get_task("rte").load_kshot_ready(data_dir, 16, 13)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [32, 32, 277]
    first = splits["train"][0]
    assert first.fields["premise"].startswith("Reagan was seriously wounded")
    assert first.label == 0


def test_hub_row_uses_integer_labels():
    ex = get_task("rte").from_hub_row({"premise": "a", "hypothesis": "b", "label": 1, "idx": 3})
    assert ex.label == 1 and ex.fields == {"premise": "a", "hypothesis": "b"}


# --- CB ---------------------------------------------------------------------------------


def test_cb_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("cb")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (250, 56)
    # README: contradiction 119, entailment 115, neutral 16 (labels entailment 0, contradiction 1)
    assert [sum(e.label == i for e in train) for i in range(3)] == [115, 119, 16]
    assert [sum(e.label == i for e in val) for i in range(3)] == [23, 28, 5]


def test_cb_causal_prompt_is_golden(data_dir):
    ex = get_task("cb").load_local("train", data_dir)[0]
    assert ex.label == 0  # entailment
    p = get_task("cb").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Suppose It was a complex language. Not written down but handed down. One might say it "
        'was peeled down. Can we infer that "the language was peeled down"? Yes, No, or Maybe?\n'
    )
    assert p.options == ("Yes", "No", "Maybe")
    assert p.gold == 0 and p.objective == "classification"


def test_cb_hub_row_keeps_the_integer_label_order():
    task = get_task("cb")
    row = {"premise": "p.", "hypothesis": "h", "idx": 0}
    # aps/super_glue cb: 0 entailment, 1 contradiction, 2 neutral; -1 marks the unlabelled test
    for label in (0, 1, 2):
        ex = task.from_hub_row({**row, "label": label})
        assert ex.label == label and ex.fields == {"premise": "p.", "hypothesis": "h"}
    assert task.label_names[1] == "contradiction"
    assert task.causal_prompt(task.from_hub_row({**row, "label": 2}), "mezo").options[2] == "Maybe"
    assert task.from_hub_row({**row, "label": -1}) is None


# --- BoolQ ------------------------------------------------------------------------------


def test_boolq_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("boolq")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (32, 3270)
    assert sum(e.label for e in train) == 18  # True: 18
    assert sum(e.label for e in val) == 2033  # True: 2033


def test_boolq_causal_prompt_is_golden(data_dir):
    ex = get_task("boolq").load_local("train", data_dir)[11]
    assert ex.fields["question"] == "is northwest florida state college a 4 year college"
    p = get_task("boolq").causal_prompt(ex, "mezo")
    # MeZO's google/boolq passages have no title: SuperGLUE's "<title> -- " is dropped
    assert p.prompt == (
        "The school voted to change its name to "
        "Okaloosa-Walton Community College in 1988, and gained four-year status in 2003, thus "
        "changing its name to Okaloosa-Walton College. "
        "Is northwest florida state college a 4 year college?\n"
    )
    assert p.options == ("No", "Yes") and p.gold == 1
    titled = get_task("boolq").causal_prompt(ex, "titled")
    assert titled.prompt == "Northwest Florida State College -- " + p.prompt


def test_boolq_title_comes_from_the_title_column_or_the_passage_front(data_dir):
    task = get_task("boolq")
    val = task.load_local("validation", data_dir)
    assert all(ex.fields["title"] for ex in val)  # every SuperGLUE passage has a title
    google = task.row_fields({"question": "is x true", "passage": "A -- B.", "title": "T"})
    assert google == {"question": "is x true", "title": "T", "passage": "A -- B."}
    p = task.causal_prompt(Example(google, 1), "mezo")
    assert p.prompt == "A -- B. Is x true?\n"  # the sheet's golden form, passage untouched
    untitled = task.row_fields({"question": "q", "passage": "No title here."})
    assert untitled["title"] == "" and untitled["passage"] == "No title here."
    ex = val[0]
    assert task.pair_input(ex).text_pair.startswith(f"{ex.fields['title']} -- ")


def test_boolq_question_mark_is_not_doubled():
    task = get_task("boolq")
    ex = task.from_hub_row({"question": "is it?", "passage": "It is.", "answer": False})
    assert task.causal_prompt(ex, "mezo").prompt == "It is. Is it?\n"


# --- WiC --------------------------------------------------------------------------------


def test_wic_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("wic")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (5428, 638)
    assert (sum(e.label for e in train), sum(e.label for e in val)) == (2714, 319)


def test_wic_causal_prompt_is_golden(data_dir):
    ex = get_task("wic").load_local("train", data_dir)[0]
    p = get_task("wic").causal_prompt(ex, "mezo")
    assert p.prompt == (
        'Does the word "place" have the same meaning in these two sentences? Yes, No?\n'
        "Do you want to come over to my place later?\n"
        "A political system with no place for the less prominent groups.\n"
    )
    assert p.options == ("No", "Yes") and p.gold == 0


# --- WSC --------------------------------------------------------------------------------


def test_wsc_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("wsc")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (554, 104)
    assert (sum(e.label for e in train), sum(e.label for e in val)) == (259, 38)


def test_wsc_causal_prompt_lower_cases_the_pronoun(data_dir):
    ex = get_task("wsc").load_local("train", data_dir)[0]
    assert ex.fields["span2_text"] == "He"
    p = get_task("wsc").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Mark told Pete many lies about himself, which Pete included in his book. He should have "
        "been more skeptical.\n"
        'In the previous sentence, does the pronoun "he" refer to Mark? Yes or No?\n'
    )
    assert p.options == ("No", "Yes") and p.gold == 0


@pytest.mark.parametrize(
    ("split", "file", "changed"), [("train", "train", 88), ("validation", "val", 8)]
)
def test_wsc_local_spans_are_fixed_as_wsc_fixed_fixes_them(data_dir, split, file, changed):
    task = get_task("wsc")
    path = data_dir / "superglue" / "WSC" / f"{file}.jsonl"
    raw = [json.loads(line)["target"] for line in path.read_text().splitlines()]
    examples = task.load_local(split, data_dir)
    differ = [
        ex
        for ex, target in zip(examples, raw, strict=True)
        if (ex.fields["span1_text"], ex.fields["span2_text"])
        != (target["span1_text"], target["span2_text"])
    ]
    assert len(differ) == changed
    assert all(
        ex.fields["span1_text"] in ex.fields["text"]
        and ex.fields["span2_text"] in ex.fields["text"]
        for ex in examples
    )


def test_wsc_fix_matches_the_upstream_rules():
    text = "the boys laughed.\nThey said so"
    fixed = fix_wsc_spans(
        {
            "text": text,
            "span1_text": "The boys.",
            "span1_index": 0,
            "span2_text": "they",
            "span2_index": 3,
        }
    )
    assert (fixed["span1_text"], fixed["span2_text"]) == ("the boys", "They")  # case, final "."
    assert (
        fix_wsc_spans(
            {
                "text": "a b c",
                "span1_text": "b\nc",
                "span1_index": 1,
                "span2_text": "a",
                "span2_index": 0,
            }
        )["span1_text"]
        == "b c"
    )  # newline -> space
    kept = {
        "text": "x",
        "span1_text": "Kamenev and Zinoviev",
        "span1_index": 0,
        "span2_text": "x",
        "span2_index": 0,
    }
    assert fix_wsc_spans(kept) == kept  # the two unfixable spans stay as they are
    scold = {
        "text": "The mothers theyscold the kids x y z w v u t",
        "span1_text": "The mothers",
        "span1_index": 0,
        "span2_text": "theyscold.",
        "span2_index": 2,
    }
    fixed = fix_wsc_spans(scold)
    # upstream's text replace is discarded: the text keeps "theyscold"; span2_index becomes 10
    assert (fixed["text"], fixed["span2_text"], fixed["span2_index"]) == (
        scold["text"],
        "theyscold",
        10,
    )
    with pytest.raises(DataError, match="no word index"):
        fix_wsc_spans({**scold, "span2_index": None})
    with pytest.raises(DataError, match="even after the fix"):
        fix_wsc_spans({**kept, "span1_text": "y", "span1_index": 0})


def test_wsc_hub_row_reads_the_flat_spans():
    row = {
        "text": "Mark told Pete many lies. He lied.",
        "span1_index": 0,
        "span2_index": 5,
        "span1_text": "Mark",
        "span2_text": "He",
        "idx": 0,
        "label": 1,
    }
    ex = get_task("wsc").from_hub_row(row)
    assert ex.fields == {"text": row["text"], "span1_text": "Mark", "span2_text": "He"}
    assert ex.label == 1


# --- MultiRC ----------------------------------------------------------------------------


def test_multirc_counts_one_example_per_answer_option(data_dir):
    task = get_task("multirc")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (27243, 4848)
    assert (sum(e.label for e in train), sum(e.label for e in val)) == (12025, 2075)


def test_multirc_causal_prompt_is_golden(data_dir):
    # train.jsonl line 422 (passage idx 421), first question, first answer option
    ex = get_task("multirc").load_local("train", data_dir)[25270]
    p = get_task("multirc").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Mike and Jeff are close friends. Their school is having a guessing game to guess how many "
        "gumballs are in a box. If they get the right amount they win $100. If they get close they "
        "get a $20 gift card. The box looks like it is missing some gumballs. It turns out some "
        "people are eating them when they place their guess. 100 people guessed and took a piece "
        'of candy. The box is 10" by 10" by 10". Each gumball is 1" each. Mike guessed 500. Jeff '
        "guessed 800. They both said they would split their money they win, if they win. \n"
        "Question: How might someone make an educated guess as to how many gumballs are in the "
        "box?\n"
        'I found this answer "Dump the box out and count each one". Is that correct? Yes or No?\n'
    )
    assert p.options == ("No", "Yes") and p.gold == 0


def test_multirc_hub_row_is_one_answer_option():
    row = {
        "paragraph": "P.",
        "question": "Q?",
        "answer": "A",
        "idx": {"paragraph": 0, "question": 0, "answer": 0},
        "label": 1,
    }
    ex = get_task("multirc").from_hub_row(row)
    assert ex.fields == {"paragraph": "P.", "question": "Q?", "answer": "A"} and ex.label == 1

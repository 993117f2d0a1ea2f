"""MNLI and SNLI: golden LM-BFF prompt strings from the real data, loaders, labels, hub rows."""

import pytest

from zoft.tasks import get_task

NLI_WORDS = (" Yes", " Maybe", " No")  # entailment, neutral, contradiction


@pytest.mark.parametrize(
    ("name", "train_counts", "eval_counts"),
    [
        # README, as [entailment, neutral, contradiction]
        ("mnli", [3061, 2980, 2958], [373, 311, 316]),  # eval: glue/MNLI/dev_matched.tsv
        ("snli", [2981, 2994, 3024], [367, 322, 311]),  # eval: glue/SNLI/test.tsv
    ],
)
def test_local_splits_have_the_documented_sizes_and_labels(
    data_dir, name, train_counts, eval_counts
):
    task = get_task(name)
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (8999, 1000)
    assert [sum(e.label == i for e in train) for i in range(3)] == train_counts
    assert [sum(e.label == i for e in val) for i in range(3)] == eval_counts


def test_mnli_masked_prompt_is_golden(data_dir):
    ex = get_task("mnli").load_local("train", data_dir)[0]
    assert ex.label == 0  # entailment
    p = get_task("mnli").masked_prompt(ex)
    assert p.text == (
        "Our hearts are particularly heavy this year as we look back at those we've lost, the "
        "Globe writes lovingly?<mask>, we are especially sad this year because we lost a lot of "
        "people."
    )
    assert p.label_words == NLI_WORDS and p.gold == 0


def test_mnli_causal_prompt_splits_the_template_at_the_mask(data_dir):
    ex = get_task("mnli").load_local("train", data_dir)[0]
    p = get_task("mnli").causal_prompt(ex, "mezo")
    assert p.prompt == (
        "Our hearts are particularly heavy this year as we look back at those we've lost, the "
        "Globe writes lovingly?"
    )
    rest = ", we are especially sad this year because we lost a lot of people."
    assert p.options == (" Yes" + rest, " Maybe" + rest, " No" + rest)
    assert p.gold == 0 and p.objective == "classification"


def test_mnli_tokenised_eval_text_drops_only_the_last_char(data_dir):
    # dev_matched.tsv is tokenised ("bookshop ."): dropping the last char leaves the space
    ex = get_task("mnli").load_local("validation", data_dir)[0]
    p = get_task("mnli").masked_prompt(ex)
    assert p.text == (
        "In Temple Bar , the bookshop at the Gallery of Photography carries a large selection of "
        "photographic publications , and the Flying Pig is a secondhand bookshop ?<mask>, "
        "there is a bookshop at the gallery ."
    )
    assert p.gold == 0


def test_snli_masked_prompt_is_golden(data_dir):
    ex = get_task("snli").load_local("train", data_dir)[0]
    assert ex.label == 2  # contradiction
    p = get_task("snli").masked_prompt(ex)
    assert p.text == (
        "Two people lower themselves into a cave with long ropes?<mask>, two people leave a cave"
    )
    assert p.label_words == NLI_WORDS and p.gold == 2


def test_snli_causal_prompt_splits_the_template_at_the_mask(data_dir):
    ex = get_task("snli").load_local("train", data_dir)[0]
    p = get_task("snli").causal_prompt(ex, "mezo")
    assert p.prompt == "Two people lower themselves into a cave with long ropes?"
    assert p.options == (
        " Yes, two people leave a cave",
        " Maybe, two people leave a cave",
        " No, two people leave a cave",
    )
    assert p.gold == 2


@pytest.mark.parametrize("name", ["mnli", "snli"])
def test_ready_kshot_split_has_no_test_file(data_dir, name):
    splits = get_task(name).load_kshot_ready(data_dir, 16, 13)
    assert sorted(splits) == ["dev", "train"]  # the official evaluation set is used instead
    assert [len(splits["train"]), len(splits["dev"])] == [48, 48]
    assert sorted(e.label for e in splits["train"]) == [0] * 16 + [1] * 16 + [2] * 16


def test_mnli_ready_kshot_reads_sentence_columns(data_dir):
    first = get_task("mnli").load_kshot_ready(data_dir, 16, 13)["train"][0]
    assert first.fields == {
        "premise": "Price caps may sound more attractive with every passing rate case.",
        "hypothesis": "Rate cases make price caps sound more attractive.",
    }
    assert first.label == 0


def test_snli_ready_kshot_label_is_the_last_field(data_dir):
    # dev.tsv line 6 has 4 extra annotator columns: label1..label5 = entailment, neutral,
    # neutral, entailment, entailment, then gold_label = entailment
    ex = get_task("snli").load_kshot_ready(data_dir, 16, 13)["dev"][4]
    assert ex.fields == {
        "premise": "Four girls sit on an ATV in a yard.",
        "hypothesis": "Some girls are sitting on a four wheeler.",
    }
    assert ex.label == 0


def test_snli_hub_row_without_gold_label_is_dropped():
    task = get_task("snli")
    row = {"premise": "A man sleeps.", "hypothesis": "A man is awake."}
    assert task.from_hub_row({**row, "label": -1}) is None
    ex = task.from_hub_row({**row, "label": 2})
    assert ex.fields == row and task.label_names[ex.label] == "contradiction"


def test_mnli_hub_row_uses_the_glue_label_order():
    task = get_task("mnli")
    ex = task.from_hub_row({"premise": "p.", "hypothesis": "h", "label": 1, "idx": 0})
    assert task.label_names[ex.label] == "neutral"
    assert task.masked_prompt(ex).label_words[ex.label] == " Maybe"


def test_hub_snli_evaluates_on_the_official_validation_split():
    # LM-BFF's SNLI test file is the official dev set renamed (tools/generate_k_shot_data.py)
    assert get_task("snli").hub_splits == {"train": "train", "validation": "validation"}

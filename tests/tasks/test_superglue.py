"""RTE: golden prompt strings from the real data, loaders, labels."""

from zoft.tasks import get_task

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

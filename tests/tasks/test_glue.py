"""SST-2: golden prompt strings from the real data, loaders, labels."""

from zoft.tasks import get_task

FIRST_TRAIN = (
    "a stirring , funny and finally transporting re-imagining of beauty and the beast and 1930s "
    "horror films"
)


def test_local_splits_have_the_documented_sizes(data_dir):
    task = get_task("sst2")
    assert len(task.load_local("train", data_dir)) == 6920
    assert len(task.load_local("validation", data_dir)) == 872


def test_causal_prompt_mezo_is_golden(data_dir):
    task = get_task("sst2")
    ex = task.load_local("train", data_dir)[0]
    assert ex.fields["sentence"] == FIRST_TRAIN and ex.label == 1
    p = task.causal_prompt(ex, "mezo")
    assert p.prompt == FIRST_TRAIN + " It was"
    assert p.options == (" terrible", " great")
    assert p.gold == 1


def test_causal_prompt_review_is_golden(data_dir):
    ex = get_task("sst2").load_local("train", data_dir)[0]
    p = get_task("sst2").causal_prompt(ex, "review")
    assert p.prompt == f"Review: {FIRST_TRAIN}\nSentiment (positive or negative):"
    assert p.options == (" negative", " positive")


def test_masked_prompt_is_golden(data_dir):
    ex = get_task("sst2").load_local("train", data_dir)[0]
    p = get_task("sst2").masked_prompt(ex)
    assert p.text == FIRST_TRAIN + " It was<mask>."
    assert p.label_words == (" terrible", " great")


def test_ready_kshot_split_reads_the_lmbff_files(data_dir):
    splits = get_task("sst2").load_kshot_ready(data_dir, 16, 42)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [32, 32, 872]
    assert sorted(e.label for e in splits["train"]) == [0] * 16 + [1] * 16


def test_hub_row_maps_fields():
    ex = get_task("sst2").from_hub_row(
        {"sentence": "it 's a charming journey . ", "label": 1, "idx": 0}
    )
    assert ex.fields == {"sentence": "it 's a charming journey ."} and ex.label == 1

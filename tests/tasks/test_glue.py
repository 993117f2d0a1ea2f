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


# --- SST-5 ------------------------------------------------------------------------------

SST5_FIRST_TRAIN = "meyjes 's movie , like max rothman 's future , does not work ."


def test_sst5_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("sst5")
    train = task.load_local("train", data_dir)
    test = task.load_local("validation", data_dir)  # the official test, k-shot/sst-5/16-13
    assert (len(train), len(test)) == (7689, 2210)
    assert [sum(e.label == i for e in train) for i in range(5)] == [983, 1993, 1470, 2087, 1156]
    assert [sum(e.label == i for e in test) for i in range(5)] == [279, 633, 389, 510, 399]
    assert test[0].fields == {"sentence": "no movement , no yuks , not much of anything ."}


def test_sst5_masked_prompt_is_golden(data_dir):
    ex = get_task("sst5").load_local("train", data_dir)[0]
    assert ex.fields["sentence"] == SST5_FIRST_TRAIN and ex.label == 1
    p = get_task("sst5").masked_prompt(ex)
    assert p.text == "meyjes 's movie , like max rothman 's future , does not work . It was<mask>."
    assert p.label_words == (" terrible", " bad", " okay", " good", " great")
    assert p.gold == 1


def test_sst5_causal_prompt_splits_the_template_at_the_mask(data_dir):
    ex = get_task("sst5").load_local("train", data_dir)[0]
    p = get_task("sst5").causal_prompt(ex, "mezo")
    assert p.prompt == "meyjes 's movie , like max rothman 's future , does not work . It was"
    assert p.options == (" terrible.", " bad.", " okay.", " good.", " great.")
    assert p.gold == 1 and p.objective == "classification"


def test_sst5_ready_kshot_split_reads_headless_csv(data_dir):
    splits = get_task("sst5").load_kshot_ready(data_dir, 16, 13)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [80, 80, 2210]
    assert sorted(e.label for e in splits["train"]) == [i for i in range(5) for _ in range(16)]
    first = splits["train"][0]
    assert first.fields == {
        "sentence": "what 's surprising about this traditional thriller , moderately successful "
        "but not completely satisfying , is exactly how genteel and unsurprising the execution "
        "turns out to be ."
    }
    assert first.label == 3


def test_sst5_hub_row_reads_setfit_text():
    row = {"text": "a gorgeous film . ", "label": 4, "label_text": "very positive"}
    ex = get_task("sst5").from_hub_row(row)
    assert ex.fields == {"sentence": "a gorgeous film ."} and ex.label == 4


# --- TREC -------------------------------------------------------------------------------

TREC_FIRST_TRAIN = "How did serfdom develop in and then leave Russia ?"


def test_trec_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("trec")
    train = task.load_local("train", data_dir)
    test = task.load_local("validation", data_dir)
    assert (len(train), len(test)) == (5452, 500)
    # README: ABBR 86, DESC 1162, ENTY 1250, HUM 1223, LOC 835, NUM 896; our order DESC ENTY ABBR ..
    assert [sum(e.label == i for e in train) for i in range(6)] == [1162, 1250, 86, 1223, 835, 896]
    assert [sum(e.label == i for e in test) for i in range(6)] == [138, 94, 9, 65, 81, 113]


def test_trec_masked_prompt_is_golden(data_dir):
    ex = get_task("trec").load_local("train", data_dir)[0]
    assert ex.fields == {"question": TREC_FIRST_TRAIN} and ex.label == 0  # DESC
    p = get_task("trec").masked_prompt(ex)
    assert p.text == "<mask>: How did serfdom develop in and then leave Russia ?"
    assert p.label_words == (
        " Description",
        " Entity",
        " Expression",
        " Human",
        " Location",
        " Number",
    )


def test_trec_causal_prompt_starts_with_the_label_word(data_dir):
    ex = get_task("trec").load_local("train", data_dir)[0]
    p = get_task("trec").causal_prompt(ex, "mezo")
    assert p.prompt == ""  # nothing precedes <mask>: the option is the whole text
    assert p.options == (
        "Description: How did serfdom develop in and then leave Russia ?",
        "Entity: How did serfdom develop in and then leave Russia ?",
        "Expression: How did serfdom develop in and then leave Russia ?",
        "Human: How did serfdom develop in and then leave Russia ?",
        "Location: How did serfdom develop in and then leave Russia ?",
        "Number: How did serfdom develop in and then leave Russia ?",
    )
    assert p.gold == 0


def test_trec_ready_kshot_split_reads_headless_csv(data_dir):
    splits = get_task("trec").load_kshot_ready(data_dir, 16, 13)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [96, 96, 500]
    assert sorted(e.label for e in splits["dev"]) == [i for i in range(6) for _ in range(16)]
    first = splits["train"][0]
    assert first.fields == {
        "question": "What 2th-century American poet wrote a four-volume biography of Abraham "
        "Lincoln ?"
    }
    assert first.label == 3  # HUM


def test_trec_hub_coarse_labels_map_onto_lmbff_order():
    task = get_task("trec")
    # CogComp/trec coarse_label names: 0 ABBR, 1 ENTY, 2 DESC, 3 HUM, 4 LOC, 5 NUM
    hub_names = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")
    for coarse, name in enumerate(hub_names):
        ex = task.from_hub_row({"text": " Why ? ", "coarse_label": coarse, "fine_label": 0})
        assert task.label_names[ex.label] == name
        assert ex.fields == {"question": "Why ?"}
    assert task.from_hub_row({"text": "x", "coarse_label": 0, "fine_label": 0}).label == 2
    assert task.from_hub_row({"text": "x", "coarse_label": 2, "fine_label": 0}).label == 0


def test_local_sst2_pool_carries_a_note_in_the_large_protocol(data_dir):
    from tests.conftest import compose
    from zoft.tasks.sampling import load_splits

    cfg = compose(["task=sst2", "task.protocol=large", f"task.data_dir={data_dir}"])
    splits = load_splits(get_task("sst2"), cfg.task, 0)
    assert len(get_task("sst2").load_local("train", data_dir)) == 6920
    assert any("6,920-sentence SST-2" in n and "67,349-phrase" in n for n in splits.notes)

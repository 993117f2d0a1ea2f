"""COPA and ReCoRD: golden prompts from the real data, loaders, hub rows, ReCoRD's metric."""

from zoft.tasks import get_task


def test_copa_local_splits_have_the_documented_sizes_and_labels(data_dir):
    task = get_task("copa")
    train = task.load_local("train", data_dir)
    val = task.load_local("validation", data_dir)
    assert (len(train), len(val)) == (400, 100)
    assert (sum(e.label for e in train), sum(e.label for e in val)) == (205, 45)  # label 1


def test_copa_cause_prompt_is_golden(data_dir):
    ex = get_task("copa").load_local("train", data_dir)[0]
    p = get_task("copa").causal_prompt(ex, "mezo")
    assert p.prompt == "My body cast a shadow over the grass because "
    assert p.options == ("the sun was rising.", "the grass was cut.")
    assert p.gold == 0 and p.objective == "lm"


def test_copa_effect_prompt_is_golden(data_dir):
    ex = get_task("copa").load_local("train", data_dir)[12]
    p = get_task("copa").causal_prompt(ex, "mezo")
    assert p.prompt == "The pond froze over for the winter so "
    assert p.options == ("people skated on the pond.", "people brought boats to the pond.")
    assert p.gold == 0


def test_copa_keeps_the_pronoun_i_upper_case(data_dir):
    ex = get_task("copa").load_local("train", data_dir)[36]
    p = get_task("copa").causal_prompt(ex, "mezo")
    assert p.prompt == "The papers were disorganized so "
    assert p.options == ("I made photocopies of them.", "I put them into alphabetical order.")
    assert p.gold == 1


def test_copa_hub_row_and_unlabelled_row():
    task = get_task("copa")
    row = {
        "premise": "The man broke his toe.",
        "choice1": "He dropped a hammer on his foot.",
        "choice2": "He got a hole in his sock.",
        "question": "cause",
        "idx": 0,
    }
    ex = task.from_hub_row({**row, "label": 0})
    assert ex.fields["candidates"] == (row["choice1"], row["choice2"])
    assert ex.fields["question"] == "cause" and ex.label == 0
    assert task.causal_prompt(ex, "mezo").prompt == "The man broke his toe because "
    assert task.from_hub_row({**row, "label": -1}) is None


# --- ReCoRD -----------------------------------------------------------------------------

RECORD_PASSAGE = (
    "By Leon Watson PUBLISHED: 12:24 EST, 15 October 2012 | UPDATED: 01:47 EST, 16 October 2012 "
    "A thug who stabbed his friend 11 times and left him for dead after a row over a game of "
    "darts has been jailed for eight years. Peter Roberts, 46, from Northampton, launched a "
    "'frenzied and determined' attack on Shane Reeves, 22, after they fell out on July 5 this "
    "year. Roberts plunged a kitchen knife into his friend's chest, abdomen, shoulder and arm "
    "before dumping him on a landing. Peter Roberts, from Northampton, stabbed his friend 11 "
    "times and left him for dead after a row over a game of darts. He has been jailed for eight "
    "years"
)


def test_record_local_splits_have_the_documented_sizes(data_dir):
    task = get_task("record")
    assert len(task.load_local("train", data_dir)) == 32
    assert len(task.load_local("validation", data_dir)) == 32


def test_record_candidates_are_the_sorted_distinct_entities(data_dir):
    # train.jsonl line 13: ten entity spans, five distinct strings
    ex = get_task("record").load_local("train", data_dir)[12]
    assert ex.fields["candidates"] == (
        "Leon Watson",
        "Northampton",
        "Peter Roberts",
        "Roberts",
        "Shane Reeves",
    )
    assert ex.fields["answers"] == ("Shane Reeves",) and ex.label == 4


def test_record_causal_prompt_is_golden(data_dir):
    ex = get_task("record").load_local("train", data_dir)[12]
    p = get_task("record").causal_prompt(ex, "mezo")
    assert p.prompt == (
        RECORD_PASSAGE + "\n"
        "- Peter Roberts, from Northampton, jailed for attack on Shane Reeves\n"
        "- The pair, aged 46 and 22, were friends but fell out on July 5 this year\n"
        "-"
    )
    assert p.options == (
        " After undergoing surgery, Mr Leon Watson spent a month recovering from his injuries.",
        " After undergoing surgery, Mr Northampton spent a month recovering from his injuries.",
        " After undergoing surgery, Mr Peter Roberts spent a month recovering from his injuries.",
        " After undergoing surgery, Mr Roberts spent a month recovering from his injuries.",
        " After undergoing surgery, Mr Shane Reeves spent a month recovering from his injuries.",
    )
    assert p.gold == 4 and p.objective == "lm"


def test_record_hub_row_and_unlabelled_row():
    task = get_task("record")
    row = {
        "passage": "Bill Cosby met Cosby fans in Philadelphia.\n@highlight\nCosby speaks",
        "query": "@placeholder spoke to fans",
        "entities": ["Philadelphia", "Bill Cosby", "Cosby", "Cosby"],
        "entity_spans": {"text": [], "start": [], "end": []},
        "answers": ["Cosby", "Bill Cosby"],
        "idx": {"passage": 0, "query": 0},
    }
    ex = task.from_hub_row(row)
    assert ex.fields["candidates"] == ("Bill Cosby", "Cosby", "Philadelphia")
    assert ex.fields["answers"] == ("Bill Cosby", "Cosby")
    assert ex.label == 0
    p = task.causal_prompt(ex, "mezo")
    assert p.prompt == "Bill Cosby met Cosby fans in Philadelphia.\n- Cosby speaks\n-"
    assert p.options[2] == " Philadelphia spoke to fans"
    assert task.from_hub_row({**row, "answers": []}) is None  # the hub's unlabelled test rows


def test_record_score_accepts_any_gold_answer(data_dir):
    task = get_task("record")
    ex = task.load_local("train", data_dir)[10]  # gold: "Bill Cosby" and "Cosby"
    candidates = ex.fields["candidates"]
    assert set(ex.fields["answers"]) == {"Bill Cosby", "Cosby"}
    bill, cosby = candidates.index("Bill Cosby"), candidates.index("Cosby")
    wrong = next(i for i, c in enumerate(candidates) if c not in ex.fields["answers"])
    assert task.score([bill, cosby, wrong], [ex, ex, ex]) == {"accuracy": 2 / 3}
    assert task.score([wrong], [ex]) == {"accuracy": 0.0}

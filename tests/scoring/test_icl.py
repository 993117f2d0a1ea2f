"""In-context learning: the demonstration context (golden format, seeded draw), scoring with a
context truncated from the left, and the evaluation-only ICL mode of the runner."""

import pytest
import torch

from tests.conftest import compose, tiny
from zoft.errors import RunConfigError
from zoft.run.checks import validate
from zoft.run.rundir import run_mode
from zoft.run.runner import run
from zoft.scoring import build_scorer
from zoft.scoring.icl import demonstration_context
from zoft.tasks import get_task

FIRST = (
    "a stirring , funny and finally transporting re-imagining of beauty and the beast and 1930s "
    "horror films"
)
SECOND = "apparently reassembled from the cutting-room floor of any given daytime soap ."


@pytest.fixture(scope="module")
def sst2_train(data_dir):
    return get_task("sst2").load_local("train", data_dir)[:40]


def test_context_of_two_real_examples_is_golden(sst2_train):
    context, used = demonstration_context(get_task("sst2"), "mezo", sst2_train[:2], 2, seed=0)
    assert used == 2
    # RandomState(0).permutation(2) is [1, 0]: the second example comes first
    assert context == f"{SECOND} It was terrible\n\n{FIRST} It was great\n\n"


def test_squad_demonstrations_end_with_the_stripped_answer(data_dir):
    task = get_task("squad")
    train = task.load_local("train", data_dir)[:1]
    context, _ = demonstration_context(task, "mezo", train, 1, seed=0)
    answer = train[0].fields["answers"][0]
    assert context.startswith("Title: ")
    assert context.endswith(f"\nAnswer: {answer}\n\n")  # the target's trailing "\n" stripped


def test_draw_is_deterministic_per_seed(sst2_train):
    task = get_task("sst2")
    first = demonstration_context(task, "mezo", sst2_train, 4, seed=13)
    assert demonstration_context(task, "mezo", sst2_train, 4, seed=13) == first
    assert demonstration_context(task, "mezo", sst2_train, 4, seed=42) != first
    demos = first[0].split("\n\n")
    assert len(demos) == 5 and demos[-1] == ""  # four demonstrations and the trailing separator


def test_more_demonstrations_than_train_examples_uses_them_all(sst2_train):
    task = get_task("sst2")
    context, used = demonstration_context(task, "mezo", sst2_train[:5], 32, seed=0)
    assert used == 5
    demos = context.split("\n\n")[:-1]
    expected = {
        (task.causal_prompt(ex, "mezo").prompt + task.causal_prompt(ex, "mezo").options[ex.label])
        for ex in sst2_train[:5]
    }
    assert len(demos) == 5 and set(demos) == {d.strip() for d in expected}
    assert demonstration_context(task, "mezo", [], 4, seed=0) == ("", 0)


def _manual_scores(model, tok, task, examples, context, window):
    """Mean option log-probs of context + prompt + option, scored one row at a time on the start
    token and the last `window` - 1 tokens (MeZO's left truncation)."""
    table = torch.empty(len(examples), 2)
    for i, ex in enumerate(examples):
        p = task.causal_prompt(ex, "mezo")
        for j, option in enumerate(p.options):
            full = tok(context + p.prompt + option).input_ids
            n = len(full) - len(tok(context + p.prompt).input_ids)
            ids = full if len(full) <= window else full[:1] + full[1:][-(window - 1) :]
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
            lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])
            table[i, j] = lp[-n:].mean()
    return table


@pytest.mark.parametrize("max_length", [256, 24])  # whole context / only its tail fits
def test_scores_are_computed_on_context_plus_prompt(sst2_train, max_length):
    loaded = tiny("opt")
    model, tok, task = loaded.model.eval(), loaded.tokenizer, get_task("sst2")
    examples = sst2_train[:3]
    context, _ = demonstration_context(task, "mezo", sst2_train[3:], 2, seed=0)
    if max_length < 100:
        context = context * 20  # far longer than the window
    scorer = build_scorer("causal_lm", task, tok, "mezo", max_length)
    scorer.context = context
    assert all(p.prompt.startswith(context) for p in scorer.prompts(examples))
    with torch.no_grad():
        table = scorer.scores(model, examples)
        expected = _manual_scores(model, tok, task, examples, context, max_length)
    assert torch.isfinite(table).all()
    torch.testing.assert_close(table, expected, rtol=1e-4, atol=1e-4)


def test_truncated_input_ends_with_the_prompt_and_option(sst2_train):
    loaded = tiny("opt")
    tok, task = loaded.tokenizer, get_task("sst2")
    scorer = build_scorer("causal_lm", task, tok, "mezo", 24)
    scorer.context = "the film is long but the acting is strong .\n\n" * 50
    rows = scorer._rows(scorer.prompts(sst2_train[:2]), gold_only=False)
    assert len(rows.example_index) == 4  # two examples x two options
    pairs = zip(rows.example_index, rows.option_index, rows.input_of_row, strict=True)
    for ex_i, option_i, key in pairs:
        p = task.causal_prompt(sst2_train[ex_i], "mezo")
        tail = tok(p.prompt + p.options[option_i], add_special_tokens=False).input_ids[:-1]
        fed = rows.inputs[key]
        assert len(fed) == 23 and fed[0] == tok.bos_token_id  # the start token is kept
        assert fed[-len(tail) :][-22:] == tail[-22:]


def test_runner_icl_mode_records_mode_and_demonstrations(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("ZOFT_DATA", str(data_dir))
    cfg = compose(
        [
            "model=tiny-opt",
            "task=sst2",
            "steps=0",
            "icl_demos=4",
            "task.kshot_test_cap=16",
            f"results_dir={tmp_path}",
        ]
    )
    assert run_mode(cfg) == "icl"
    result = run(cfg)
    assert result["status"] == "complete"
    assert result["mode"] == "icl" and result["icl_demos"] == 4
    assert result["test"] == result["zero_shot"] and result["num_test"] == 16
    assert result["forward_passes"] == 0


def test_run_modes():
    assert run_mode(compose(["steps=0"])) == "zero-shot"
    assert run_mode(compose(["steps=3"])) == "fine-tune"


def test_icl_with_training_steps_is_refused():
    with pytest.raises(RunConfigError, match="steps=0"):
        validate(compose(["model=tiny-opt", "icl_demos=4", "steps=5"]))


def test_negative_demonstrations_are_refused():
    with pytest.raises(RunConfigError, match="icl_demos=-1"):
        validate(compose(["model=tiny-opt", "icl_demos=-1", "steps=0"]))


def test_icl_needs_a_causal_lm():
    with pytest.raises(RunConfigError, match="causal LM"):
        validate(compose(["model=tiny-roberta", "icl_demos=4", "steps=0"]))

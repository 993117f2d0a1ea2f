"""In-context learning: the demonstration context (golden format, seeded draw), scoring with a
context truncated from the left, and the evaluation-only ICL mode of the runner."""

import numpy as np
import pytest
import torch

from tests.conftest import compose, tiny
from zoft.errors import RunConfigError
from zoft.run.checks import validate
from zoft.run.rundir import config_digest, run_mode
from zoft.run.runner import run
from zoft.scoring import build_scorer
from zoft.scoring.icl import (
    CONTEXT_FIELD,
    IclInputs,
    demo_seeds,
    demonstration_context,
    icl_setup,
    per_example_contexts,
    render_context,
)
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


def _mezo_recipe(n_train: int, n_eval: int, count: int) -> list[list[int]]:
    """MeZO icl.sh, recomputed with numpy's global legacy API: seeds drawn under seed 0, then one
    seeded permutation of the whole train split per evaluation example."""
    saved = np.random.get_state()
    try:
        np.random.seed(0)
        seeds = np.random.randint(0, 10000, n_eval)
        sets = []
        for seed in seeds:
            np.random.seed(seed)
            sets.append(np.random.permutation(n_train).tolist()[:count])
        return sets
    finally:
        np.random.set_state(saved)


def test_demo_seeds_are_mezos():
    assert demo_seeds(1000)[:5].tolist() == [2732, 9845, 3264, 4859, 9225]  # measured once
    assert demo_seeds(1000)[:100].tolist() == demo_seeds(100).tolist()


def test_per_example_demonstrations_follow_the_mezo_recipe(sst2_train):
    task = get_task("sst2")
    pool, test = sst2_train[:30], sst2_train[30:36]
    carried, used = per_example_contexts(task, "mezo", pool, test, 4, num_eval=1000)
    assert used == 4 and len(carried) == len(test)
    expected_sets = _mezo_recipe(len(pool), 1000, 4)
    for ex, original, indices in zip(carried, test, expected_sets, strict=False):
        assert ex.fields[CONTEXT_FIELD] == render_context(task, "mezo", [pool[i] for i in indices])
        assert {k: v for k, v in ex.fields.items() if k != CONTEXT_FIELD} == original.fields
        assert ex.label == original.label
    assert len({ex.fields[CONTEXT_FIELD] for ex in carried}) == len(test)  # a set each


def test_per_example_draws_from_the_full_train_split_of_its_size(data_dir):
    task = get_task("sst2")
    pool = task.load_local("train", data_dir)
    test = task.load_local("validation", data_dir)[:3]
    carried, _ = per_example_contexts(task, "mezo", pool, test, 32, num_eval=1000)
    first_set = _mezo_recipe(len(pool), 1000, 32)[0]
    assert carried[0].fields[CONTEXT_FIELD] == render_context(
        task, "mezo", [pool[i] for i in first_set]
    )


def test_scorer_prepends_each_examples_own_context(sst2_train):
    loaded = tiny("opt")
    task = get_task("sst2")
    carried, _ = per_example_contexts(task, "mezo", sst2_train[:20], sst2_train[20:23], 2, 1000)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    scorer.context = "shared, ignored when the example carries its own\n\n"
    for p, ex in zip(scorer.prompts(carried), carried, strict=True):
        plain = task.causal_prompt(ex, "mezo").prompt
        assert p.prompt == ex.fields[CONTEXT_FIELD] + plain


def test_shared_sampling_draws_from_the_subset_or_the_pool(sst2_train):
    task = get_task("sst2")
    inputs = IclInputs(
        task, "mezo", lambda: sst2_train, sst2_train[:10], sst2_train[30:33], 4, 1000, seed=5
    )
    legacy = icl_setup("shared", inputs)
    assert legacy.context == demonstration_context(task, "mezo", sst2_train[:10], 4, 5)[0]
    pooled = icl_setup("shared_pool", inputs)
    assert pooled.context == demonstration_context(task, "mezo", sst2_train, 4, 5)[0]
    for setup in (legacy, pooled):
        assert setup.test == list(sst2_train[30:33]) and setup.used == 4
    official = icl_setup("per_example", inputs)
    assert official.context == "" and all(CONTEXT_FIELD in ex.fields for ex in official.test)


def test_demo_sets_key_changes_only_icl_digests():
    base = ["model=tiny-opt", "task=sst2", "steps=0"]
    assert config_digest(compose(base)) == config_digest(
        compose([*base, "icl_demo_sets=shared_pool"])
    )
    icl = [*base, "icl_demos=4"]
    assert config_digest(compose([*icl, "icl_demo_sets=shared"])) != config_digest(compose(icl))

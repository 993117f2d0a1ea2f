"""MeZO's encode_prompt rules as zoft's causal scorer applies them (issue 17): the space strip,
the option-length count, left truncation that keeps the start token, OPT's <s> start token,
and one row per option while dropout is active."""

import copy

import pytest
import torch
from tokenizers import processors

from tests.conftest import tiny
from zoft.models.loading import START_TOKENS, cache_root, use_start_token
from zoft.models.tiny import build_tokenizer
from zoft.scoring import build_scorer
from zoft.scoring.causal import dropout_active, keep_start_truncate, mezo_texts
from zoft.tasks import get_task
from zoft.tasks.base import CausalPrompt


def test_mezo_texts_strip_spaces_but_not_newlines():
    p = CausalPrompt(" The pond froze so ", ("the kids skated. ",), 0)
    prompt, verbalized, full = mezo_texts("", p, p.options[0])
    assert prompt == "The pond froze so"  # the trailing space of " so " goes
    assert verbalized == full == "The pond froze so the kids skated."
    newline = CausalPrompt("P Is x true?\n", ("Yes",), 0)
    assert mezo_texts("", newline, "Yes")[0] == "P Is x true?\n"  # a final newline stays
    demos = "A so b.\n\n"
    assert mezo_texts(demos, p, p.options[0])[2] == "A so b.\n\nThe pond froze so the kids skated."
    # zero demonstrations: no leading blank line, and whitespace in front is dropped
    assert mezo_texts("", CausalPrompt("\n x", (" y",), 0), " y")[2] == "x y"


@pytest.fixture(scope="module")
def copa_val(data_dir):
    return get_task("copa").load_local("validation", data_dir)


def test_copa_scores_every_word_of_every_choice(copa_val):
    """Old zoft scored "toilet filled with water." and dropped "the" (a lone " " token ended the
    prompt); MeZO scores " the toilet filled with water."."""
    task, tok = get_task("copa"), tiny("opt").tokenizer
    scorer = build_scorer("causal_lm", task, tok, "mezo", 2048)
    rows = scorer._rows(scorer.prompts(copa_val), gold_only=False)
    assert len(rows.targets) == 2 * len(copa_val)
    for ex_i, option_i, targets in zip(
        rows.example_index, rows.option_index, rows.targets, strict=True
    ):
        p = task.causal_prompt(copa_val[ex_i], "mezo")
        assert tok.decode(targets) == " " + p.options[option_i]


def test_copa_first_option_token_is_a_word_with_its_space(copa_val):
    """With a real BPE (SmolLM2's, GPT-2 style like OPT's) the space joins the first word."""
    from transformers import AutoTokenizer

    cached = cache_root() / "models" / "smollm2-135m"
    if not (cached / "tokenizer.json").exists():
        pytest.skip("the SmolLM2 tokenizer is cached on the first smollm2-135m run")
    tok = AutoTokenizer.from_pretrained(cached)
    task = get_task("copa")
    scorer = build_scorer("causal_lm", task, tok, "mezo", 2048)
    rows = scorer._rows(scorer.prompts(copa_val), gold_only=False)
    for ex_i, option_i, targets in zip(
        rows.example_index, rows.option_index, rows.targets, strict=True
    ):
        choice = task.causal_prompt(copa_val[ex_i], "mezo").options[option_i]
        assert tok.decode(targets[:1]) == " " + choice.split(" ", 1)[0]  # " the", " he"


def test_copa_golden_rows_on_the_real_example(copa_val):
    task, tok = get_task("copa"), tiny("opt").tokenizer
    ex = next(e for e in copa_val if e.fields["premise"].startswith("The man turned on the faucet"))
    p = task.causal_prompt(ex, "mezo")
    assert p.prompt == "The man turned on the faucet so "
    scorer = build_scorer("causal_lm", task, tok, "mezo", 2048)
    rows = scorer._rows([p], gold_only=True)
    full = rows.inputs[0] + rows.targets[0][-1:]
    assert tok.decode(full, skip_special_tokens=True) == (
        "The man turned on the faucet so water flowed from the spout."
    )
    prompt_ids = tok("The man turned on the faucet so").input_ids
    assert full[: len(prompt_ids)] == prompt_ids  # the stripped prompt is a token prefix


def test_option_length_is_a_count_of_tokens_not_a_token_diff():
    """MeZO: the last len(enc(verbalized)) - len(enc(prompt)) tokens are the option, even where
    BPE merges across the boundary."""
    task, tok = get_task("sst2"), tiny("opt").tokenizer
    scorer = build_scorer("causal_lm", task, tok, "mezo", 2048)
    p = CausalPrompt("the film was gr", ("eat and long",), 0)
    rows = scorer._rows([p], gold_only=False)
    full = tok("the film was great and long").input_ids
    n = len(full) - len(tok("the film was gr").input_ids)
    assert full[: len(full) - n] != tok("the film was gr").input_ids  # "gr"+"eat" merged
    assert rows.targets[0] == full[-n:]


def test_left_truncation_keeps_the_start_token():
    ids = [0, *range(10, 3009)]  # 3000 tokens
    kept = keep_start_truncate(ids, 2048, keep_first=True)
    assert len(kept) == 2048 and kept[0] == 0 and kept[1:] == ids[-2047:]
    assert keep_start_truncate(ids, 2048, keep_first=False) == ids[-2048:]
    assert keep_start_truncate(ids[:5], 2048, keep_first=True) == ids[:5]


def test_scorer_truncation_keeps_the_start_token_and_the_option():
    task, tok = get_task("sst2"), tiny("opt").tokenizer
    scorer = build_scorer("causal_lm", task, tok, "mezo", 32)
    long = CausalPrompt(
        "the film is long but the acting is strong . " * 20 + "It was", (" great",), 0
    )
    rows = scorer._rows([long], gold_only=False)
    full = rows.inputs[0] + rows.targets[0]
    assert len(full) == 32 and full[0] == tok.bos_token_id
    assert full[1:] == tok(long.prompt + " great").input_ids[-31:]


def test_opt_starts_every_sequence_with_s_as_mezo_sets_it():
    assert START_TOKENS == {"opt": "<s>"}
    tok = copy.deepcopy(build_tokenizer(600))
    # OPT's own tokenizer starts sequences with </s> (id 2)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", 2)]
    )
    tok.bos_token = "</s>"
    assert tok("a b").input_ids[0] == 2
    use_start_token(tok, "<s>")
    assert tok("a b").input_ids[0] == 0 and tok.bos_token_id == 0
    assert tiny("opt").tokenizer("a").input_ids[0] == 0  # load_model applies it to OPT


def test_dropout_is_active_only_in_train_mode_with_a_dropout_probability():
    opt = tiny("opt").model  # OPTConfig dropout 0.1, applied functionally
    assert dropout_active(opt.train()) and not dropout_active(opt.eval())
    llama = tiny("llama").model  # no dropout anywhere
    assert not dropout_active(llama.train())


def test_options_get_their_own_rows_while_dropout_is_active(data_dir, monkeypatch):
    """SST-2's single-token options share one input in eval; in FT (train mode, dropout on)
    MeZO feeds each option as its own sequence, so each draws its own dropout mask."""
    from zoft.scoring.causal import CausalLMScorer

    task = get_task("sst2")
    examples = task.load_local("validation", data_dir)[:2]
    loaded = tiny("opt")
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 256)
    seen = []
    original = CausalLMScorer._option_logprobs

    def spy(self, model, rows, paired=False):
        seen.append(len(rows.inputs))
        return original(self, model, rows, paired)

    monkeypatch.setattr(CausalLMScorer, "_option_logprobs", spy)
    with torch.no_grad():
        scorer.scores(loaded.model.eval(), examples)
        scorer.scores(loaded.model.train(), examples)
    assert seen == [2, 4]  # shared: one input per example; dropout: one per option

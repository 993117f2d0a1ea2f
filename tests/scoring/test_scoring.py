"""Scorers: batched, padded scores equal one-at-a-time computations; losses are fp32."""

import pytest
import torch

from tests.conftest import tiny
from zoft.scoring import build_scorer
from zoft.tasks import get_task


def _examples(data_dir, task="sst2", n=4):
    return get_task(task).load_local("train", data_dir)[:n]


@pytest.mark.parametrize("arch", ["llama", "opt"])  # rotary and learned positions
def test_causal_scores_are_mean_option_logprobs_despite_left_padding(data_dir, arch):
    loaded = tiny(arch)
    task = get_task("rte")
    examples = _examples(data_dir, "rte")
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "mezo", 512)
    with torch.no_grad():
        table = scorer.scores(loaded.model.eval(), examples)
        tok = loaded.tokenizer
        for i, ex in enumerate(examples):
            p = task.causal_prompt(ex, "mezo")
            for j, option in enumerate(p.options):
                full = tok(p.prompt + option).input_ids
                n = len(full) - len(tok(p.prompt).input_ids)
                logits = loaded.model(input_ids=torch.tensor([full])).logits[0].float()
                lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(full[1:])[:, None])
                torch.testing.assert_close(table[i, j], lp[-n:].mean(), rtol=1e-4, atol=1e-4)


def test_causal_loss_is_cross_entropy_over_candidates(data_dir):
    loaded = tiny("opt")
    examples = _examples(data_dir)
    scorer = build_scorer("causal_lm", get_task("sst2"), loaded.tokenizer, "mezo", 256)
    with torch.no_grad():
        table = scorer.scores(loaded.model.eval(), examples)
        loss = scorer.loss(loaded.model, examples)
    gold = torch.tensor([e.label for e in examples])
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(table, gold))
    assert loss.dtype == torch.float32


def test_masked_lm_scores_are_label_word_logits_at_the_mask(data_dir):
    loaded = tiny("roberta")
    task = get_task("rte")
    examples = _examples(data_dir, "rte")
    scorer = build_scorer("masked_lm", task, loaded.tokenizer, "mezo", 512)
    tok = loaded.tokenizer
    words = [tok.encode(w, add_special_tokens=False)[0] for w in (" Yes", " No")]
    with torch.no_grad():
        table = scorer.scores(loaded.model.eval(), examples)
        for i, ex in enumerate(examples):
            prompt = task.masked_prompt(ex)
            ids, _ = prompt.template.encode(tok, prompt.sentences, 256)
            logits = loaded.model(input_ids=torch.tensor([ids])).logits[0]
            at = ids.index(tok.mask_token_id)
            torch.testing.assert_close(table[i], logits[at, words], rtol=1e-4, atol=1e-4)


def test_masked_lm_truncation_keeps_the_mask(data_dir):
    loaded = tiny("roberta")
    scorer = build_scorer("masked_lm", get_task("rte"), loaded.tokenizer, "mezo", 24)
    for ex in _examples(data_dir, "rte", n=8):
        ids, at = scorer._encode(get_task("rte").masked_prompt(ex))
        assert len(ids) <= 24 and ids[at] == loaded.tokenizer.mask_token_id
        assert ids[0] == loaded.tokenizer.bos_token_id
    assert len(scorer.predict(loaded.model, _examples(data_dir, "rte", n=8), batch_size=3)) == 8


def test_causal_options_of_different_lengths_and_truncation(data_dir):
    loaded = tiny("opt")
    task = get_task("sst2")
    examples = _examples(data_dir)
    scorer = build_scorer("causal_lm", task, loaded.tokenizer, "review", 16)  # truncates prompts
    tok = loaded.tokenizer
    with torch.no_grad():
        table = scorer.scores(loaded.model.eval(), examples)
        for i, ex in enumerate(examples):
            p = task.causal_prompt(ex, "review")
            for j, option in enumerate(p.options):
                full = tok(p.prompt + option).input_ids
                n = len(full) - len(tok(p.prompt).input_ids)
                window = full[:1] + full[1:][-15:]  # MeZO keeps the start token
                logits = loaded.model(input_ids=torch.tensor([window])).logits[0].float()
                lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(window[1:])[:, None])
                torch.testing.assert_close(table[i, j], lp[-n:].mean(), rtol=1e-4, atol=1e-4)
    lengths = {
        len(tok(" negative", add_special_tokens=False).input_ids),
        len(tok(" positive", add_special_tokens=False).input_ids),
    }
    assert max(lengths) > 1  # multi-token options are exercised


def test_classifier_head_scores_every_label(data_dir):
    from tests.conftest import model_cfg
    from zoft.models.loading import load_model

    cfg = model_cfg("tiny-roberta")
    cfg.kind = "classifier"
    loaded = load_model(cfg, "fp32", "cpu", num_labels=2)
    scorer = build_scorer("classifier", get_task("rte"), loaded.tokenizer, "mezo", 64)
    loss = scorer.loss(loaded.model, _examples(data_dir, "rte"))
    loss.backward()
    assert loss.dtype == torch.float32


def test_length_batches_group_similar_sizes_and_cover_every_index():
    from zoft.scoring.base import length_batches

    batches = length_batches([5, 50, 7, 40, 6], 2)
    assert batches == [[1, 3], [2, 4], [0]]
    assert sorted(i for b in batches for i in b) == list(range(5))


@pytest.mark.parametrize("task", ["boolq", "copa"])  # single-token and multi-token options
def test_predictions_in_length_batches_equal_one_at_a_time(data_dir, task):
    loaded = tiny("llama")
    examples = get_task(task).load_local("validation", data_dir)[:7]
    scorer = build_scorer("causal_lm", get_task(task), loaded.tokenizer, "mezo", 256)
    model = loaded.model.eval()
    alone = [scorer.scores(model, [ex]).argmax(-1).item() for ex in examples]
    assert scorer.predict(model, examples, batch_size=3) == alone


def test_scores_are_the_same_when_every_input_is_its_own_chunk(monkeypatch):
    """A chunk of short inputs must still give the K positions a longer option needs."""
    import zoft.scoring.causal
    from zoft.tasks.base import CausalPrompt

    loaded = tiny("opt")
    scorer = build_scorer("causal_lm", get_task("sst2"), loaded.tokenizer, "mezo", 256)
    prompts = [
        CausalPrompt("a", (" b c d e f g h i", " j"), 0),
        CausalPrompt("x", (" y", " z"), 1),
    ]
    model = loaded.model.eval()
    with torch.no_grad():
        whole = scorer.score_prompts(model, prompts)
        monkeypatch.setattr(zoft.scoring.causal, "LOGIT_BUDGET", 1)  # one input per forward
        chunked = scorer.score_prompts(model, prompts)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def _pair_cases(data_dir):
    """(scorer, model, examples) for each kind of loss: candidates CE (causal, masked,
    classifier) and the token-level LM loss (SQuAD)."""
    from tests.conftest import model_cfg
    from zoft.models.loading import load_model

    opt = tiny("opt")
    yield build_scorer("causal_lm", get_task("sst2"), opt.tokenizer, "mezo", 256), opt.model
    yield build_scorer("causal_lm", get_task("squad"), opt.tokenizer, "mezo", 256), opt.model
    roberta = tiny("roberta")
    yield build_scorer("masked_lm", get_task("rte"), roberta.tokenizer, "mezo", 64), roberta.model
    cfg = model_cfg("tiny-roberta")
    cfg.kind = "classifier"
    head = load_model(cfg, "fp32", "cpu", num_labels=2)
    yield build_scorer("classifier", get_task("rte"), head.tokenizer, "mezo", 64), head.model


def test_each_copy_of_a_paired_loss_is_the_plain_loss_sum(data_dir):
    """Without a probe both copies of [B; B] see the same weights: each is loss_sum of B."""
    for scorer, model in _pair_cases(data_dir):
        examples = _examples(data_dir, scorer.task.name, n=3)
        model.eval()
        with torch.no_grad():
            total, terms = scorer.loss_sum(model, examples)
            (first, n1), (second, n2) = scorer.loss_sum_pair(model, examples)
        assert n1 == n2 == terms, scorer.task.name
        torch.testing.assert_close(first, total, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(second, total, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # forwards are unpaired again afterwards: the scorer keeps no state
            again, again_terms = scorer.loss_sum(model, examples)
        assert again_terms == terms and torch.equal(again, total), scorer.task.name

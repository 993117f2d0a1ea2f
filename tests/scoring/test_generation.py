"""Greedy generation: the KV cache and left padding change nothing, per-row stops, the token limit,
newline stops and answer cutting, and the SQuAD generation scorer on real examples."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import compose, tiny
from zoft.scoring import build_scorer
from zoft.scoring.causal import GenerationScorer
from zoft.scoring.generation import (
    GENERATION_STOPS,
    StopAtNewline,
    StopAtNewlineToken,
    answer_text,
    answer_text_uncut,
    greedy_generate,
    left_pad,
)
from zoft.tasks import get_task
from zoft.tasks.io import DataError

NEWLINE = 7  # the scripted models' stop token
VOCAB = 16
TEXTS = (
    "the film is great",
    "It was",
    "a film that is funny and moving , with a story that never quite works . the acting is strong",
)


class Scripted(nn.Module):
    """Emits a fixed token sequence per row whatever the input; the step count travels in the
    cache. Records every call's inputs so the caller can check what greedy_generate fed back."""

    def __init__(self, scripts: list[list[int]]) -> None:
        super().__init__()
        self.scripts = scripts
        self.embed = nn.Embedding(VOCAB, 1)  # where model_device looks for the device
        self.calls: list[dict] = []

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(
        self,
        input_ids,
        attention_mask,
        position_ids,
        past_key_values=None,
        use_cache=None,
        logits_to_keep=None,
    ):
        step = 0 if past_key_values is None else past_key_values + 1
        self.calls.append(
            {"ids": input_ids.clone(), "mask": attention_mask.clone(), "pos": position_ids.clone()}
        )
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], VOCAB)
        for i, script in enumerate(self.scripts):
            logits[i, -1, script[step]] = 1.0
        return SimpleNamespace(logits=logits, past_key_values=step)


def _naive_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding of one unpadded prompt, recomputing the whole sequence at every step."""
    ids, new = list(prompt), []
    for _ in range(steps):
        token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        new.append(token)
        ids.append(token)
    return new


def _sharp(arch: str):
    """A tiny model whose matrices are re-drawn with a large std: random init at 0.02 decodes one
    token over and over, which would hide a wrong mask or position."""
    loaded = tiny(arch)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return loaded.model.eval(), loaded.tokenizer


def test_left_pad_aligns_rows_on_the_right():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("arch", ["opt", "llama"])  # learned and rotary positions
def test_cached_batched_greedy_equals_naive_uncached_greedy(arch):
    model, tok = _sharp(arch)
    prompts = [tok(t).input_ids for t in TEXTS]
    assert len({len(p) for p in prompts}) == len(prompts)  # padding differs per row
    batched = greedy_generate(model, prompts, tok.pad_token_id, 12, lambda t: False)
    assert all(len(set(row)) > 4 for row in batched)  # not one token repeated
    with torch.no_grad():
        naive = [_naive_greedy(model, p, 12) for p in prompts]
    assert batched == naive
    alone = [greedy_generate(model, [p], tok.pad_token_id, 12, lambda t: False)[0] for p in prompts]
    assert batched == alone


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_decoding_passes_the_cache_under_its_current_name(arch, recwarn):
    """transformers 5.24 renamed forward's past_key_values to cache; the old name warned (a
    FutureWarning in every SQuAD run's log)."""
    model, tok = _sharp(arch)
    greedy_generate(model, [tok(TEXTS[0]).input_ids], tok.pad_token_id, 4, lambda t: False)
    assert not [w for w in recwarn if "past_key_values" in str(w.message)]


def test_each_row_stops_at_its_own_first_stop_token():
    a, b, c = 3, 4, 5
    model = Scripted([[a, b, NEWLINE, c, c, c], [c, c, c, c, NEWLINE, a], [NEWLINE, a, a, a, a, a]])
    out = greedy_generate(model, [[9, 9], [9], [9, 9, 9]], 0, 6, lambda t: t == NEWLINE)
    assert out == [[a, b, NEWLINE], [c, c, c, c, NEWLINE], [NEWLINE]]
    assert len(model.calls) == 5  # the prefill, then 4 steps: every row had stopped


def test_decoding_feeds_back_tokens_with_growing_mask_and_positions():
    model = Scripted([[3, 4, 5], [6, 8, 9]])
    greedy_generate(model, [[9, 9, 9], [9]], 0, 3, lambda t: False)
    first = model.calls[0]
    assert first["mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert first["pos"][:, -1].tolist() == [2, 0]  # each row counts from its first real token
    for step, call in enumerate(model.calls[1:], start=1):
        assert call["ids"].tolist() == [[[3, 4, 5][step - 1]], [[6, 8, 9][step - 1]]]
        assert call["mask"].shape == (2, 3 + step) and bool(call["mask"][:, -step:].all())
        assert call["pos"].tolist() == [[2 + step], [step]]


@pytest.mark.parametrize("limit", [0, 1, 3, 7])
def test_never_more_tokens_than_the_limit(limit):
    model = Scripted([[3] * 10, [4, NEWLINE, 4, 4, 4, 4, 4, 4, 4, 4]])
    out = greedy_generate(model, [[9], [9, 9]], 0, limit, lambda t: t == NEWLINE)
    assert out[0] == [3] * limit  # never stops: exactly the limit
    assert out[1] == [4, NEWLINE][:limit]
    assert len(model.calls) == limit  # a zero limit runs no forward at all


def test_stop_at_newline_on_the_tiny_tokenizer():
    tok = tiny("opt").tokenizer
    stop = StopAtNewline(tok)
    (newline,) = tok.encode("\n", add_special_tokens=False)
    (word,) = tok.encode(" great", add_special_tokens=False)
    assert stop(newline)
    assert not stop(word)
    assert stop(tok.eos_token_id)
    assert not stop(tok.bos_token_id)


def test_answer_text_cuts_at_the_first_newline_and_strips():
    tok = tiny("opt").tokenizer

    def ids(text):
        return tok.encode(text, add_special_tokens=False)

    assert answer_text(tok, ids(" Denver Broncos \nQuestion: who\n")) == "Denver Broncos"
    assert answer_text(tok, ids(" 1930s horror films")) == "1930s horror films"
    assert answer_text(tok, ids("\nthe film")) == ""
    assert answer_text(tok, [*ids(" great"), tok.eos_token_id]) == "great"
    assert answer_text(tok, []) == ""


@pytest.fixture(scope="module")
def squad_examples(data_dir):
    return get_task("squad").load_local("train", data_dir)[:3]


def test_generation_scorer_predicts_one_answer_string_per_example(squad_examples):
    loaded = tiny("opt")
    scorer = build_scorer("causal_lm", get_task("squad"), loaded.tokenizer, "mezo", 256)
    assert isinstance(scorer, GenerationScorer) and scorer.max_new_tokens == 50
    answers = scorer.predict(loaded.model, squad_examples, batch_size=2)
    assert len(answers) == len(squad_examples)
    assert all(isinstance(a, str) and "\n" not in a for a in answers)
    assert answers == scorer.predict(loaded.model, squad_examples, batch_size=3)  # batching


def test_generation_scorer_limits_new_tokens_and_truncates_prompts_left(
    squad_examples, monkeypatch
):
    import zoft.scoring.causal

    loaded = tiny("opt")
    tok = loaded.tokenizer
    scorer = build_scorer("causal_lm", get_task("squad"), tok, "mezo", 64)
    scorer.max_new_tokens = 3
    seen = {}

    def spy(model, prompts, pad_id, max_new_tokens, is_stop):
        out = greedy_generate(model, prompts, pad_id, max_new_tokens, is_stop)
        seen.update(prompts=prompts, max_new_tokens=max_new_tokens, out=out)
        return out

    monkeypatch.setattr(zoft.scoring.causal, "greedy_generate", spy)
    answers = scorer.predict(loaded.model, squad_examples, batch_size=8)
    assert seen["max_new_tokens"] == 3
    assert all(1 <= len(g) <= 3 for g in seen["out"])
    assert answers == [answer_text(tok, g) for g in seen["out"]]
    for ex, prompt in zip(squad_examples, seen["prompts"], strict=True):
        full = tok(get_task("squad").causal_prompt(ex, "mezo").prompt).input_ids
        # MeZO: the start token, then the tail ("...\nAnswer:") of what fits
        assert prompt == full[:1] + full[1:][-(64 - 3 - 1) :]
        assert prompt[0] == tok.bos_token_id


@pytest.mark.parametrize("kind", ["masked_lm", "classifier"])
def test_generative_tasks_need_a_causal_lm(kind):
    with pytest.raises(DataError, match="causal LM"):
        build_scorer(kind, get_task("squad"), tiny("opt").tokenizer, "mezo", 64)


class _Vocab:
    """A tokenizer with OPT's two newline tokens: "\n" (50118) and the merged "\n\n" (50140)."""

    eos_token_id = 2
    words = {2: "</s>", 50118: "\n", 50140: "\n\n", 7: " Paris", 8: ".\n"}

    def encode(self, text, add_special_tokens=True):
        return [next(i for i, w in self.words.items() if w == text)]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.words[i] for i in ids)


def test_mezo_stop_is_only_the_newline_token_or_eos():
    vocab = _Vocab()
    mezo, zoft = StopAtNewlineToken(vocab), StopAtNewline(vocab)
    assert mezo.stop_ids == {50118, 2}
    assert [mezo(t) for t in (50118, 2, 50140, 8, 7)] == [True, True, False, False, False]
    assert [zoft(t) for t in (50118, 2, 50140, 8, 7)] == [True, True, True, True, False]
    tok = tiny("opt").tokenizer
    (newline,) = tok.encode("\n", add_special_tokens=False)
    assert StopAtNewlineToken(tok).stop_ids == {newline, tok.eos_token_id}


def test_mezo_answer_is_only_stripped():
    tok = tiny("opt").tokenizer

    def ids(text):
        return tok.encode(text, add_special_tokens=False)

    assert answer_text_uncut(tok, ids("  Paris\n")) == "Paris"
    assert answer_text_uncut(tok, ids(" Denver\n\nthe film")) == "Denver\n\nthe film"
    assert answer_text_uncut(tok, [*ids(" great"), tok.eos_token_id]) == "great"


def test_generation_stop_rules_are_registered_and_switchable(squad_examples):
    loaded = tiny("opt")
    scorer = build_scorer("causal_lm", get_task("squad"), loaded.tokenizer, "mezo", 256)
    assert scorer.generation_stop is GENERATION_STOPS.get("first_newline")  # library default
    scorer.use_generation_stop("mezo")
    assert isinstance(scorer._is_stop, StopAtNewlineToken)
    answers = scorer.predict(loaded.model, squad_examples, batch_size=2)
    assert all(a == a.strip() for a in answers)


def test_squad_and_drop_configs_use_the_official_stop_and_the_default_stays_legacy():
    from pathlib import Path

    from omegaconf import OmegaConf

    from zoft.config import TaskConfig
    from zoft.run.rundir import LEGACY_VALUES

    task_dir = Path(__file__).parents[2] / "conf" / "task"
    for name in ("squad", "drop"):
        assert OmegaConf.load(task_dir / f"{name}.yaml").generation_stop == "mezo"
    assert TaskConfig.generation_stop == LEGACY_VALUES["task.generation_stop"] == "first_newline"
    assert compose(["task=sst2"]).task.generation_stop == "first_newline"

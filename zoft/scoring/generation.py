"""Batched greedy decoding with a KV cache, stopping per row at a stop token (DESIGN §5.3:
at most 50 new tokens), and the stop rules that say which tokens end an answer."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zoft.models.loading import model_device
from zoft.registry import Registry


def left_pad(
    rows: Sequence[list[int]], pad_id: int, min_width: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask of token rows padded on the left to one width (at least
    `min_width`)."""
    width = max(min_width, *(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward keyword that takes the KV cache: transformers 5.24 renamed `past_key_values`
    to `cache` (the old name still works, with a FutureWarning on every run)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    pad_id: int,
    max_new_tokens: int,
    is_stop: Callable[[int], bool],
) -> list[list[int]]:
    """New token ids per prompt, up to and including its first stop token. Prompts are
    left-padded with explicit position ids, so every row decodes as it would alone."""
    if max_new_tokens < 1:
        return [[] for _ in prompts]
    device = model_device(model)
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generated: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    cache_key = cache_keyword(model)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    for step in range(max_new_tokens):
        next_ids = out.logits[:, -1].argmax(-1)
        for i, token in enumerate(next_ids.tolist()):
            if not done[i]:
                generated[i].append(token)
                done[i] = is_stop(token)
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=next_ids.unsqueeze(-1),
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache_key: getattr(out, cache_key)},
        )
    return generated


class StopAtNewline:
    """zoft's rule: the EOS token or any token whose text holds a newline ends an answer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._known: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        if token not in self._known:
            text = self.tokenizer.decode([token])
            self._known[token] = token == self.tokenizer.eos_token_id or "\n" in text
        return self._known[token]


class StopAtNewlineToken:
    """MeZO's rule: only the id of "\n" itself (the last id of its encoding) or EOS ends an
    answer; a merged token such as "\n\n" does not."""

    def __init__(self, tokenizer) -> None:
        newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
        self.stop_ids = frozenset({newline, tokenizer.eos_token_id})

    def __call__(self, token: int) -> bool:
        return token in self.stop_ids


def answer_text(tokenizer, tokens: list[int]) -> str:
    """zoft's answer: decoded, cut at the first newline, stripped."""
    return tokenizer.decode(tokens, skip_special_tokens=True).split("\n", 1)[0].strip()


def answer_text_uncut(tokenizer, tokens: list[int]) -> str:
    """MeZO's answer: the decoded new tokens, stripped of surrounding whitespace only."""
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


@dataclass(frozen=True)
class GenerationStop:
    """When greedy decoding stops (built per tokenizer) and how the answer is read off."""

    is_stop: Callable[[Any], Callable[[int], bool]]
    answer: Callable[[Any, list[int]], str]


# task.generation_stop -> rule; "mezo" is the official one, "first_newline" zoft's earlier rule
GENERATION_STOPS: Registry[GenerationStop] = Registry("generation stop")
GENERATION_STOPS.register("mezo")(GenerationStop(StopAtNewlineToken, answer_text_uncut))
GENERATION_STOPS.register("first_newline")(GenerationStop(StopAtNewline, answer_text))

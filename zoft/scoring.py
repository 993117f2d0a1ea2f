"""Turn a model and a list of examples into a loss (fp32) or predictions, per model kind.

Causal LMs score each (example, option) row by the mean log-probability of the option tokens;
masked LMs by the label words' logits at <mask>; encoders without an MLM head by a linear head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from zoft.models import model_device
from zoft.registry import Registry
from zoft.tasks.base import MASK, CausalPrompt, Example, Task
from zoft.tasks.io import DataError

SCORERS: Registry = Registry("scorer")


class Scorer(ABC):
    """Loss and predictions of one model kind on one task."""

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
    ) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length

    @abstractmethod
    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        """Scalar fp32 training loss; differentiable when autograd is on."""

    @abstractmethod
    def scores(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        """[N, C] fp32 candidate scores (-inf where an example has fewer candidates)."""

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> list[int]:
        """Argmax predictions, batched, in eval mode (the caller restores the mode)."""
        model.eval()
        predictions: list[int] = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            predictions.extend(self.scores(model, chunk).argmax(-1).tolist())
        return predictions


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


@dataclass
class _OptionRows:
    ids: list[list[int]]
    option_lengths: list[int]
    example_index: list[int]
    option_index: list[int]


@SCORERS.register("causal_lm")
class CausalLMScorer(Scorer):
    """Mean option log-probability per candidate; option tokens = tokens(prompt+option) minus
    tokens(prompt). Inputs are left-padded so every option ends at the last position and only
    the last K+1 positions go through the output projection."""

    def _rows(self, prompts: Sequence[CausalPrompt], gold_only: bool) -> _OptionRows:
        rows = _OptionRows([], [], [], [])
        for i, p in enumerate(prompts):
            prompt_len = len(self.tokenizer(p.prompt).input_ids)
            for j, option in enumerate(p.options):
                if gold_only and j != p.gold:
                    continue
                full = self.tokenizer(p.prompt + option).input_ids
                n_option = len(full) - prompt_len
                if n_option < 1:
                    raise DataError(f"task {self.task.name}: option {option!r} adds no tokens")
                rows.ids.append(full[-self.max_length :])
                rows.option_lengths.append(min(n_option, self.max_length - 1))
                rows.example_index.append(i)
                rows.option_index.append(j)
        return rows

    def _option_logprobs(self, model: torch.nn.Module, rows: _OptionRows) -> torch.Tensor:
        """[R, K] log-probabilities of the option tokens (0 where a row's option is shorter)."""
        device = model_device(model)
        ids, mask = _left_pad(rows.ids, self.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        k = max(rows.option_lengths)
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=k + 1
        )
        logp = out.logits[:, :-1].float().log_softmax(-1)
        token_lp = logp.gather(-1, ids[:, -k:].unsqueeze(-1)).squeeze(-1)
        lengths = torch.tensor(rows.option_lengths, device=device)
        in_option = torch.arange(k, device=device) >= (k - lengths).unsqueeze(-1)
        return token_lp * in_option

    def scores(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        prompts = [self.task.causal_prompt(ex, self.template) for ex in examples]
        rows = self._rows(prompts, gold_only=False)
        token_lp = self._option_logprobs(model, rows)
        lengths = torch.tensor(rows.option_lengths, device=token_lp.device)
        per_row = token_lp.sum(-1) / lengths
        n_options = max(len(p.options) for p in prompts)
        table = torch.full((len(prompts), n_options), float("-inf"), device=per_row.device)
        table[rows.example_index, rows.option_index] = per_row
        return table

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        prompts = [self.task.causal_prompt(ex, self.template) for ex in examples]
        if prompts[0].objective == "lm":
            rows = self._rows(prompts, gold_only=True)
            token_lp = self._option_logprobs(model, rows)
            return -token_lp.sum() / sum(rows.option_lengths)
        table = self.scores(model, examples)
        gold = torch.tensor([p.gold for p in prompts], device=table.device)
        return F.cross_entropy(table, gold)


@SCORERS.register("masked_lm")
class MaskedLMScorer(Scorer):
    """Cross-entropy over the label words' logits at the <mask> position (LM-BFF)."""

    def _label_ids(self, words: Sequence[str]) -> list[int]:
        ids = []
        for word in words:
            tokens = self.tokenizer.encode(word, add_special_tokens=False)
            if len(tokens) != 1:
                raise DataError(
                    f"label word {word!r} of task {self.task.name} is {len(tokens)} tokens for this "
                    "tokenizer; masked-LM label words must be exactly one token"
                )
            ids.append(tokens[0])
        return ids

    def _encode(self, text: str) -> tuple[list[int], int]:
        ids = self.tokenizer(text.replace(MASK, self.tokenizer.mask_token)).input_ids
        mask_at = ids.index(self.tokenizer.mask_token_id)
        excess = len(ids) - self.max_length
        if excess > 0:  # drop body tokens on the side away from the mask, keep <s> and </s>
            if mask_at > len(ids) // 2:
                ids = ids[:1] + ids[1 + excess :]
            else:
                ids = ids[: -1 - excess] + ids[-1:]
            mask_at = ids.index(self.tokenizer.mask_token_id)
        return ids, mask_at

    def scores(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        prompts = [self.task.masked_prompt(ex) for ex in examples]
        encoded = [self._encode(p.text) for p in prompts]
        device = model_device(model)
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(encoded):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        at_mask = logits[torch.arange(len(encoded)), [m for _, m in encoded]]
        return at_mask[:, self._label_ids(prompts[0].label_words)].float()

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        gold = torch.tensor([ex.label for ex in examples], device=model_device(model))
        return F.cross_entropy(self.scores(model, examples), gold)


@SCORERS.register("classifier")
class ClassifierScorer(Scorer):
    """A linear classification head on an encoder (for encoders without an MLM head)."""

    def scores(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        inputs = [self.task.pair_input(ex) for ex in examples]
        texts = [i.text for i in inputs]
        pairs = [i.text_pair for i in inputs] if inputs[0].text_pair is not None else None
        enc = self.tokenizer(
            texts,
            pairs,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        ).to(model_device(model))
        return model(**enc).logits.float()

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        gold = torch.tensor([ex.label for ex in examples], device=model_device(model))
        return F.cross_entropy(self.scores(model, examples), gold)


def build_scorer(
    kind: str, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
) -> Scorer:
    return SCORERS.get(kind)(task, tokenizer, template, max_length)

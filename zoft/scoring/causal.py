"""Causal LMs: each (example, option) row scored by the mean log-probability of the option tokens;
generative tasks answered by greedy generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from transformers import PreTrainedTokenizerBase

from zoft.models.loading import model_device
from zoft.scoring.base import (
    SCORERS,
    Doubled,
    LossSum,
    ScoredPredictions,
    Scorer,
    chunks,
    halves,
    length_batches,
)
from zoft.scoring.generation import StopAtNewline, answer_text, greedy_generate, left_pad
from zoft.scoring.icl import CONTEXT_FIELD
from zoft.tasks.base import CausalPrompt, Example, Task
from zoft.tasks.io import DataError

# Largest logits slice (rows x kept positions x vocabulary) scored in one forward.
LOGIT_BUDGET = 2**26


@dataclass
class _OptionRows:
    """Option rows of a batch. Each row's input is tokens(prompt + option) without its last
    token; its targets are the option tokens, predicted at the input's last positions. Rows with
    the same input share one forward (all options of an example when they are single tokens)."""

    inputs: list[list[int]] = field(default_factory=list)
    input_of_row: list[int] = field(default_factory=list)
    targets: list[list[int]] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    option_index: list[int] = field(default_factory=list)

    def add(self, full: list[int], n_option: int, example: int, option: int, since: int) -> None:
        """One option row; its input is shared with an input added since index `since` (the
        same example's earlier options) when they are equal."""
        key = full[:-1]
        try:
            at = self.inputs.index(key, since)
        except ValueError:
            at = len(self.inputs)
            self.inputs.append(key)
        self.input_of_row.append(at)
        self.targets.append(full[-n_option:])
        self.example_index.append(example)
        self.option_index.append(option)


@SCORERS.register("causal_lm")
class CausalLMScorer(Scorer):
    """Mean option log-probability per candidate; option tokens = tokens(prompt+option) minus
    tokens(prompt). Inputs are left-padded so every option ends at the last position and only
    the last K positions go through the output projection."""

    context: str = ""  # prepended to every prompt (ICL demonstrations)

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
    ) -> None:
        super().__init__(task, tokenizer, template, max_length)
        probe = tokenizer("a").input_ids
        self._strip_eos = len(probe) > 1 and probe[-1] == tokenizer.eos_token_id
        start = tokenizer.bos_token_id
        self._start_id = tokenizer.eos_token_id if start is None else start

    def _ids(self, text: str) -> list[int]:
        """Token ids with the tokenizer's leading specials but never a trailing EOS."""
        ids = self.tokenizer(text).input_ids
        return (
            ids[:-1] if self._strip_eos and ids and ids[-1] == self.tokenizer.eos_token_id else ids
        )

    def _rows(self, prompts: Sequence[CausalPrompt], gold_only: bool) -> _OptionRows:
        rows = _OptionRows()
        for i, p in enumerate(prompts):
            prompt_len, since = len(self._ids(p.prompt)), len(rows.inputs)
            for j, option in enumerate(p.options):
                if gold_only and j != p.gold:
                    continue
                full = self._ids(p.prompt + option)
                n_option = len(full) - prompt_len
                if n_option < 1:
                    raise DataError(f"task {self.task.name}: option {option!r} adds no tokens")
                if prompt_len == 0:  # nothing to condition the first option token on
                    full = [self._start_id, *full]
                full = full[-self.max_length :]  # truncated from the left
                rows.add(full, min(n_option, len(full) - 1), i, j, since)
        return rows

    def _option_logprobs(
        self, model: torch.nn.Module, rows: _OptionRows, paired: bool = False
    ) -> torch.Tensor:
        """[R, K] log-probabilities of each row's option tokens, right-aligned (0 before a
        row's first option token); inputs are scored in chunks that bound the logits' size
        (`paired`: the rows of a Doubled batch, both copies in every chunk)."""
        device = model_device(model)
        k = max(len(t) for t in rows.targets)
        vocab = model.get_output_embeddings().weight.shape[0]
        chunk = len(rows.inputs) if self.single_forward else max(1, LOGIT_BUDGET // (k * vocab))
        row_of_input = torch.tensor(rows.input_of_row, device=device)
        targets, in_option = _right_aligned(rows.targets, k, device)
        token_lp = torch.zeros(len(rows.targets), k, device=device)
        for group in chunks(len(rows.inputs), chunk, paired):
            # at least k wide: a chunk of short inputs still yields the k kept positions
            inputs = [rows.inputs[i] for i in group]
            ids, mask = left_pad(inputs, self.tokenizer.pad_token_id, k)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=k
            )
            logits = out.logits[:, -k:].float()  # whatever was kept
            slot = torch.full((len(rows.inputs),), -1, dtype=torch.long, device=device)
            slot[torch.tensor(group, device=device)] = torch.arange(len(group), device=device)
            local = slot[row_of_input]
            picked = local >= 0
            local = local[picked]
            chosen = logits[local].gather(-1, targets[picked].unsqueeze(-1)).squeeze(-1)
            token_lp[picked] = chosen - logits[local].logsumexp(-1)
        return token_lp * in_option

    def prompts(self, examples: Sequence[Example]) -> list[CausalPrompt]:
        made = [self.task.causal_prompt(ex, self.template) for ex in examples]
        # an example's own ICL demonstrations win over the shared context
        contexts = [ex.fields.get(CONTEXT_FIELD, self.context) for ex in examples]
        if not any(contexts):
            return made
        return [replace(p, prompt=c + p.prompt) for p, c in zip(made, contexts, strict=True)]

    def score_prompts(
        self, model: torch.nn.Module, prompts: Sequence[CausalPrompt]
    ) -> torch.Tensor:
        rows = self._rows(prompts, gold_only=False)
        token_lp = self._option_logprobs(model, rows, paired=isinstance(prompts, Doubled))
        lengths = torch.tensor([len(t) for t in rows.targets], device=token_lp.device)
        per_row = token_lp.sum(-1) / lengths
        n_options = max(len(p.options) for p in prompts)
        table = torch.full((len(prompts), n_options), float("-inf"), device=per_row.device)
        table[rows.example_index, rows.option_index] = per_row
        return table

    def loss_sum_of(
        self, model: torch.nn.Module, prompts: Sequence[CausalPrompt]
    ) -> tuple[torch.Tensor, int]:
        if prompts[0].objective != "lm":
            return super().loss_sum_of(model, prompts)
        rows = self._rows(prompts, gold_only=True)  # token cross-entropy on the gold option only
        return -self._option_logprobs(model, rows).sum(), sum(len(t) for t in rows.targets)

    def loss_sum_pair_of(self, model: torch.nn.Module, pair: Doubled) -> tuple[LossSum, LossSum]:
        if pair[0].objective != "lm":
            return super().loss_sum_pair_of(model, pair)
        rows = self._rows(pair, gold_only=True)  # each copy has the same rows, in the same order
        token_lp = self._option_logprobs(model, rows, paired=True)
        first = torch.tensor(rows.example_index, device=token_lp.device) < pair.half
        terms = sum(len(t) for t in halves(rows.targets)[0])
        return (-token_lp[first].sum(), terms), (-token_lp[~first].sum(), terms)


def _right_aligned(
    targets: list[list[int]], k: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, K] target ids right-aligned (0 as filler) and the mask of real target positions."""
    ids = torch.zeros(len(targets), k, dtype=torch.long)
    for i, t in enumerate(targets):
        ids[i, k - len(t) :] = torch.tensor(t)
    lengths = torch.tensor([len(t) for t in targets])
    in_option = torch.arange(k) >= (k - lengths).unsqueeze(-1)
    return ids.to(device), in_option.to(device)


@SCORERS.register("causal_lm_generation")
class GenerationScorer(CausalLMScorer):
    """Generative tasks: predictions are greedy answers (at most `max_new_tokens`, cut at the
    first newline); the training loss is the LM loss on the gold answer."""

    max_new_tokens: int = 50

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
    ) -> None:
        super().__init__(task, tokenizer, template, max_length)
        self._is_stop = StopAtNewline(tokenizer)

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> list[str]:
        model.eval()
        prompts = self._prompt_ids(self.prompts(examples))
        answers: list[str] = [""] * len(prompts)
        for batch in length_batches([len(p) for p in prompts], batch_size):
            for i, answer in zip(
                batch, self._answers(model, [prompts[i] for i in batch]), strict=True
            ):
                answers[i] = answer
        return answers

    @torch.no_grad()
    def predict_scored(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> ScoredPredictions:
        """Generated answers have no candidate scores."""
        return ScoredPredictions(self.predict(model, examples, batch_size))

    @torch.no_grad()
    def predict_prompts(self, model: torch.nn.Module, prompts: Sequence[CausalPrompt]) -> list[str]:
        return self._answers(model, self._prompt_ids(prompts))

    def _prompt_ids(self, prompts: Sequence[CausalPrompt]) -> list[list[int]]:
        room = max(self.max_length - self.max_new_tokens, 1)  # prompts truncated from the left
        return [self._ids(p.prompt)[-room:] for p in prompts]

    def _answers(self, model: torch.nn.Module, ids: list[list[int]]) -> list[str]:
        """Greedy answers of one batch of token ids (one forward per token for all rows, so a
        Doubled batch stays aligned)."""
        generated = greedy_generate(
            model, ids, self.tokenizer.pad_token_id, self.max_new_tokens, self._is_stop
        )
        return [answer_text(self.tokenizer, tokens) for tokens in generated]

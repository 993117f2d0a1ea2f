"""Causal LMs: each (example, option) row scored by the mean log-probability of the option tokens;
generative tasks answered by greedy generation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from transformers import PreTrainedTokenizerBase

from zoft.models.loading import model_device
from zoft.run.console import progress
from zoft.scoring.base import (
    SCORERS,
    Doubled,
    LossSum,
    ScoredPredictions,
    Scorer,
    chunks,
    halves,
    head_inputs,
    length_batches,
)
from zoft.scoring.generation import (
    GENERATION_STOPS,
    greedy_generate,
    left_pad,
)
from zoft.scoring.icl import CONTEXT_FIELD
from zoft.tasks.base import CausalPrompt, Example, Task
from zoft.tasks.io import DataError

# The stop rule of a generation scorer built without a config (zoft's rule before issue 17)
LEGACY_GENERATION_STOP = "first_newline"
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

    def add(
        self, full: list[int], n_option: int, example: int, option: int, since: int | None
    ) -> None:
        """One option row; its input is shared with an input added since index `since` (the
        same example's earlier options) when they are equal; `since` None: never shared."""
        key = full[:-1]
        earlier = self.inputs[since:] if since is not None else []
        if key in earlier:
            at = (since or 0) + earlier.index(key)
        else:
            at = len(self.inputs)
            self.inputs.append(key)
        self.input_of_row.append(at)
        self.targets.append(full[-n_option:])
        self.example_index.append(example)
        self.option_index.append(option)


def mezo_texts(context: str, prompt: CausalPrompt, option: str, strip_option: bool = True):
    """(prompt text, verbalized text, full text) as MeZO's encode_prompt builds them: the
    prompt and prompt+option stripped of spaces (not newlines), the demonstrations put in
    front and the whole left-stripped of all whitespace and stripped of spaces at both ends.
    The option's length is counted on the first two, which carry no demonstrations."""
    verbalized = prompt.prompt + option
    if strip_option:
        verbalized = verbalized.strip(" ")
    return prompt.prompt.strip(" "), verbalized, (context + verbalized).lstrip().strip(" ")


def keep_start_truncate(ids: list[int], max_length: int, keep_first: bool) -> list[int]:
    """Left truncation to `max_length`; a tokenizer's start token is kept in front (MeZO:
    the first token, then the last max_length-1 of the rest)."""
    if len(ids) <= max_length:
        return ids
    if keep_first:
        return ids[:1] + ids[1:][-(max_length - 1) :]
    return ids[-max_length:]


def dropout_active(model: torch.nn.Module) -> bool:
    """Whether a forward of `model` draws dropout masks: in train mode with a dropout module
    or a dropout probability of the config above 0 (OPT applies its `dropout` functionally)."""
    if not model.training:
        return False
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    settings = config.to_dict() if config is not None else {}
    return any(
        isinstance(v, float) and v > 0 and ("dropout" in k or k.endswith("pdrop"))
        for k, v in settings.items()
    )


@SCORERS.register("causal_lm")
class CausalLMScorer(Scorer):
    """Mean option log-probability per candidate, with MeZO's texts and counts (mezo_texts):
    option tokens = the last len(tokens(verbalized)) - len(tokens(prompt)) tokens of the full
    text. Inputs are left-padded so every option ends at the last position and only the last K
    positions go through the output projection."""

    context: str = ""  # prepended to every prompt (ICL demonstrations)
    strip_option: bool = True  # MeZO strips the verbalized text of classification prompts

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
    ) -> None:
        super().__init__(task, tokenizer, template, max_length)
        probe = tokenizer("a").input_ids
        self._strip_eos = len(probe) > 1 and probe[-1] == tokenizer.eos_token_id
        start = tokenizer.bos_token_id
        self._start_id = tokenizer.eos_token_id if start is None else start
        self._adds_start = start is not None and len(probe) > 1 and probe[0] == start

    def _ids(self, text: str) -> list[int]:
        """Token ids with the tokenizer's leading specials but never a trailing EOS."""
        ids = self.tokenizer(text).input_ids
        return (
            ids[:-1] if self._strip_eos and ids and ids[-1] == self.tokenizer.eos_token_id else ids
        )

    def _window(self) -> int:
        """Tokens an input may hold."""
        return self.max_length

    def _truncate(self, ids: list[int], window: int) -> list[int]:
        return keep_start_truncate(ids, window, self._adds_start)

    def _rows(
        self, prompts: Sequence[CausalPrompt], gold_only: bool, share_inputs: bool = True
    ) -> _OptionRows:
        """`share_inputs`: options whose inputs are equal share one forward row (never while
        dropout is active: MeZO gives every option its own sequence, so its own mask)."""
        rows = _OptionRows()
        for i, given in enumerate(prompts):
            context, p = self._split_context(given)
            since = len(rows.inputs)
            prompt_len = None  # the stripped prompt's length: the same for every option
            for j, option in enumerate(p.options):
                if gold_only and j != p.gold:
                    continue
                prompt_text, verbalized, text = mezo_texts(context, p, option, self.strip_option)
                if prompt_len is None:
                    prompt_len = len(self._ids(prompt_text))
                n_option = len(self._ids(verbalized)) - prompt_len
                if n_option < 1:
                    raise DataError(f"task {self.task.name}: option {option!r} adds no tokens")
                full = self._ids(text)
                if prompt_len == 0 and not context:  # nothing to condition the option on
                    full = [self._start_id, *full]
                full = self._truncate(full, self._window())
                rows.add(full, min(n_option, len(full) - 1), i, j, since if share_inputs else None)
        return rows

    def _chunk_logits(
        self, model: torch.nn.Module, rows: _OptionRows, k: int, paired: bool = False
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(input indices, [len, k, V] fp32 logits at their last k positions) per forward: the
        inputs in chunks that bound the logits' size (`paired`: the rows of a Doubled batch,
        both copies in every chunk)."""
        device = model_device(model)
        vocab = model.get_output_embeddings().weight.shape[0]
        chunk = len(rows.inputs) if self.single_forward else max(1, LOGIT_BUDGET // (k * vocab))
        for group in chunks(len(rows.inputs), chunk, paired):
            # at least k wide: a chunk of short inputs still yields the k kept positions
            ids, mask = left_pad([rows.inputs[i] for i in group], self.tokenizer.pad_token_id, k)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=k
            )
            yield group, out.logits[:, -k:].float()  # whatever was kept

    def _option_logprobs(
        self, model: torch.nn.Module, rows: _OptionRows, paired: bool = False
    ) -> torch.Tensor:
        """[R, K] log-probabilities of each row's option tokens, right-aligned (0 before a
        row's first option token)."""
        device = model_device(model)
        k = max(len(t) for t in rows.targets)
        row_of_input = torch.tensor(rows.input_of_row, device=device)
        targets, in_option = _right_aligned(rows.targets, k, device)
        token_lp = torch.zeros(len(rows.targets), k, device=device)
        for group, logits in self._chunk_logits(model, rows, k, paired):
            slot = torch.full((len(rows.inputs),), -1, dtype=torch.long, device=device)
            slot[torch.tensor(group, device=device)] = torch.arange(len(group), device=device)
            local = slot[row_of_input]
            picked = local >= 0
            local = local[picked]
            chosen = logits[local].gather(-1, targets[picked].unsqueeze(-1)).squeeze(-1)
            token_lp[picked] = chosen - logits[local].logsumexp(-1)
        return token_lp * in_option

    @torch.no_grad()
    def head_features(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output projection's input at every position that predicts a gold-option token,
        and that token (MeZO's linear probing: the gold option only, the LM-loss encoding)."""
        rows = self._rows(self.prompts(examples), gold_only=True)
        k = max(len(t) for t in rows.targets)
        hidden: dict[int, torch.Tensor] = {}
        with head_inputs(self.head(model)) as seen:
            for group, _ in self._chunk_logits(model, rows, k):
                kept = seen.pop()[:, -k:]
                hidden.update(zip(group, kept, strict=True))
        pairs = zip(rows.input_of_row, rows.targets, strict=True)
        features = [hidden[at][k - len(t) :] for at, t in pairs]
        targets = [token for t in rows.targets for token in t]
        return torch.cat(features).float(), torch.tensor(targets, dtype=torch.long)

    def prompts(self, examples: Sequence[Example]) -> list[CausalPrompt]:
        made = [self.task.causal_prompt(ex, self.template) for ex in examples]
        # an example's own ICL demonstrations win over the shared context
        contexts = [ex.fields.get(CONTEXT_FIELD, self.context) for ex in examples]
        if not any(contexts):
            return made
        return [replace(p, prompt=c + p.prompt) for p, c in zip(made, contexts, strict=True)]

    def _split_context(self, prompt: CausalPrompt) -> tuple[str, CausalPrompt]:
        """(ICL context, the task's own prompt): MeZO counts option tokens without the
        demonstrations and strips the task's prompt on its own."""
        if self.context and prompt.prompt.startswith(self.context):
            return self.context, replace(prompt, prompt=prompt.prompt[len(self.context) :])
        return "", prompt

    def score_prompts(
        self, model: torch.nn.Module, prompts: Sequence[CausalPrompt]
    ) -> torch.Tensor:
        rows = self._rows(prompts, gold_only=False, share_inputs=not dropout_active(model))
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
    """Generative tasks: predictions are greedy answers (at most `max_new_tokens`, ended and
    read off by the task.generation_stop rule); the training loss is the LM loss on the gold
    answer. Inputs leave room for the new tokens, in training too (MeZO)."""

    max_new_tokens: int = 50
    strip_option: bool = False  # MeZO strips the gold verbalization only as a whole text

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
    ) -> None:
        super().__init__(task, tokenizer, template, max_length)
        self.use_generation_stop(LEGACY_GENERATION_STOP)

    def use_generation_stop(self, name: str) -> None:
        """Switch to the registered stop rule `name` (GENERATION_STOPS)."""
        self.generation_stop = GENERATION_STOPS.get(name)
        self._is_stop = self.generation_stop.is_stop(self.tokenizer)

    def _window(self) -> int:
        return max(self.max_length - self.max_new_tokens, 1)

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> list[str]:
        model.eval()
        prompts = self._prompt_ids(self.prompts(examples))
        answers: list[str] = [""] * len(prompts)
        for batch in progress(length_batches([len(p) for p in prompts], batch_size)):
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
        """MeZO's evaluation text (demonstrations, then the space-stripped prompt), truncated
        from the left to leave room for the answer."""
        ids = []
        for given in prompts:
            context, p = self._split_context(given)
            text = (context + p.prompt.strip(" ")).lstrip().strip(" ")
            ids.append(self._truncate(self._ids(text), self._window()))
        return ids

    def _answers(self, model: torch.nn.Module, ids: list[list[int]]) -> list[str]:
        """Greedy answers of one batch of token ids (one forward per token for all rows, so a
        Doubled batch stays aligned)."""
        generated = greedy_generate(
            model, ids, self.tokenizer.pad_token_id, self.max_new_tokens, self._is_stop
        )
        return [self.generation_stop.answer(self.tokenizer, tokens) for tokens in generated]

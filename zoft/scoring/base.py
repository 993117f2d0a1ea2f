"""The Scorer interface: a model and a list of examples turned into a loss (fp32) or predictions.
Each model kind has its scorer module (causal, masked, classifier).

Causal LMs score each (example, option) row by the mean log-probability of the option tokens;
masked LMs by the label words' logits at <mask>; encoders without an MLM head by a linear head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from zoft.registry import Registry
from zoft.run.console import progress
from zoft.tasks.base import Example, Task

SCORERS: Registry = Registry("scorer")
T = TypeVar("T")

# (summed loss, number of terms): micro-batches add up to exactly the full-batch loss
LossSum = tuple[torch.Tensor, int]


@runtime_checkable
class Objective(Protocol):
    """What an optimizer minimises on a batch: all it calls, so a scorer (objective=loss) and a
    metric objective (objective=accuracy/f1) are interchangeable without attribute forwarding."""

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        """Scalar fp32 loss of the batch (differentiable when autograd is on and it can be)."""
        ...

    def loss_sum(self, model: torch.nn.Module, examples: Sequence[Example]) -> LossSum:
        """(summed loss, number of terms) of the batch."""
        ...

    def loss_sum_pair(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[LossSum, LossSum]:
        """loss_sum of each copy when the batch runs twice over in the same forwards ([B; B]):
        under a paired probe the first copy sees θ+εz and the second θ−εz."""
        ...


class Doubled(list):
    """A batch followed by an equal copy of itself, run in the same forwards ([B; B]). A scorer
    that cuts its forwards into chunks takes the same rows from both copies in each
    (`chunks`), so the first half of every forward's rows is the first copy."""

    def __init__(self, items: Sequence[Any]) -> None:
        super().__init__([*items, *items])

    @property
    def half(self) -> int:
        return len(self) // 2


def halves(values: Sequence[T]) -> tuple[Sequence[T], Sequence[T]]:
    """The values of the first copy and of the second, from one pass over a Doubled batch."""
    half = len(values) // 2
    return values[:half], values[half:]


def chunks(count: int, chunk: int, paired: bool) -> list[list[int]]:
    """Indices 0..count-1 per forward, at most `chunk` each. Paired indices are two equal copies
    one after the other; each forward then takes the same indices from both, first copy first,
    so the first half of its rows is always the first copy (what a paired probe perturbs by +εz)."""
    if not paired:
        return [list(range(start, min(start + chunk, count))) for start in range(0, count, chunk)]
    half, step = count // 2, max(1, chunk // 2)
    return [
        [
            *range(start, min(start + step, half)),
            *range(half + start, half + min(start + step, half)),
        ]
        for start in range(0, half, step)
    ]


@dataclass
class ScoredPredictions:
    """Predictions of a list of examples, in its order, and each example's candidate scores
    (None for generated answers, which have no candidates)."""

    predictions: list[Any]
    scores: list[list[float]] | None = None


def _without_padding(row: list[float]) -> list[float]:
    """A score row without the -inf filler of candidates the example does not have."""
    end = len(row)
    while end > 0 and row[end - 1] == float("-inf"):
        end -= 1
    return row[:end]


@contextmanager
def head_inputs(head: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """The inputs `head` receives while the block runs, one tensor per call, detached (a forward
    hook: the features linear probing fits, exactly what the head would score)."""
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


class Scorer(ABC):
    """Loss and predictions of one model kind on one task; an Objective (objective=loss)."""

    def __init__(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
    ) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.single_forward = False  # one forward per call, whatever its logits' size (FSDP)

    @abstractmethod
    def prompts(self, examples: Sequence[Example]) -> list[Any]:
        """The task's input for this model kind, one per example, each with its `gold` index."""

    @abstractmethod
    def score_prompts(self, model: torch.nn.Module, prompts: Sequence[Any]) -> torch.Tensor:
        """[N, C] fp32 candidate scores (-inf where an example has fewer candidates); a Doubled
        batch keeps its copies aligned in every forward."""

    def scores(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        return self.score_prompts(model, self.prompts(examples))

    def loss(self, model: torch.nn.Module, examples: Sequence[Example]) -> torch.Tensor:
        """Scalar fp32 training loss (cross-entropy over candidates); differentiable when
        autograd is on."""
        return self.loss_of(model, self.prompts(examples))

    def loss_of(self, model: torch.nn.Module, prompts: Sequence[Any]) -> torch.Tensor:
        total, weight = self.loss_sum_of(model, prompts)
        return total / weight

    def loss_sum(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[torch.Tensor, int]:
        """(summed loss, number of terms): micro-batches add up to exactly the full-batch loss."""
        return self.loss_sum_of(model, self.prompts(examples))

    def loss_sum_of(
        self, model: torch.nn.Module, prompts: Sequence[Any]
    ) -> tuple[torch.Tensor, int]:
        table = self.score_prompts(model, prompts)
        gold = torch.tensor([p.gold for p in prompts], device=table.device)
        return F.cross_entropy(table, gold, reduction="sum"), len(prompts)

    def loss_sum_pair(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[LossSum, LossSum]:
        """loss_sum of each copy of the batch run twice over in the same forwards (Objective)."""
        return self.loss_sum_pair_of(model, Doubled(self.prompts(examples)))

    def loss_sum_pair_of(self, model: torch.nn.Module, pair: Doubled) -> tuple[LossSum, LossSum]:
        table = self.score_prompts(model, pair)
        gold = torch.tensor([p.gold for p in pair], device=table.device)
        first, second = halves(F.cross_entropy(table, gold, reduction="none"))
        return (first.sum(), pair.half), (second.sum(), pair.half)

    def head(self, model: torch.nn.Module) -> torch.nn.Module:
        """The linear layer whose rows score this kind's candidates (what linear probing fits):
        a language model's output embeddings (a classifier overrides it)."""
        return model.get_output_embeddings()

    def head_features(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([T, H] fp32 inputs of head() where a gold target is scored, [T] the head rows of
        those targets): what linear probing fits, from the model as it is."""
        raise NotImplementedError(f"{type(self).__name__} has no head features")

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> list[int]:
        """Argmax predictions in eval mode (the caller restores the mode), batched by length."""
        return self.predict_scored(model, examples, batch_size).predictions

    @torch.no_grad()
    def predict_scored(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> ScoredPredictions:
        """The argmax predictions and, from the same forwards, every candidate's score (in the
        task's candidate order), so predictions.jsonl shows what the metric was computed from."""
        model.eval()
        prompts = self.prompts(examples)
        predictions: list[int] = [0] * len(prompts)
        scores: list[list[float]] = [[] for _ in prompts]
        for batch in progress(length_batches([p.size for p in prompts], batch_size)):
            table = self.score_prompts(model, [prompts[i] for i in batch])
            best = table.argmax(-1).tolist()
            for i, choice, row in zip(batch, best, table.tolist(), strict=True):
                predictions[i], scores[i] = choice, _without_padding(row)
        return ScoredPredictions(predictions, scores)

    @torch.no_grad()
    def predict_prompts(self, model: torch.nn.Module, prompts: Sequence[Any]) -> list[Any]:
        """Predictions for these prompts, in their order, from one batch (a Doubled batch keeps
        its copies aligned); the caller sets eval mode."""
        return self.score_prompts(model, prompts).argmax(-1).tolist()


def length_batches(sizes: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar size (longest first), so padding wastes little compute;
    every score is independent of its batch, so the order changes no prediction."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

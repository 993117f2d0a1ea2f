"""The Scorer interface: a model and a list of examples turned into a loss (fp32) or predictions.
Each model kind has its scorer module (causal, masked, classifier).

Causal LMs score each (example, option) row by the mean log-probability of the option tokens;
masked LMs by the label words' logits at <mask>; encoders without an MLM head by a linear head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from zoft.registry import Registry
from zoft.tasks.base import Example, Task

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
        self._pairing = False  # inside loss_sum_pair: forwards keep the two copies aligned
        self.single_forward = False  # one forward per call, whatever its logits' size (FSDP)

    @abstractmethod
    def prompts(self, examples: Sequence[Example]) -> list[Any]:
        """The task's input for this model kind, one per example, each with its `gold` index."""

    @abstractmethod
    def score_prompts(self, model: torch.nn.Module, prompts: Sequence[Any]) -> torch.Tensor:
        """[N, C] fp32 candidate scores (-inf where an example has fewer candidates)."""

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
    ) -> tuple[tuple[torch.Tensor, int], tuple[torch.Tensor, int]]:
        """loss_sum of the batch run twice over in the same forwards ([B; B]), one per copy:
        under a paired probe the first copy sees θ+εz and the second θ−εz."""
        prompts = self.prompts(examples)
        self._pairing = True  # every forward takes the same rows from both copies
        try:
            return self.loss_sum_pair_of(model, prompts)
        finally:
            self._pairing = False

    def loss_sum_pair_of(
        self, model: torch.nn.Module, prompts: Sequence[Any]
    ) -> tuple[tuple[torch.Tensor, int], tuple[torch.Tensor, int]]:
        n = len(prompts)
        table = self.score_prompts(model, [*prompts, *prompts])
        gold = torch.tensor([p.gold for p in prompts] * 2, device=table.device)
        per_example = F.cross_entropy(table, gold, reduction="none")
        return (per_example[:n].sum(), n), (per_example[n:].sum(), n)

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int
    ) -> list[int]:
        """Argmax predictions in eval mode (the caller restores the mode), batched by length."""
        model.eval()
        prompts = self.prompts(examples)
        predictions: list[int] = [0] * len(prompts)
        for batch in length_batches([p.size for p in prompts], batch_size):
            best = self.score_prompts(model, [prompts[i] for i in batch]).argmax(-1).tolist()
            for i, choice in zip(batch, best, strict=True):
                predictions[i] = choice
        return predictions


def length_batches(sizes: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar size (longest first), so padding wastes little compute;
    every score is independent of its batch, so the order changes no prediction."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

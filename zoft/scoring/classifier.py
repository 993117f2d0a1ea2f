"""Encoders without an MLM head: a linear classification head over the pair input."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoft.models.loading import model_device
from zoft.scoring.base import SCORERS, Scorer
from zoft.tasks.base import Example, PairInput


@SCORERS.register("classifier")
class ClassifierScorer(Scorer):
    """A linear classification head on an encoder (for encoders without an MLM head)."""

    def prompts(self, examples: Sequence[Example]) -> list[PairInput]:
        return [self.task.pair_input(ex) for ex in examples]

    def score_prompts(self, model: torch.nn.Module, inputs: Sequence[PairInput]) -> torch.Tensor:
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

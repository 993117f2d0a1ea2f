"""Encoders without an MLM head: a linear classification head over the pair input."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoft.models.loading import model_device
from zoft.scoring.base import SCORERS, Scorer, head_inputs
from zoft.tasks.base import Example, PairInput


@SCORERS.register("classifier")
class ClassifierScorer(Scorer):
    """A linear classification head on an encoder (for encoders without an MLM head)."""

    def prompts(self, examples: Sequence[Example]) -> list[PairInput]:
        return [self.task.pair_input(ex) for ex in examples]

    def head(self, model: torch.nn.Module) -> torch.nn.Module:
        """The classification head's last projection (BERT's classifier, RoBERTa's out_proj)."""
        labels = len(self.task.label_names)
        linears = [
            m
            for m in model.modules()
            if isinstance(m, torch.nn.Linear) and m.out_features == labels
        ]
        if not linears:
            raise NotImplementedError(f"no {labels}-way linear classification head in the model")
        return linears[-1]

    @torch.no_grad()
    def head_features(
        self, model: torch.nn.Module, examples: Sequence[Example]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last projection's input per example and the gold label's row."""
        inputs = self.prompts(examples)
        with head_inputs(self.head(model)) as seen:
            self.score_prompts(model, inputs)
        targets = [i.gold for i in inputs]
        return torch.cat(seen).float(), torch.tensor(targets, dtype=torch.long)

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

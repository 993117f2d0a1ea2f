"""Scorers: a model and a task turned into losses, candidate scores and predictions, one module per
model kind, registered in SCORERS."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from zoft.scoring import causal, classifier, masked  # noqa: F401  (registration)
from zoft.scoring.base import SCORERS, Scorer
from zoft.tasks.base import Task
from zoft.tasks.io import DataError


def build_scorer(
    kind: str, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
) -> Scorer:
    """The scorer of this model kind for this task (generation for generative tasks)."""
    if task.generative:
        if kind != "causal_lm":
            raise DataError(
                f"task {task.name} is answered by generation, which needs a causal LM; "
                f"model kind {kind} cannot generate (use e.g. model=smollm2-135m)"
            )
        kind = "causal_lm_generation"
    return SCORERS.get(kind)(task, tokenizer, template, max_length)

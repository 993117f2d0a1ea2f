"""In-context learning: demonstrations from the training split prepended to every prompt, an
evaluation-only mode of the runner (DESIGN §6.5; MeZO's ICL baseline uses 32)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from zoft.tasks.base import Example, Task

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"  # between demonstrations, and before the evaluated prompt


def demonstration_context(
    task: Task, template: str, train: Sequence[Example], count: int, seed: int
) -> tuple[str, int]:
    """(context, demonstrations used): `count` training examples drawn with `seed`, each its
    prompt followed by its gold option and stripped, joined by blank lines. The scorer truncates
    the full input from the left, so a context longer than the model's window loses its oldest
    demonstrations first."""
    if count > len(train):
        log.warning(
            "%s: %d demonstrations asked for, the train split has %d; using all of them",
            task.name,
            count,
            len(train),
        )
    chosen = np.random.RandomState(seed).permutation(len(train))[:count]
    shown = []
    for i in chosen:
        prompt = task.causal_prompt(train[i], template)
        shown.append((prompt.prompt + prompt.options[prompt.gold]).strip())
    return (SEPARATOR.join(shown) + SEPARATOR if shown else ""), len(shown)

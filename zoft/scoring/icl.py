"""In-context learning: demonstrations from the training split prepended to the prompts, an
evaluation-only mode of the runner (DESIGN §6.5; MeZO's ICL baseline uses 32).

How the demonstration sets are drawn is `icl_demo_sets` (ICL_SAMPLERS):
- per_example (MeZO large_models/icl.sh): every test example gets its own set. The seeds are
  `randint(0, 10000, num_eval)` under numpy seed 0, and set i is the first `count` of a
  permutation of the FULL train split under seeds[i]; test example i gets set i.
- shared_pool (LMAO icl_all.sh, `--train_set_seed`): one set for all test examples, the first
  `count` of a permutation of the full train split under the data seed.
- shared (zoft before issue 17): one set drawn the same way from the run's train subset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from zoft.registry import Registry
from zoft.tasks.base import Example, Task

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"  # between demonstrations, and before the evaluated prompt
# Example field holding that example's own demonstrations; the causal scorer prepends it
# instead of its shared `context`
CONTEXT_FIELD = "icl_context"
DEMO_SEED_LIMIT = 10000  # MeZO's per-example seeds are randint(0, 10000)


def demo_seeds(num_eval: int) -> np.ndarray:
    """MeZO's per-example demonstration seeds: `np.random.randint(0, 10000, num_eval)` under a
    temporarily set numpy seed 0 (legacy MT19937, so RandomState(0) gives the same draws)."""
    return np.random.RandomState(0).randint(0, DEMO_SEED_LIMIT, num_eval)


def demo_indices(pool_size: int, count: int, seed: int) -> np.ndarray:
    """MeZO's `sample_subset`: the first `count` of a seeded permutation of the pool."""
    return np.random.RandomState(seed).permutation(pool_size)[:count]


def render_context(task: Task, template: str, demos: Sequence[Example]) -> str:
    """Each demonstration is its prompt and gold option, stripped; joined by blank lines and
    followed by one more, before the evaluated prompt."""
    shown = []
    for ex in demos:
        prompt = task.causal_prompt(ex, template)
        shown.append((prompt.prompt + prompt.options[prompt.gold]).strip())
    return SEPARATOR.join(shown) + SEPARATOR if shown else ""


def _warn_if_short(task: Task, count: int, pool: Sequence[Example]) -> None:
    if count > len(pool):
        log.warning(
            "%s: %d demonstrations asked for, the train split has %d; using all of them",
            task.name,
            count,
            len(pool),
        )


def demonstration_context(
    task: Task, template: str, train: Sequence[Example], count: int, seed: int
) -> tuple[str, int]:
    """(context, demonstrations used): one set of `count` training examples drawn with `seed`.
    The scorer truncates the full input from the left, so a context longer than the model's
    window loses its oldest demonstrations first."""
    _warn_if_short(task, count, train)
    chosen = [train[i] for i in demo_indices(len(train), count, seed)]
    return render_context(task, template, chosen), len(chosen)


def per_example_contexts(
    task: Task,
    template: str,
    pool: Sequence[Example],
    test: Sequence[Example],
    count: int,
    num_eval: int,
) -> tuple[list[Example], int]:
    """(test examples each carrying its own demonstrations, demonstrations per example): MeZO's
    one-set-per-evaluation-example ICL. The seeds array has num_eval entries even when the test
    set is smaller (COPA); only the first len(test) are used."""
    _warn_if_short(task, count, pool)
    seeds = demo_seeds(max(num_eval, len(test)))
    carried = []
    for ex, seed in zip(test, seeds, strict=False):
        demos = [pool[i] for i in demo_indices(len(pool), count, int(seed))]
        context = render_context(task, template, demos)
        carried.append(replace(ex, fields={**ex.fields, CONTEXT_FIELD: context}))
    return carried, min(count, len(pool))


@dataclass(frozen=True)
class IclInputs:
    """What an ICL sampler draws from: the full official train split, the run's train subset,
    the test examples, and the sampling settings."""

    task: Task
    template: str
    pool: Callable[[], Sequence[Example]]  # the full train split, loaded on demand
    train: Sequence[Example]
    test: Sequence[Example]
    count: int
    num_eval: int
    seed: int


@dataclass(frozen=True)
class IclSetup:
    """A shared context (or ""), the test examples to evaluate, demonstrations per example."""

    context: str
    test: list[Example]
    used: int


ICL_SAMPLERS: Registry = Registry("icl_demo_sets")


@ICL_SAMPLERS.register("per_example")
def _per_example(inputs: IclInputs) -> IclSetup:
    test, used = per_example_contexts(
        inputs.task, inputs.template, inputs.pool(), inputs.test, inputs.count, inputs.num_eval
    )
    return IclSetup("", test, used)


@ICL_SAMPLERS.register("shared_pool")
def _shared_pool(inputs: IclInputs) -> IclSetup:
    context, used = demonstration_context(
        inputs.task, inputs.template, inputs.pool(), inputs.count, inputs.seed
    )
    return IclSetup(context, list(inputs.test), used)


@ICL_SAMPLERS.register("shared")
def _shared_subset(inputs: IclInputs) -> IclSetup:
    context, used = demonstration_context(
        inputs.task, inputs.template, inputs.train, inputs.count, inputs.seed
    )
    return IclSetup(context, list(inputs.test), used)


def icl_setup(demo_sets: str, inputs: IclInputs) -> IclSetup:
    """The demonstrations of an ICL run, drawn as `demo_sets` says."""
    return ICL_SAMPLERS.get(demo_sets)(inputs)

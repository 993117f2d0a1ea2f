"""The two sampling protocols of DESIGN §5.2 and the choice between local and hub data."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoft.config import enum_value
from zoft.tasks.base import Example, Splits, Task, with_row_ids
from zoft.tasks.io import HUB, DataError

log = logging.getLogger(__name__)


def large_model_split(
    train_pool: Sequence[Example],
    validation: Sequence[Example],
    num_train: int,
    num_dev: int,
    num_eval: int,
    seed: int,
) -> tuple[list[Example], list[Example], list[Example], list[str]]:
    """MeZO's protocol: a seeded permutation of train gives train + dev (dev = the last num_dev);
    test is num_eval examples of the official validation split drawn with the same seed."""
    notes = []
    wanted = num_train + num_dev
    order = np.random.RandomState(seed).permutation(len(train_pool))[:wanted]
    if len(order) < wanted:
        kept_train, kept_dev = max(len(order) - num_dev, 0), min(num_dev, len(order))
        note = (
            f"train split has {len(train_pool)} examples, fewer than num_train + num_dev = {wanted}; "
            f"using {kept_train} train / {kept_dev} dev as MeZO does"
        )
        if kept_train < kept_dev:  # WSC: 54 train / 500 dev
            note += f"; for a saner split lower task.num_dev (e.g. task.num_dev={len(order) // 5})"
            note = DataWarning(note)
        notes.append(note)
    drawn = [train_pool[i] for i in order]
    cut = max(len(drawn) - num_dev, 0)
    train, dev = drawn[:cut], drawn[cut:]
    test_order = np.random.RandomState(seed).permutation(len(validation))[:num_eval]
    if len(test_order) < num_eval:
        notes.append(
            f"test capped by the validation split: {len(validation)} < num_eval={num_eval}"
        )
    test = [validation[i] for i in test_order]
    return train, dev, test, notes


def kshot_split(
    train_pool: Sequence[Example],
    test_pool: Sequence[Example],
    k: int,
    seed: int,
    test_cap: int = 1000,
) -> tuple[list[Example], list[Example], list[Example], list[str]]:
    """LM-BFF's protocol: shuffle train with `seed`; the first k of each label are train, the next
    k of each label dev; test is the official evaluation set shuffled with seed 42, capped."""
    by_label: dict[int, list[Example]] = defaultdict(list)
    for i in np.random.RandomState(seed).permutation(len(train_pool)):
        by_label[train_pool[i].label].append(train_pool[i])
    notes = []
    train, dev = [], []
    for label in sorted(by_label):
        pool = by_label[label]
        if len(pool) < 2 * k:
            notes.append(
                DataWarning(
                    f"label {label} has {len(pool)} train examples, fewer than 2k = {2 * k}: "
                    "its train and dev examples are fewer than k (lower task.k)"
                )
            )
        train.extend(pool[:k])
        dev.extend(pool[k : 2 * k])
    return train, dev, capped_test(test_pool, test_cap), notes


def capped_test(pool: Sequence[Example], cap: int) -> list[Example]:
    """LM-BFF's test set: the evaluation set shuffled with seed 42, at most `cap` examples."""
    return [pool[i] for i in np.random.RandomState(42).permutation(len(pool))[:cap]]


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """task.data_dir, else $ZOFT_DATA, else None (the hub); "hub" forces the hub."""
    chosen = data_dir or os.environ.get("ZOFT_DATA") or None
    if chosen is None or chosen == HUB:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(
            f"task.data_dir / ZOFT_DATA points at {path}, which is not a directory; give the folder "
            "laid out like ../shared/data (superglue/, glue/, squad/, k-shot/)."
        )
    return path


def data_source(task: Task, data_dir: Path | None) -> str:
    """Where a run's data comes from, as result.json's `data_source` records it: the local data
    root, or the hub dataset."""
    return str(data_dir) if data_dir else f"hub:{task.hub_path}/{task.hub_config or ''}"


def official_split(task: Task, cfg: Any, split: str) -> list[Example]:
    """The whole official `split` ("train" or "validation") from where cfg.data_dir says, e.g.
    the pool MeZO draws ICL demonstrations from (not the run's train subset)."""
    data_dir = resolve_data_dir(cfg.data_dir)
    return task.load_local(split, data_dir) if data_dir else task.load_hub(split)


def load_splits(task: Task, cfg: Any, data_seed: int) -> Splits:
    """Train / dev / test for one run, following cfg.protocol."""
    data_dir = resolve_data_dir(cfg.data_dir)
    source = data_source(task, data_dir)
    protocol = enum_value(cfg.protocol)

    notes: list[str] = []

    def official(split: str) -> list[Example]:
        if not data_dir:
            return with_row_ids(task.load_hub(split))
        if split in task.local_notes and task.local_notes[split] not in notes:
            notes.append(task.local_notes[split])
        return with_row_ids(task.load_local(split, data_dir))

    if protocol == "kshot":
        ready = task.load_kshot_ready(data_dir, cfg.k, data_seed) if data_dir else None
        if ready is not None:
            pool = ready["test"] if "test" in ready else official("validation")
            notes.append(f"ready LM-BFF split k-shot/{task.kshot_dir}/{cfg.k}-{data_seed}")
            _log_notes(task, notes)
            test = capped_test(pool, cfg.kshot_test_cap)
            return Splits(ready["train"], ready["dev"], test, source, notes)
        train, dev, test, split_notes = kshot_split(
            official("train"), official("validation"), cfg.k, data_seed, cfg.kshot_test_cap
        )
    else:
        train, dev, test, split_notes = large_model_split(
            official("train"),
            official("validation"),
            cfg.num_train,
            cfg.num_dev,
            cfg.num_eval,
            data_seed,
        )
    notes.extend(split_notes)
    _log_notes(task, notes)
    return Splits(train, dev, test, source, notes)


class DataWarning(str):
    """A data note that asks the user to act (a split too small for what was asked, with the
    fix): logged as a WARNING. Every other note (where the data came from, a local file's known
    differences, the protocol's usual caps) is a fact recorded in result.json's data_notes and
    logged at INFO, so a normal run prints no warning."""


def _log_notes(task: Task, notes: list[str]) -> None:
    for note in notes:
        level = logging.WARNING if isinstance(note, DataWarning) else logging.INFO
        log.log(level, "%s: %s", task.name, note)

"""What every task provides: local and hub loading, prompts for each model kind, its metric."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from zoft.registry import Registry
from zoft.tasks.io import DataError, note_absent, note_hub, parse_label, read_tsv

log = logging.getLogger(__name__)

MASK = "<mask>"  # placeholder in masked-LM templates; the scorer swaps in the tokenizer's token


@dataclass(frozen=True)
class Example:
    fields: dict[str, Any]
    label: int  # index into the task's label_names (or its candidates)
    # the example's id in the official file (SuperGLUE's `idx`, else its 0-based data row), so
    # predictions.jsonl can be matched example by example against another scorer
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CausalPrompt:
    """A prompt and the options appended to it; the prediction is the best-scored option."""

    prompt: str
    options: tuple[str, ...]
    gold: int
    objective: str = "classification"  # "classification": CE over options; "lm": CE on gold tokens

    @property
    def size(self) -> int:
        """Characters of the longest row, to batch similar lengths together."""
        return len(self.prompt) + max(len(o) for o in self.options)


class PartwiseTemplate(Protocol):
    """What a masked prompt needs of its template (zoft.tasks.lmbff.LmBffTemplate): the ids and
    mask position of its sentences, encoded part by part."""

    def encode(
        self, tokenizer: Any, sentences: Sequence[str], max_length: int
    ) -> tuple[list[int], int]: ...


@dataclass(frozen=True)
class MaskedPrompt:
    text: str  # contains MASK once
    label_words: tuple[str, ...]  # each with its leading space, one token each
    gold: int
    # the LM-BFF template `text` was rendered from, and its sentences: masked LMs encode the
    # template part by part, as LM-BFF does (built by LmBffTemplate.prompt)
    template: PartwiseTemplate
    sentences: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class PairInput:
    text: str
    text_pair: str | None
    gold: int

    @property
    def size(self) -> int:
        return len(self.text) + len(self.text_pair or "")


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    source: str
    notes: list[str] = field(default_factory=list)


TASKS: Registry = Registry("task")
PARQUET_BRANCH = "refs/convert/parquet"  # the hub's automatic Parquet export of every dataset


def hub_location(repo: str) -> str:
    """Where load_dataset finds a hub repository: its id (tests point it at a local mock)."""
    return repo


class Task(ABC):
    """A task: subclasses set the class attributes and implement the row parsers."""

    name: ClassVar[str]
    label_names: ClassVar[tuple[str, ...]]
    metric: ClassVar[str] = "accuracy"
    # bumped when the task's prompts, data or scoring change what a run computes: a revision
    # other than 1 enters the config digest, so runs of the earlier revision are not reused
    revision: ClassVar[int] = 1
    generative: ClassVar[bool] = False  # answers are generated text (SQuAD, DROP)
    has_candidates: ClassVar[bool] = False  # options come with each example (COPA, ReCoRD)
    # The hub rows are read from the repository's Parquet branch, where every dataset (script
    # or not) is laid out as <config>/<split>/NNNN.parquet; datasets>=4 runs no loading scripts
    hub_path: ClassVar[str]
    hub_config: ClassVar[str] = "default"  # the config's folder on that branch
    hub_revision: ClassVar[str] = PARQUET_BRANCH
    hub_splits: ClassVar[dict[str, str]] = {"train": "train", "validation": "validation"}
    # what the local files of ../shared/data lack, by split; copied into every result
    local_notes: ClassVar[dict[str, str]] = {}
    kshot_dir: ClassVar[str | None] = None  # folder under <data_dir>/k-shot/ (LM-BFF layout)
    kshot_files: ClassVar[dict[str, str]] = {
        "train": "train.tsv",
        "dev": "dev.tsv",
        "test": "test.tsv",
    }
    # template name -> function(task, example); "mezo" is the papers' prompt
    causal_templates: ClassVar[dict[str, Callable[[Any, Example], CausalPrompt]]] = {}
    masked_max_length: ClassVar[int] = 128  # LM-BFF: 128 tokens, 256 for NLI tasks

    # --- loading -------------------------------------------------------------------------
    @abstractmethod
    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        """Read the official `split` ("train" or "validation") from a local data root."""

    @abstractmethod
    def from_hub_row(self, row: dict[str, Any]) -> Example | None:
        """Turn one row of the hub dataset into an Example (None drops an unlabelled row)."""

    def kshot_row(self, row: dict[str, str], path: Path, line: int) -> Example:
        """Parse one row of a ready LM-BFF k-shot file (label in the last field)."""
        raise DataError(f"task {self.name} has no reader for LM-BFF k-shot files ({path})")

    def hub_data_files(self, hub_split: str) -> str:
        """The files of one split on the Parquet branch."""
        return f"{self.hub_config}/{hub_split}/*.parquet"

    def load_hub(self, split: str) -> list[Example]:
        import datasets

        hub_split = self.hub_splits[split]
        note_hub(self.hub_path, self.hub_config, self.hub_revision, self.hub_data_files(hub_split))
        try:
            rows = datasets.load_dataset(
                hub_location(self.hub_path),
                data_files={hub_split: self.hub_data_files(hub_split)},
                split=hub_split,
                revision=self.hub_revision,
            )
        except Exception as err:  # datasets raises many types for "offline" / "not found"
            raise DataError(
                f"Could not load task '{self.name}' split '{hub_split}' from the hub "
                f"({self.hub_path}, {self.hub_config}): {err}\nWithout network, set task.data_dir "
                "(or ZOFT_DATA) to a local copy laid out like ../shared/data."
            ) from err
        examples = (self.from_hub_row(dict(row)) for row in rows)
        return [ex for ex in examples if ex is not None]

    def read_kshot_file(self, path: Path) -> list[Example]:
        """One file of a ready LM-BFF split (headed TSV by default)."""
        return [self.kshot_row(row, path, n) for n, row in read_tsv(path)]

    def load_kshot_ready(
        self, data_dir: Path, k: int, seed: int
    ) -> dict[str, list[Example]] | None:
        """The ready LM-BFF split <TASK>/<k>-<seed>/ if it exists locally, else None. A split
        without a test file (MNLI, SNLI) leaves "test" out: the official evaluation set is used."""
        if self.kshot_dir is None:
            return None
        folder = data_dir / "k-shot" / self.kshot_dir / f"{k}-{seed}"
        if not folder.is_dir():
            note_absent(folder)
            return None
        return {
            split: with_row_ids(self.read_kshot_file(folder / filename))
            for split, filename in self.kshot_files.items()
        }

    # --- prompts -------------------------------------------------------------------------
    def causal_prompt(self, example: Example, template: str) -> CausalPrompt:
        if template not in self.causal_templates:
            raise DataError(
                f"task {self.name} has no causal-LM template '{template}'; "
                f"choose task.template from {sorted(self.causal_templates)}"
            )
        return self.causal_templates[template](self, example)

    def masked_prompt(self, example: Example) -> MaskedPrompt:
        raise DataError(
            f"task {self.name} has no masked-LM (LM-BFF) template; the RoBERTa tables use SST-2, "
            "SST-5, SNLI, MNLI, RTE and TREC. Use a causal LM (e.g. model=smollm2-135m)."
        )

    def pair_input(self, example: Example) -> PairInput:
        """Plain text (and text pair) for an encoder with a classification head."""
        raise DataError(
            f"task {self.name} cannot be scored by a classification head (its answers are "
            "candidates or generated text); use a causal LM (e.g. model=smollm2-135m)."
        )

    # --- metric --------------------------------------------------------------------------
    def score(self, predictions: Sequence[int], examples: Sequence[Example]) -> dict[str, float]:
        if not examples:
            return {self.metric: float("nan")}
        correct = sum(int(p == e.label) for p, e in zip(predictions, examples, strict=True))
        return {self.metric: correct / len(examples)}


def with_row_ids(examples: Sequence[Example]) -> list[Example]:
    """Examples without an official id get their 0-based row in the list read from the file."""
    return [ex if ex.id is not None else replace(ex, id=n) for n, ex in enumerate(examples)]


def label_map(task: type[Task] | Task) -> dict[str, int]:
    return {name: i for i, name in enumerate(task.label_names)}


def tsv_examples(path: Path, text_columns: dict[str, str], labels: dict[Any, int]) -> list[Example]:
    """Examples of a headed TSV: `text_columns` maps Example field -> column; label is `label`."""
    return [
        Example(
            fields={f: row[c] for f, c in text_columns.items()},
            label=parse_label(row["__last__"], labels, path, n),
        )
        for n, row in read_tsv(path, required=tuple(text_columns.values()))
    ]


def causal_from_masked(masked: MaskedPrompt) -> CausalPrompt:
    """An LM-BFF template read left to right by a causal LM: the text before <mask> is the
    prompt, each option is a label word followed by the rest of the template."""
    before, after = masked.text.split(MASK, 1)
    options = tuple(f"{word}{after}" for word in masked.label_words)
    if not before:  # nothing precedes the label (TREC): the option starts the text
        options = tuple(o.lstrip() for o in options)
    return CausalPrompt(before, options, masked.gold)


def first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def lmbff_causal(task: Task, ex: Example) -> CausalPrompt:
    """The causal prompt of a task whose paper prompt is LM-BFF's masked template."""
    return causal_from_masked(task.masked_prompt(ex))

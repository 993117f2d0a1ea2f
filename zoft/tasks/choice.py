"""Tasks whose candidates come with each example and are scored as text: COPA and ReCoRD.
Trained with the LM loss on the gold option (DESIGN §5.3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoft.tasks.base import TASKS, CausalPrompt, Example, Task
from zoft.tasks.io import DataError, parse_label
from zoft.tasks.superglue import superglue_rows


def _copa_choice(choice: str) -> str:
    """MeZO lower-cases the choice's first word, except the pronoun "I"."""
    first, _, rest = choice.partition(" ")
    if first != "I":
        first = first.lower()
    return f"{first} {rest}" if rest else first


def _copa_mezo(task: Task, ex: Example) -> CausalPrompt:
    """premise + " so " / " because " + choice; the scorer strips the trailing space as MeZO
    does, so the space joins the choice's first word (" so" + " the ...")."""
    premise = ex.fields["premise"].rstrip()
    premise = premise[:-1] if premise.endswith(".") else premise
    conjunction = {"effect": " so ", "cause": " because "}[ex.fields["question"]]
    options = tuple(_copa_choice(c) for c in ex.fields["candidates"])
    return CausalPrompt(premise + conjunction, options, ex.label, objective="lm")


@TASKS.register("copa")
class COPA(Task):
    name = "copa"
    label_names = ("choice1", "choice2")
    # 2: MeZO's space strip, so the first word of each choice is scored (" so the ...")
    revision = 2
    has_candidates = True
    hub_path = "aps/super_glue"
    hub_config = "copa"
    causal_templates = {"mezo": _copa_mezo}

    @staticmethod
    def _example(row: dict[str, Any], label: int) -> Example:
        if row["question"] not in ("cause", "effect"):
            raise DataError(f"COPA question must be 'cause' or 'effect', got {row['question']!r}")
        fields = {
            "premise": row["premise"],
            "question": row["question"],
            "candidates": (row["choice1"], row["choice2"]),
        }
        return Example(fields, label, id=row.get("idx"))

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        keys = ("premise", "choice1", "choice2", "question", "label")
        return [
            self._example(row, parse_label(row["label"], {0: 0, 1: 1}, path, line))
            for path, line, row in superglue_rows(data_dir, "COPA", split, keys)
        ]

    def from_hub_row(self, row: dict[str, Any]) -> Example | None:
        return None if int(row["label"]) < 0 else self._example(row, int(row["label"]))


def _record_mezo(task: Task, ex: Example) -> CausalPrompt:
    """MeZO's GPT-3-style ReCoRD prompt: highlights become "- " bullets, the query is the last
    bullet with the candidate in place of @placeholder."""
    passage = ex.fields["passage"].replace("@highlight\n", "- ")
    query = ex.fields["query"]
    options = tuple(f" {query.replace('@placeholder', c)}" for c in ex.fields["candidates"])
    return CausalPrompt(f"{passage}\n-", options, ex.label, objective="lm")


def record_example(passage: str, query: str, entities: Sequence[str], answers: Sequence[str]):
    """Candidates are the distinct entity strings and answers the distinct gold strings, both
    sorted as the hub has them; the training target is the first sorted answer (MeZO's
    `correct_candidate[0]`), and any gold answer counts as correct."""
    gold = tuple(sorted(set(answers)))
    candidates = tuple(sorted(set(entities) | set(gold)))
    fields = {"passage": passage, "query": query, "candidates": candidates, "answers": gold}
    return Example(fields, candidates.index(gold[0]) if gold else 0)


@TASKS.register("record")
class ReCoRD(Task):
    name = "record"
    label_names = ("candidate",)
    has_candidates = True
    hub_path = "aps/super_glue"
    hub_config = "record"
    causal_templates = {"mezo": _record_mezo}
    local_notes = {
        "train": "local ReCoRD train is a subset: 32 FewGLUE queries of the official 100,730",
        "validation": "local ReCoRD evaluation is FewGLUE's dev32: 32 queries drawn from the "
        "official TRAIN split; the official validation (10,000 queries) is not local",
    }

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        examples = []
        for path, line, row in superglue_rows(data_dir, "ReCoRD", split, ("passage", "qas")):
            try:
                text = row["passage"]["text"]
                entities = [text[e["start"] : e["end"] + 1] for e in row["passage"]["entities"]]
                for qa in row["qas"]:
                    answers = [a["text"] for a in qa["answers"]]
                    examples.append(record_example(text, qa["query"], entities, answers))
            except (KeyError, TypeError) as err:
                raise DataError(
                    f"{path}, line {line}: not a ReCoRD record (passage.text, passage.entities, "
                    f"qas[].query, qas[].answers): missing {err}"
                ) from err
        return examples

    def from_hub_row(self, row: dict[str, Any]) -> Example | None:
        if not row["answers"]:  # the hub's unlabelled test rows
            return None
        return record_example(row["passage"], row["query"], row["entities"], row["answers"])

    def score(self, predictions: Sequence[int], examples: Sequence[Example]) -> dict[str, float]:
        if not examples:
            return {self.metric: float("nan")}
        hits = sum(
            ex.fields["candidates"][p] in ex.fields["answers"]
            for p, ex in zip(predictions, examples, strict=True)
        )
        return {self.metric: hits / len(examples)}

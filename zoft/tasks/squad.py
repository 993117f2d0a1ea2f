"""Generative question answering: SQuAD v1.1 and DROP. Greedy answers are scored with SQuAD's
token F1 (and EM), the best over the gold answers; training uses the LM loss on ` {answer}\\n`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoft.tasks.base import TASKS, CausalPrompt, Example, Task
from zoft.tasks.io import DataError, read_json
from zoft.tasks.metrics import best_over_golds


class GenerativeQA(Task):
    """Examples carry their gold `answers`; the prediction is generated text."""

    label_names = ("answer",)
    metric = "f1"
    generative = True

    def score(self, predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        if not examples:
            return {"f1": float("nan"), "em": float("nan")}
        per_example = [
            best_over_golds(p, ex.fields["answers"])
            for p, ex in zip(predictions, examples, strict=True)
        ]
        return {k: sum(s[k] for s in per_example) / len(per_example) for k in ("f1", "em")}


def _answer_target(ex: Example) -> tuple[str, ...]:
    return (f" {ex.fields['answers'][0]}\n",)


def _squad_mezo(task: Task, ex: Example) -> CausalPrompt:
    f = ex.fields
    prompt = f"Title: {f['title']}\nContext: {f['context']}\nQuestion: {f['question']}\nAnswer:"
    return CausalPrompt(prompt, _answer_target(ex), 0, objective="lm")


def _squad_example(title: str, context: str, question: str, answers: Sequence[str]) -> Example:
    fields = {
        "title": title,
        "context": context,
        "question": question.strip(),
        "answers": tuple(answers),
    }
    return Example(fields, 0)


@TASKS.register("squad")
class SQuAD(GenerativeQA):
    name = "squad"
    hub_path = "rajpurkar/squad"
    hub_config = "plain_text"
    causal_templates = {"mezo": _squad_mezo}
    local_notes = {
        "train": "local SQuAD train is a subset: the first 12 articles (4,370 of 87,599 questions)",
        "validation": "local SQuAD dev orders its 48 articles differently from the official "
        "dev-v1.1.json (and rajpurkar/squad), so a seeded subset of it (e.g. MeZO's seed-0 1,000 "
        "questions) holds other questions than MeZO's",
    }
    _files = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        path = data_dir / "squad" / self._files[split]
        document = read_json(path)
        examples = []
        try:
            for article in document["data"]:
                for paragraph in article["paragraphs"]:
                    for qa in paragraph["qas"]:
                        answers = [a["text"] for a in qa["answers"]]
                        if not answers:
                            raise DataError(f"{path}: question {qa.get('id')} has no answers")
                        examples.append(
                            _squad_example(
                                article["title"], paragraph["context"], qa["question"], answers
                            )
                        )
        except (KeyError, TypeError) as err:
            raise DataError(
                f"{path}: not SQuAD v1.1 JSON (data[].paragraphs[].qas[].answers[].text): "
                f"missing {err}"
            ) from err
        return examples

    def from_hub_row(self, row: dict[str, Any]) -> Example:
        answers = row["answers"]["text"]
        return _squad_example(row["title"], row["context"], row["question"], answers)


def _drop_mezo(task: Task, ex: Example) -> CausalPrompt:
    f = ex.fields
    prompt = f"Passage: {f['passage']}\nQuestion: {f['question']}\nAnswer:"
    return CausalPrompt(prompt, _answer_target(ex), 0, objective="lm")


class InconsistentDropAnswer(ValueError):
    """An answer that fills more than one of number / date / spans; HF's loader drops its QA."""


def drop_answer_texts(answer: dict[str, Any]) -> list[str]:
    """The gold strings of one answer of the official DROP JSON, as HF's drop loader builds
    `answers_spans`: its number, or its date as " ".join([day, month, year]).strip() (empty
    parts kept, so a missing month leaves two spaces), or each of its spans separately."""
    number = answer.get("number", "")
    date = answer.get("date") or {}
    parts = [str(date.get(k, "")) for k in ("day", "month", "year")]
    spans = list(answer.get("spans") or [])
    filled = [bool(number != ""), any(parts), bool(spans)]
    if sum(filled) > 1:
        raise InconsistentDropAnswer(f"answer fills more than one of number/date/spans: {answer}")
    if number != "":
        return [str(number)]
    if any(parts):
        return [" ".join(parts).strip()]
    return spans


def drop_golds(qa: dict[str, Any], split: str) -> list[str]:
    """HF ucinlp/drop's golds: train uses the original `answer`, validation only the
    `validated_answers` (not the original answer); duplicates are kept, and a QA with an
    inconsistent answer gets none (it is dropped)."""
    answers = [qa["answer"]] if split == "train" else list(qa.get("validated_answers") or [])
    try:
        return [text for answer in answers for text in drop_answer_texts(answer)]
    except InconsistentDropAnswer:
        return []


@TASKS.register("drop")
class DROP(GenerativeQA):
    name = "drop"
    hub_path = "ucinlp/drop"
    revision = 2  # local validation golds: validated answers only, as HF's loader builds them
    causal_templates = {"mezo": _drop_mezo}
    _files = {"train": "drop_dataset_train.json", "validation": "drop_dataset_dev.json"}

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        """The official DROP release: {passage_id: {passage, qa_pairs: [{question, answer,
        validated_answers}]}} in <data_dir>/drop/ (../shared/data has no DROP)."""
        path = data_dir / "drop" / self._files[split]
        if not path.is_file():
            raise DataError(
                f"No local DROP data: {path} does not exist (../shared/data has no DROP). Put the "
                "official drop_dataset_{train,dev}.json there, or load ucinlp/drop from the hub "
                "with task.data_dir=hub."
            )
        examples = []
        try:
            for passage in read_json(path).values():
                for qa in passage["qa_pairs"]:
                    golds = drop_golds(qa, split)
                    if golds:
                        examples.append(_drop_example(passage["passage"], qa["question"], golds))
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(
                f"{path}: not the official DROP JSON (passage, qa_pairs[].question, "
                f"qa_pairs[].answer): missing {err}"
            ) from err
        return examples

    def from_hub_row(self, row: dict[str, Any]) -> Example | None:
        spans = list(row["answers_spans"]["spans"])
        return _drop_example(row["passage"], row["question"], spans) if spans else None


def _drop_example(passage: str, question: str, answers: Sequence[str]) -> Example:
    return Example({"passage": passage, "question": question.strip(), "answers": tuple(answers)}, 0)

"""SuperGLUE binary and three-way classification in the official jsonl format: RTE, CB, BoolQ,
WiC, WSC and MultiRC (one example per paragraph, question and answer)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from zoft.tasks.base import (
    TASKS,
    CausalPrompt,
    Example,
    MaskedPrompt,
    PairInput,
    Task,
    first_upper,
    label_map,
)
from zoft.tasks.io import DataError, parse_label, read_jsonl_numbered, require_keys
from zoft.tasks.nli import RTE_LMBFF

_SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl"}
_BOOL_LABELS = {False: 0, True: 1}


def superglue_path(data_dir: Path, task_dir: str, split: str) -> Path:
    return data_dir / "superglue" / task_dir / _SPLIT_FILES[split]


def superglue_rows(
    data_dir: Path, task_dir: str, split: str, keys: tuple[str, ...]
) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(path, line, row) of a SuperGLUE jsonl split, each row checked for `keys`."""
    path = superglue_path(data_dir, task_dir, split)
    for line, row in read_jsonl_numbered(path):
        require_keys(row, keys, path, line)
        yield path, line, row


class SuperGlueTask(Task):
    """A flat SuperGLUE task: `fields` are copied from each row, `label` is parsed by name."""

    hub_path = "aps/super_glue"
    local_dir: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    raw_labels: ClassVar[dict[Any, int]]  # label as written in the jsonl -> index

    def row_fields(self, row: dict[str, Any]) -> dict[str, Any]:
        return {f: row[f] for f in self.fields}

    def local_keys(self) -> tuple[str, ...]:
        """Keys every row of the local jsonl must have."""
        return (*self.fields, "label")

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        return [
            Example(
                self.row_fields(row),
                parse_label(row["label"], self.raw_labels, path, line),
                id=row.get("idx"),
            )
            for path, line, row in superglue_rows(
                data_dir, self.local_dir, split, self.local_keys()
            )
        ]

    def from_hub_row(self, row: dict[str, Any]) -> Example | None:
        if int(row["label"]) < 0:  # the hub's unlabelled test rows
            return None
        return Example(self.row_fields(row), int(row["label"]), id=row.get("idx"))


def yes_no(
    build: Callable[[dict[str, Any]], str], words: tuple[str, ...] = ("No", "Yes")
) -> Callable[[Task, Example], CausalPrompt]:
    """A MeZO template: a prompt built from the fields, the label words as options."""
    return lambda task, ex: CausalPrompt(build(ex.fields), words, ex.label)


@TASKS.register("rte")
class RTE(SuperGlueTask):
    name = "rte"
    label_names = ("entailment", "not_entailment")
    hub_config = "rte"
    local_dir = "RTE"
    fields = ("premise", "hypothesis")
    raw_labels = {"entailment": 0, "not_entailment": 1}
    kshot_dir = "RTE"
    masked_max_length = 256
    causal_templates = {
        "mezo": yes_no(
            lambda f: (
                f'{f["premise"]}\nDoes this mean that "{f["hypothesis"]}" is true? Yes or No?\n'
            ),
            ("Yes", "No"),
        )
    }

    def kshot_row(self, row: dict[str, str], path: Path, line: int) -> Example:
        fields = {"premise": row["sentence1"], "hypothesis": row["sentence2"]}
        return Example(fields, parse_label(row["__last__"], label_map(self), path, line))

    def masked_prompt(self, ex: Example) -> MaskedPrompt:
        return RTE_LMBFF.prompt((ex.fields["premise"], ex.fields["hypothesis"]), ex.label)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["premise"], ex.fields["hypothesis"], ex.label)


@TASKS.register("cb")
class CB(SuperGlueTask):
    name = "cb"
    label_names = ("entailment", "contradiction", "neutral")  # the hub's integer order
    hub_config = "cb"
    local_dir = "CB"
    fields = ("premise", "hypothesis")
    raw_labels = {"entailment": 0, "contradiction": 1, "neutral": 2}
    causal_templates = {
        "mezo": yes_no(
            lambda f: (
                f'Suppose {f["premise"]} Can we infer that "{f["hypothesis"]}"? '
                "Yes, No, or Maybe?\n"
            ),
            ("Yes", "No", "Maybe"),
        )
    }

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["premise"], ex.fields["hypothesis"], ex.label)


TITLE_SEPARATOR = " -- "  # SuperGLUE's BoolQ passages are "<title> -- <passage>"


def _boolq_question(f: dict[str, Any]) -> str:
    question = f["question"] if f["question"].endswith("?") else f"{f['question']}?"
    return first_upper(question)


def _boolq_prompt(f: dict[str, Any]) -> str:
    """MeZO's BoolQTemplateV3 on google/boolq, whose passages carry no title."""
    return f"{f['passage']} {_boolq_question(f)}\n"


def _boolq_titled_prompt(f: dict[str, Any]) -> str:
    """The same prompt on SuperGLUE's passages, title kept in front."""
    return f"{_titled_passage(f)} {_boolq_question(f)}\n"


def _titled_passage(f: dict[str, Any]) -> str:
    return f"{f['title']}{TITLE_SEPARATOR}{f['passage']}" if f["title"] else f["passage"]


def boolq_fields(row: dict[str, Any]) -> dict[str, Any]:
    """question, title and passage apart: from google/boolq's own title column, or split off
    the front of a SuperGLUE passage ("<title> -- <passage>")."""
    if "title" in row:
        title, passage = row["title"], row["passage"]
    else:
        title, sep, rest = row["passage"].partition(TITLE_SEPARATOR)
        title, passage = (title, rest) if sep else ("", row["passage"])
    return {"question": row["question"], "title": title, "passage": passage}


@TASKS.register("boolq")
class BoolQ(SuperGlueTask):
    name = "boolq"
    label_names = ("False", "True")
    hub_path = "google/boolq"  # MeZO's load_dataset("boolq"), not super_glue's copy
    # 2: the MeZO prompt drops SuperGLUE's passage title (google/boolq has none)
    revision = 2
    local_dir = "BoolQ"
    fields = ("question", "passage")
    raw_labels = _BOOL_LABELS
    causal_templates = {"mezo": yes_no(_boolq_prompt), "titled": yes_no(_boolq_titled_prompt)}
    local_notes = {
        "train": "local BoolQ train is a subset: the 32 FewGLUE examples of the official 9,427",
    }

    def from_hub_row(self, row: dict[str, Any]) -> Example:
        """google/boolq rows: question, passage and a bool `answer` (no title, no label)."""
        return Example(self.row_fields(row), int(bool(row["answer"])))

    def row_fields(self, row: dict[str, Any]) -> dict[str, Any]:
        return boolq_fields(row)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["question"], _titled_passage(ex.fields), ex.label)


@TASKS.register("wic")
class WiC(SuperGlueTask):
    name = "wic"
    label_names = ("False", "True")
    hub_config = "wic"
    local_dir = "WiC"
    fields = ("word", "sentence1", "sentence2")
    raw_labels = _BOOL_LABELS
    causal_templates = {
        "mezo": yes_no(
            lambda f: (
                f'Does the word "{f["word"]}" have the same meaning in these two sentences? '
                f"Yes, No?\n{f['sentence1']}\n{f['sentence2']}\n"
            )
        )
    }

    def pair_input(self, ex: Example) -> PairInput:
        f = ex.fields
        return PairInput(f"{f['word']}: {f['sentence1']}", f["sentence2"], ex.label)


# Spans wsc.fixed leaves alone: their words are not contiguous in the text.
_UNFIXABLE_WSC_SPANS = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")


def fix_wsc_spans(ex: dict[str, Any]) -> dict[str, Any]:
    """The spans of the hub's `wsc.fixed` config (MeZO's WSC): a span that is not a substring
    of the text gets the case of the text's word at its index, loses its trailing periods and
    has newlines turned into spaces. As upstream, a "theyscold" span sets span2_index to 10
    and the text itself is never changed (upstream's replace is discarded)."""
    ex = dict(ex)
    for span in ("span1", "span2"):
        text, index = ex[f"{span}_text"], ex[f"{span}_index"]
        if text in ex["text"] or text in _UNFIXABLE_WSC_SPANS:
            continue
        if index is None:
            raise DataError(f"WSC span {text!r} is not in its text and has no word index")
        if "theyscold" in text:
            ex["span2_index"] = 10
        word = ex["text"].split()[index]
        text = (text[:1].lower() if word[0].islower() else text[:1].upper()) + text[1:]
        text = text.rstrip(".").replace("\n", " ")
        if text not in ex["text"]:
            raise DataError(f"WSC span {text!r} is not in its text even after the fix")
        ex[f"{span}_text"] = text
    return ex


@TASKS.register("wsc")
class WSC(SuperGlueTask):
    name = "wsc"
    revision = 2  # 2: spans fixed as wsc.fixed fixes them
    label_names = ("False", "True")
    hub_config = "wsc.fixed"
    local_dir = "WSC"
    fields = ("text", "span1_text", "span2_text")
    raw_labels = _BOOL_LABELS
    causal_templates = {
        "mezo": yes_no(
            lambda f: (
                f"{f['text']}\nIn the previous sentence, does the pronoun "
                f'"{f["span2_text"].lower()}" refer to {f["span1_text"]}? Yes or No?\n'
            )
        )
    }

    def row_fields(self, row: dict[str, Any]) -> dict[str, Any]:
        """The text and its two spans, fixed as the hub's wsc.fixed config fixes them."""
        spans = row.get("target", row)  # local jsonl nests the spans; the hub row is flat
        fixed = fix_wsc_spans(
            {
                "text": row["text"],
                **{k: spans[k] for k in ("span1_text", "span2_text")},
                **{k: spans.get(k) for k in ("span1_index", "span2_index")},
            }
        )
        return {k: fixed[k] for k in ("text", "span1_text", "span2_text")}

    def local_keys(self) -> tuple[str, ...]:
        return ("text", "target", "label")

    def pair_input(self, ex: Example) -> PairInput:
        f = ex.fields
        return PairInput(f["text"], f"{f['span2_text']} -> {f['span1_text']}", ex.label)


@TASKS.register("multirc")
class MultiRC(SuperGlueTask):
    name = "multirc"
    label_names = ("False", "True")
    revision = 2  # 2: MeZO's space strip (some paragraphs start with a space)
    hub_config = "multirc"
    local_dir = "MultiRC"
    fields = ("paragraph", "question", "answer")
    raw_labels = {0: 0, 1: 1}
    causal_templates = {
        "mezo": yes_no(
            lambda f: (
                f"{f['paragraph']}\nQuestion: {f['question']}\nI found this answer "
                f'"{f["answer"]}". Is that correct? Yes or No?\n'
            )
        )
    }

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        """The official file nests answers in questions in passages: one example per answer."""
        examples = []
        for path, line, row in superglue_rows(data_dir, self.local_dir, split, ("passage",)):
            try:
                paragraph = row["passage"]["text"]
                for question in row["passage"]["questions"]:
                    for answer in question["answers"]:
                        label = parse_label(answer["label"], self.raw_labels, path, line)
                        fields = {
                            "paragraph": paragraph,
                            "question": question["question"],
                            "answer": answer["text"],
                        }
                        examples.append(Example(fields, label))
            except (KeyError, TypeError) as err:
                raise DataError(
                    f"{path}, line {line}: not a MultiRC passage "
                    f"(passage.text / questions / answers): missing {err}"
                ) from err
        return examples

    def pair_input(self, ex: Example) -> PairInput:
        f = ex.fields
        return PairInput(f["paragraph"], f"{f['question']} {f['answer']}", ex.label)

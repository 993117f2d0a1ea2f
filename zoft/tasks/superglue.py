"""SuperGLUE tasks in the official jsonl format: RTE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoft.tasks import TASKS
from zoft.tasks.base import MASK, CausalPrompt, Example, MaskedPrompt, PairInput, Task, label_map
from zoft.tasks.io import parse_label, read_jsonl, require_keys

_SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl"}


def superglue_path(data_dir: Path, task_dir: str, split: str) -> Path:
    return data_dir / "superglue" / task_dir / _SPLIT_FILES[split]


def nli_masked_text(premise: str, hypothesis: str) -> str:
    """LM-BFF's NLI template: `{premise without last char}?<mask>, {hypothesis, first letter lower}`."""
    hypothesis = hypothesis[:1].lower() + hypothesis[1:]
    return f"{premise[:-1]}?{MASK}, {hypothesis}"


def _rte_mezo(ex: Example) -> CausalPrompt:
    prompt = (
        f'{ex.fields["premise"]}\nDoes this mean that "{ex.fields["hypothesis"]}" is true? '
        "Yes or No?\n"
    )
    return CausalPrompt(prompt, ("Yes", "No"), ex.label)


@TASKS.register("rte")
class RTE(Task):
    name = "rte"
    label_names = ("entailment", "not_entailment")
    hub_path = "aps/super_glue"
    hub_config = "rte"
    kshot_dir = "RTE"
    masked_max_length = 256
    causal_templates = {"mezo": _rte_mezo}

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        path = superglue_path(data_dir, "RTE", split)
        labels = label_map(self)
        examples = []
        for line, row in enumerate(read_jsonl(path), start=1):
            require_keys(row, ("premise", "hypothesis", "label"), path, line)
            fields = {"premise": row["premise"], "hypothesis": row["hypothesis"]}
            examples.append(Example(fields, parse_label(row["label"], labels, path, line)))
        return examples

    def from_hub_row(self, row: dict[str, Any]) -> Example:
        return Example(
            {"premise": row["premise"], "hypothesis": row["hypothesis"]}, int(row["label"])
        )

    def kshot_row(self, row: dict[str, str], path: Path, line: int) -> Example:
        fields = {"premise": row["sentence1"], "hypothesis": row["sentence2"]}
        return Example(fields, parse_label(row["__last__"], label_map(self), path, line))

    def masked_prompt(self, ex: Example) -> MaskedPrompt:
        text = nli_masked_text(ex.fields["premise"], ex.fields["hypothesis"])
        return MaskedPrompt(text, (" Yes", " No"), ex.label)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["premise"], ex.fields["hypothesis"], ex.label)

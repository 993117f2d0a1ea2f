"""Three-way NLI from GLUE-style files: MNLI and SNLI, with LM-BFF's template (DESIGN §5.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zoft.tasks.base import (
    TASKS,
    Example,
    MaskedPrompt,
    PairInput,
    Task,
    label_map,
    lmbff_causal,
    tsv_examples,
)
from zoft.tasks.io import parse_label, read_jsonl_numbered, require_keys
from zoft.tasks.lmbff import LmBffTemplate

NLI_LABELS = ("entailment", "neutral", "contradiction")  # the hub's integer order
NLI_WORDS = (" Yes", " Maybe", " No")  # LM-BFF: entailment Yes, neutral Maybe, contradiction No


# LM-BFF's NLI template (MeZO medium_models/run_fewshot.sh): `{premise without its last char}?
# <mask>, {hypothesis, first letter lower}`; MNLI and RTE cut the premise to 240 tokens, SNLI does not
NLI_TEMPLATE = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"
MNLI_LMBFF = LmBffTemplate(NLI_TEMPLATE, NLI_WORDS, first_sent_limit=240)
SNLI_LMBFF = LmBffTemplate(NLI_TEMPLATE, NLI_WORDS)
RTE_LMBFF = LmBffTemplate(NLI_TEMPLATE, (" Yes", " No"), first_sent_limit=240)


class ThreeWayNLI(Task):
    """Shared by MNLI and SNLI: jsonl train, a headed TSV evaluation file, LM-BFF k-shot TSVs."""

    label_names = NLI_LABELS
    hub_path: ClassVar[str]
    masked_max_length = 256
    lmbff: ClassVar[LmBffTemplate]
    local_dir: ClassVar[str]
    local_eval_file: ClassVar[str]

    causal_templates = {"mezo": lmbff_causal}

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        folder = data_dir / "glue" / self.local_dir
        if split == "validation":
            columns = {"premise": "premise", "hypothesis": "hypothesis"}
            return tsv_examples(folder / self.local_eval_file, columns, label_map(self))
        path = folder / "train.jsonl"
        examples = []
        for line, row in read_jsonl_numbered(path):
            require_keys(row, ("premise", "hypothesis", "label"), path, line)
            label = parse_label(row["label"], label_map(self), path, line)
            examples.append(
                Example({"premise": row["premise"], "hypothesis": row["hypothesis"]}, label)
            )
        return examples

    def from_hub_row(self, row: dict[str, Any]) -> Example | None:
        if int(row["label"]) < 0:  # pairs without a gold label
            return None
        return Example(
            {"premise": row["premise"], "hypothesis": row["hypothesis"]}, int(row["label"])
        )

    def kshot_row(self, row: dict[str, str], path: Path, line: int) -> Example:
        fields = {"premise": row["sentence1"], "hypothesis": row["sentence2"]}
        return Example(fields, parse_label(row["__last__"], label_map(self), path, line))

    def masked_prompt(self, ex: Example) -> MaskedPrompt:
        return self.lmbff.prompt((ex.fields["premise"], ex.fields["hypothesis"]), ex.label)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["premise"], ex.fields["hypothesis"], ex.label)


@TASKS.register("mnli")
class MNLI(ThreeWayNLI):
    name = "mnli"
    hub_path = "nyu-mll/glue"
    hub_config = "mnli"
    hub_splits = {"train": "train", "validation": "validation_matched"}
    kshot_dir = "MNLI"
    revision = 2  # 2: MeZO's space strip (some train hypotheses end with a space)
    lmbff = MNLI_LMBFF
    kshot_files = {"train": "train.tsv", "dev": "dev_matched.tsv"}  # LM-BFF's MNLI dev file name
    local_dir = "MNLI"
    local_eval_file = "dev_matched.tsv"
    local_notes = {
        "train": "local MNLI train is a subset: 8,999 of the official 392,702 pairs",
        "validation": "local MNLI evaluation is glue/MNLI/dev_matched.tsv, 1,000 of the official "
        "9,815 dev-matched pairs, in TextFooler's tokenised text",
    }


@TASKS.register("snli")
class SNLI(ThreeWayNLI):
    name = "snli"
    hub_path = "stanfordnlp/snli"
    hub_config = "plain_text"
    # LM-BFF's SNLI "test" is the official validation split (its generate_k_shot_data renames
    # each dev file to test), capped at 1,000 with seed 42
    hub_splits = {"train": "train", "validation": "validation"}
    kshot_dir = "SNLI"
    lmbff = SNLI_LMBFF
    kshot_files = {"train": "train.tsv", "dev": "dev.tsv"}
    local_dir = "SNLI"
    local_eval_file = "test.tsv"
    local_notes = {
        "train": "local SNLI train is a subset: 8,999 of the official 550,152 pairs",
        "validation": "local SNLI evaluation is glue/SNLI/test.tsv, 1,000 of the official 9,824 "
        "labelled test pairs, in TextFooler's tokenised text",
    }

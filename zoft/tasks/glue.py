"""Single-sentence classification: SST-2, SST-5, TREC.

SST-2 has two pools. The hub's (nyu-mll/glue sst2) is GLUE's 67,349-phrase train, the pool of
MeZO's large-model protocol. The local glue/SST-2 is the 6,920-sentence SST-2 (PTB-tokenised,
-lrb-/-rrb-), a data note says so; the ready k-shot splits are LM-BFF's, drawn from those
sentences. Both evaluate on the same 872 GLUE dev sentences."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zoft.tasks.base import (
    TASKS,
    CausalPrompt,
    Example,
    MaskedPrompt,
    PairInput,
    Task,
    lmbff_causal,
    tsv_examples,
)
from zoft.tasks.io import parse_label, read_headless_csv, read_tsv
from zoft.tasks.lmbff import LmBffTemplate

SST2_WORDS = ("terrible", "great")
# LM-BFF's templates and limits (MeZO medium_models/run_fewshot.sh): `{sentence} It was<mask>.`
SENTIMENT_TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
SST2_LMBFF = LmBffTemplate(SENTIMENT_TEMPLATE, tuple(f" {w}" for w in SST2_WORDS))
_SST2_LABELS = {"0": 0, "1": 1}


def _sst2_mezo(task: Task, ex: Example) -> CausalPrompt:
    """MeZO's prompt: `{sentence} It was` + ` great` / ` terrible`."""
    return CausalPrompt(
        f"{ex.fields['sentence']} It was", tuple(f" {w}" for w in SST2_WORDS), ex.label
    )


def _sst2_review(task: Task, ex: Example) -> CausalPrompt:
    """A calibrated prompt for small instruction-tuned models (SmolLM2 ~0.75 zero-shot)."""
    prompt = f"Review: {ex.fields['sentence']}\nSentiment (positive or negative):"
    return CausalPrompt(prompt, (" negative", " positive"), ex.label)


@TASKS.register("sst2")
class SST2(Task):
    name = "sst2"
    label_names = ("0", "1")  # negative, positive
    hub_path = "nyu-mll/glue"
    hub_config = "sst2"
    kshot_dir = "SST-2"
    causal_templates = {"mezo": _sst2_mezo, "review": _sst2_review}
    local_notes = {
        "train": "local SST-2 train is the 6,920-sentence SST-2 (tokenised, -lrb-/-rrb-), not "
        "GLUE's 67,349-phrase train that MeZO's large-model protocol samples (task.data_dir=hub)",
    }
    _files = {"train": "train.tsv", "validation": "dev.tsv"}

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        path = data_dir / "glue" / "SST-2" / self._files[split]
        return tsv_examples(path, {"sentence": "sentence"}, _SST2_LABELS)

    def from_hub_row(self, row: dict[str, Any]) -> Example:
        return Example({"sentence": row["sentence"].strip()}, int(row["label"]))

    def kshot_row(self, row: dict[str, str], path: Path, line: int) -> Example:
        label = parse_label(row["__last__"], _SST2_LABELS, path, line)
        return Example({"sentence": row["sentence"]}, label)

    def masked_prompt(self, ex: Example) -> MaskedPrompt:
        return SST2_LMBFF.prompt((ex.fields["sentence"],), ex.label)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["sentence"], None, ex.label)


SST5_WORDS = ("terrible", "bad", "okay", "good", "great")
_SST5_LABELS = {str(i): i for i in range(5)}
SST5_LMBFF = LmBffTemplate(
    SENTIMENT_TEMPLATE,
    tuple(f" {w}" for w in SST5_WORDS),
    first_sent_limit=110,
    other_sent_limit=20,
)


class HeadlessCsvKshot(Task):
    """LM-BFF ships sst-5 and trec k-shot files as header-less `label,sentence` CSV."""

    text_field: ClassVar[str] = "sentence"
    kshot_files = {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}

    def read_kshot_file(self, path: Path) -> list[Example]:
        labels = {str(i): i for i in range(len(self.label_names))}
        return [
            Example({self.text_field: row["text"]}, parse_label(row["label"], labels, path, n))
            for n, row in read_headless_csv(path, ("label", "text"))
        ]


@TASKS.register("sst5")
class SST5(HeadlessCsvKshot):
    name = "sst5"
    label_names = ("0", "1", "2", "3", "4")  # very negative ... very positive
    hub_path = "SetFit/sst5"
    hub_splits = {"train": "train", "validation": "test"}  # LM-BFF evaluates on the official test
    kshot_dir = "sst-5"
    causal_templates = {"mezo": lmbff_causal}
    local_notes = {
        "train": "local SST-5 train is a subset: 7,689 of the official 8,544 sentences",
        "validation": "SST-5 is evaluated on the official test (2,210), read from "
        "k-shot/sst-5/16-13/test.csv; glue/SST-5/dev.tsv is part of the official train",
    }

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        if split == "validation":
            return self.read_kshot_file(data_dir / "k-shot" / "sst-5" / "16-13" / "test.csv")
        path = data_dir / "glue" / "SST-5" / "train.tsv"
        return tsv_examples(path, {"sentence": "sentence"}, _SST5_LABELS)

    def from_hub_row(self, row: dict[str, Any]) -> Example:
        return Example({"sentence": row["text"].strip()}, int(row["label"]))

    def masked_prompt(self, ex: Example) -> MaskedPrompt:
        return SST5_LMBFF.prompt((ex.fields["sentence"],), ex.label)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["sentence"], None, ex.label)


TREC_CLASSES = ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")  # LM-BFF's label indices
TREC_WORDS = ("Description", "Entity", "Expression", "Human", "Location", "Number")
_TREC_HUB_CLASSES = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")  # CogComp/trec coarse_label
# `<mask>: {question}`, the question cut to 110 tokens
TREC_LMBFF = LmBffTemplate(
    "*cls**mask*:*+sent_0**sep+*", tuple(f" {w}" for w in TREC_WORDS), first_sent_limit=110
)


@TASKS.register("trec")
class TREC(HeadlessCsvKshot):
    name = "trec"
    label_names = TREC_CLASSES
    hub_path = "CogComp/trec"
    hub_splits = {"train": "train", "validation": "test"}
    kshot_dir = "trec"
    text_field = "question"
    causal_templates = {"mezo": lmbff_causal}

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        path = data_dir / "glue" / "TREC" / ("train.tsv" if split == "train" else "test.tsv")
        labels = {name: i for i, name in enumerate(TREC_CLASSES)}
        return [
            Example({"question": row["question"]}, parse_label(row["label"], labels, path, n))
            for n, row in read_tsv(path, required=("question", "label"))
        ]

    def from_hub_row(self, row: dict[str, Any]) -> Example:
        coarse = _TREC_HUB_CLASSES[int(row["coarse_label"])]
        return Example({"question": row["text"].strip()}, TREC_CLASSES.index(coarse))

    def masked_prompt(self, ex: Example) -> MaskedPrompt:
        return TREC_LMBFF.prompt((ex.fields["question"],), ex.label)

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["question"], None, ex.label)

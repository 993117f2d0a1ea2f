"""GLUE-style single-sentence tasks: SST-2 (sentence-level, as in MeZO and LM-BFF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoft.tasks import TASKS
from zoft.tasks.base import (
    MASK,
    CausalPrompt,
    Example,
    MaskedPrompt,
    PairInput,
    Task,
    tsv_examples,
)
from zoft.tasks.io import parse_label

SST2_WORDS = ("terrible", "great")
_SST2_LABELS = {"0": 0, "1": 1}


def _sst2_mezo(ex: Example) -> CausalPrompt:
    """MeZO's prompt: `{sentence} It was` + ` great` / ` terrible`."""
    return CausalPrompt(
        f"{ex.fields['sentence']} It was", tuple(f" {w}" for w in SST2_WORDS), ex.label
    )


def _sst2_review(ex: Example) -> CausalPrompt:
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
        return MaskedPrompt(
            f"{ex.fields['sentence']} It was{MASK}.", tuple(f" {w}" for w in SST2_WORDS), ex.label
        )

    def pair_input(self, ex: Example) -> PairInput:
        return PairInput(ex.fields["sentence"], None, ex.label)

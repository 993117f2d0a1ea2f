"""MeZO's large-model zero-shot recipe, written from its described behaviour
(/tmp/fidelity/mezo_lmao.md §1-§3, §6; princeton-nlp/MeZO large_models tasks.py, templates.py,
utils.py encode_prompt, run.py forward / one_step_pred), independent of zoft's classes: plain
transformers and the raw data files. It is the reference that zoft's predictions.jsonl is
checked against, example by example.

Recipe: the test set is the first `num` of a numpy seed-`seed` permutation of the official
validation file (`sample_subset`). Per candidate, the prompt (`encode`) and the full text
(`verbalize`) are stripped of spaces only; the option length is len(enc(full)) - len(enc(prompt)),
both encodes with the tokenizer's start token; the zero-demo input is the full text, lstripped;
inputs longer than max_length keep the start token and lose their oldest tokens; the score is the
mean log-probability of the last option-length tokens; the prediction is the first argmax.

Records use the dataset's label order for `scores`, `prediction` and `gold` (the order zoft's
tasks give their candidates); BoolQ's MeZO candidates ["Yes", "No"] are mapped onto labels
(False, True) after the argmax, so ties still break in MeZO's order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

Row = dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """One task of the recipe: where its validation file is, how a row reads, its template."""

    file: str  # relative to the data root
    encode: Callable[[Row], str]  # the prompt without a candidate
    verbalize: Callable[[Row, Any], str]  # the prompt followed by one candidate
    candidates: Callable[[Row], list[Any]]  # in MeZO's order
    label_of_candidate: Callable[[Row, int], int]  # MeZO candidate index -> dataset label index
    gold: Callable[[Row], int]  # dataset label index


# ---------------------------------------------------------------------------------------------
# data files


def read_rows(data_dir: Path, recipe: Recipe) -> list[Row]:
    """The validation file's rows in file order, each with its `id`: SuperGLUE's idx, else the
    0-based data row (SST-2's dev.tsv)."""
    path = Path(data_dir) / recipe.file
    if path.suffix == ".tsv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader)
            rows = [dict(zip(header, fields, strict=True)) for fields in reader if fields]
        return [{**row, "id": n} for n, row in enumerate(rows)]
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{**row, "id": row["idx"]} for row in rows]


def sample_subset(rows: Sequence[Row], seed: int = 0, num: int = 1000) -> list[Row]:
    """MeZO's `sample_subset`: the first `num` of np.random.permutation(len) under seed `seed`
    (legacy global-state MT19937, which RandomState(seed) reproduces)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        index = np.random.permutation(len(rows)).tolist()[:num]
    finally:
        np.random.set_state(state)
    return [rows[i] for i in index]


# ---------------------------------------------------------------------------------------------
# WSC spans: HF super_glue's wsc.fixed `_fix_wst`, as described in the fact sheet §3

_UNFIXABLE_SPANS = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")


def fix_wsc_spans(text: str, target: dict[str, Any]) -> dict[str, Any]:
    """span1 then span2, each independently: a span already in the text or unfixable stays; the
    "theyscold" span moves span2_index to 10 (the text is left unchanged, as upstream); its first
    character takes the case of the text's word at its index; trailing periods and newlines go."""
    fixed = dict(target)
    for n in (1, 2):
        span = fixed[f"span{n}_text"]
        if span in text or span in _UNFIXABLE_SPANS:
            continue
        if "theyscold" in span:
            fixed["span2_index"] = 10
        word = text.split()[fixed[f"span{n}_index"]]
        first = span[:1].lower() if word[:1].islower() else span[:1].upper()
        span = (first + span[1:]).rstrip(".").replace("\n", " ")
        if span not in text:
            raise ValueError(f"WSC span {span!r} is not in its text {text!r}")
        fixed[f"span{n}_text"] = span
    return fixed


# ---------------------------------------------------------------------------------------------
# templates (MeZO large_models/templates.py, default versions)


def _sst2(row: Row) -> str:
    return f"{row['sentence'].strip()} It was"


def _sst2_full(row: Row, candidate: int) -> str:
    return f"{_sst2(row)} {('terrible', 'great')[candidate]}"


def _copa_prompt(row: Row) -> str:
    premise = row["premise"].rstrip()
    if premise.endswith("."):
        premise = premise[:-1]
    return premise + {"effect": " so ", "cause": " because "}[row["question"]]


def _copa_choice(choice: str) -> str:
    words = choice.split(" ")
    if words[0] != "I":
        words[0] = words[0].lower()
    return " ".join(words)


def _boolq_prompt(row: Row) -> str:
    """BoolQ as HF's "boolq" has it: the SuperGLUE passage "Title -- text" without its title."""
    passage = row["passage"].split(" -- ", 1)[1] if " -- " in row["passage"] else row["passage"]
    question = row["question"] if row["question"].endswith("?") else row["question"] + "?"
    return f"{passage} {question[0].upper() + question[1:]}\n"


def _rte(row: Row) -> str:
    return f'{row["premise"]}\nDoes this mean that "{row["hypothesis"]}" is true? Yes or No?\n'


def _cb(row: Row) -> str:
    return f'Suppose {row["premise"]} Can we infer that "{row["hypothesis"]}"? Yes, No, or Maybe?\n'


def _wic(row: Row) -> str:
    return (
        f'Does the word "{row["word"]}" have the same meaning in these two sentences? Yes, No?\n'
        f"{row['sentence1']}\n{row['sentence2']}\n"
    )


def _wsc(row: Row) -> str:
    spans = fix_wsc_spans(row["text"], row["target"])
    return (
        f"{row['text']}\nIn the previous sentence, does the pronoun "
        f'"{spans["span2_text"].lower()}" refer to {spans["span1_text"]}? Yes or No?\n'
    )


def _words(build: Callable[[Row], str], words: Sequence[str]) -> Callable[[Row, Any], str]:
    return lambda row, candidate: build(row) + words[candidate]


def _same_order(row: Row, index: int) -> int:
    return index


_NLI = {"entailment": 0, "contradiction": 1, "neutral": 2, "not_entailment": 1}

RECIPES: dict[str, Recipe] = {
    "sst2": Recipe(
        "glue/SST-2/dev.tsv", _sst2, _sst2_full, lambda r: [0, 1], _same_order,
        lambda r: int(r["label"]),
    ),
    "rte": Recipe(
        "superglue/RTE/val.jsonl", _rte, _words(_rte, ("Yes", "No")), lambda r: [0, 1],
        _same_order, lambda r: _NLI[r["label"]],
    ),
    "cb": Recipe(
        "superglue/CB/val.jsonl", _cb, _words(_cb, ("Yes", "No", "Maybe")),
        lambda r: [0, 1, 2], _same_order, lambda r: _NLI[r["label"]],
    ),
    "copa": Recipe(
        "superglue/COPA/val.jsonl", _copa_prompt,
        lambda r, c: _copa_prompt(r) + _copa_choice(c), lambda r: [r["choice1"], r["choice2"]],
        _same_order, lambda r: int(r["label"]),
    ),
    "wic": Recipe(
        "superglue/WiC/val.jsonl", _wic, _words(_wic, ("No", "Yes")), lambda r: [0, 1],
        _same_order, lambda r: int(r["label"]),
    ),
    "wsc": Recipe(
        "superglue/WSC/val.jsonl", _wsc, _words(_wsc, ("No", "Yes")), lambda r: [0, 1],
        _same_order, lambda r: int(r["label"]),
    ),
    "boolq": Recipe(
        "superglue/BoolQ/val.jsonl", _boolq_prompt,
        lambda r, c: _boolq_prompt(r) + c, lambda r: ["Yes", "No"],
        lambda r, i: 1 - i,  # "Yes" is label True (1)
        lambda r: int(r["label"]),
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# scoring (MeZO utils.py encode_prompt, run.py forward / one_step_pred)


def truncate(ids: list[int], max_length: int, keeps_start: bool) -> list[int]:
    """Keep the start token and the last max_length-1 tokens, or the last max_length."""
    if len(ids) <= max_length:
        return ids
    return ids[:1] + ids[1:][-(max_length - 1) :] if keeps_start else ids[-max_length:]


def candidate_inputs(
    tokenizer: Any, recipe: Recipe, row: Row, max_length: int
) -> list[tuple[list[int], int]]:
    """(input ids, option length) per candidate, in MeZO's order."""
    keeps_start = tokenizer.bos_token_id is not None and (
        tokenizer.encode("a")[:1] == [tokenizer.bos_token_id]
    )
    prompt = recipe.encode(row).strip(" ")
    out = []
    for candidate in recipe.candidates(row):
        full = recipe.verbalize(row, candidate).strip(" ")
        option_len = len(tokenizer.encode(full)) - len(tokenizer.encode(prompt))
        text = ("\n\n" + full).lstrip().strip(" ")  # zero demonstrations
        ids = truncate(tokenizer.encode(text), max_length, keeps_start)
        out.append((ids, option_len))
    return out


@torch.no_grad()
def candidate_score(model: torch.nn.Module, ids: list[int], option_len: int) -> float:
    """Mean log-probability of the last option_len tokens, one forward at batch size 1."""
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    picked = logp.gather(-1, torch.tensor(ids[1:], device=device).unsqueeze(-1)).squeeze(-1)
    return picked[-option_len:].mean().item()


def predict_row(
    model: torch.nn.Module, tokenizer: Any, recipe: Recipe, row: Row, max_length: int
) -> dict[str, Any]:
    """{id, scores, prediction, gold} of one row, in the dataset's label order."""
    scores = [
        candidate_score(model, ids, n)
        for ids, n in candidate_inputs(tokenizer, recipe, row, max_length)
    ]
    best = int(np.argmax(scores))  # first max wins, in MeZO's candidate order
    by_label = [0.0] * len(scores)
    for index, score in enumerate(scores):
        by_label[recipe.label_of_candidate(row, index)] = score
    return {
        "id": row["id"],
        "scores": by_label,
        "prediction": recipe.label_of_candidate(row, best),
        "gold": recipe.gold(row),
    }


def recipe_predictions(
    model: torch.nn.Module,
    tokenizer: Any,
    task: str,
    data_dir: Path,
    seed: int = 0,
    num: int = 1000,
    max_length: int = 2048,
) -> list[dict[str, Any]]:
    """MeZO's zero-shot predictions of `task` on its seed-`seed` test subset of `num` examples."""
    recipe = RECIPES[task]
    model.eval()
    rows = sample_subset(read_rows(data_dir, recipe), seed, num)
    return [predict_row(model, tokenizer, recipe, row, max_length) for row in rows]

"""The full zero-shot comparison of zoft's predictions.jsonl with MeZO's recipe
(tests/fidelity/mezo_recipe.py) for SmolLM2 on SST-2, RTE, CB, COPA, WiC, WSC and BoolQ (MeZO
prompts, large protocol, data_seed=0, 1,000 test examples at most), written as a markdown summary.

    PYTHONPATH=$PWD ZOFT_DATA=/work/shared/data python tests/fidelity/compare_smollm2.py \
        --tasks sst2 rte cb --out results/fidelity/smollm2_zero_shot.md

(`make fidelity-check` runs all seven.) zoft runs through its runner (threads=1, into a
temporary run directory); the recipe scores the same weights, loaded once, at batch size 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.fidelity.mezo_recipe import RECIPES, recipe_predictions  # noqa: E402

TASKS = ("sst2", "rte", "cb", "copa", "wic", "wsc", "boolq")


def zoft_predictions(model: str, task: str, num: int, out_dir: Path, data_dir: Path) -> list[dict]:
    from tests.conftest import compose
    from zoft.run.predictions import read_predictions
    from zoft.run.rundir import PREDICTIONS_FILE
    from zoft.run.runner import run

    cfg = compose(
        [
            f"model={model}",
            f"task={task}",
            "task.protocol=large",
            f"task.num_eval={num}",
            "data_seed=0",
            "steps=0",
            "threads=1",
            "dtype=fp32",
            f"output_dir={out_dir}",
            f"task.data_dir={data_dir}",
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete", result.get("reason")
    return read_predictions(out_dir / PREDICTIONS_FILE)


def compare(ours: list[dict], reference: list[dict]) -> dict:
    """n, ids equal, matching predictions, max |score difference| and the mismatched ids."""
    by_id = {r["id"]: r for r in reference}
    same_ids = [r["id"] for r in ours] == [r["id"] for r in reference]
    matching, worst, mismatched = 0, 0.0, []
    for mine in ours:
        theirs = by_id.get(mine["id"])
        if theirs is None:
            mismatched.append(mine["id"])
            continue
        diff = max(abs(a - b) for a, b in zip(mine["scores"], theirs["scores"], strict=True))
        worst = max(worst, diff)
        if mine["prediction"] == theirs["prediction"]:
            matching += 1
        else:
            mismatched.append(mine["id"])
    return {
        "n": len(ours),
        "same_ids": same_ids,
        "matching": matching,
        "max_diff": worst,
        "mismatched": mismatched,
        "zoft_acc": sum(r["prediction"] == r["gold"] for r in ours) / len(ours),
        "recipe_acc": sum(r["prediction"] == r["gold"] for r in reference) / len(reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=sorted(RECIPES))
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "results/fidelity/smollm2_zero_shot.md")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("ZOFT_DATA", REPO.parent / "shared" / "data"))

    import torch

    from tests.conftest import model_cfg
    from zoft.models.loading import load_model

    torch.set_num_threads(1)
    cfg = model_cfg(args.model)
    loaded = load_model(cfg, "fp32", "cpu", 2)
    lines = [
        f"# {args.model} zero-shot: zoft's predictions.jsonl vs MeZO's recipe",
        "",
        f"Command: `PYTHONPATH=$PWD ZOFT_DATA=... python tests/fidelity/compare_smollm2.py --model "
        f"{args.model} --tasks {' '.join(args.tasks)} --num {args.num}` (CPU, fp32, threads=1; "
        "MeZO prompts, large protocol, data_seed=0). The recipe is tests/fidelity/mezo_recipe.py.",
        "",
        "| task | n | same ids, same order | matching predictions | max abs score diff | "
        "zoft acc | recipe acc | mismatched ids (first 10) | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            ours = zoft_predictions(args.model, task, args.num, Path(tmp), data_dir)
        reference = recipe_predictions(
            loaded.model, loaded.tokenizer, task, data_dir, 0, args.num, cfg.max_length
        )
        c = compare(ours, reference)
        lines.append(
            f"| {task} | {c['n']} | {'yes' if c['same_ids'] else 'NO'} | {c['matching']} | "
            f"{c['max_diff']:.2e} | {c['zoft_acc']:.4f} | {c['recipe_acc']:.4f} | "
            f"{c['mismatched'][:10]} | {time.time() - started:.0f} |"
        )
        print(lines[-1], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")  # after every task: a long run keeps its rows
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

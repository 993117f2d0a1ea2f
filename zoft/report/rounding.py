"""The half-precision study (issue 21, `+experiment=bf16_rounding_smollm2`): MeZO in fp32, in bf16
with round-to-nearest updates and in bf16 with stochastic rounding, at each learning rate of the
grid, as a table and a plot.

    python -m zoft.report.rounding runs/bf16_rounding results/tables/bf16_rounding

Besides the curves it measures what rounding did to the weights after the last step: how many
elements moved from their initial values, how far the weights moved against the fp32 run at the
same learning rate (‖θ_T − θ_0‖ over the fp32 run's), and how much of the fp32 run's update the
cell kept (⟨Δ, Δ_fp32⟩ / ‖Δ_fp32‖², 1 when the update is kept in expectation, whatever the noise
rounding adds). That needs each run's θ_T and θ_0 beside it (final.safetensors and
base.safetensors, written by `zoft-replay <run> --step last` and `--step 0`: the cells share a
seed and so their keyed directions); the numbers are kept in weight_change.json beside the run
summaries, so the table can be rebuilt from the committed summaries alone.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zoft.report.collect import logged_losses
from zoft.report.plots import _pyplot
from zoft.report.summaries import copy_summaries
from zoft.run.rundir import METRICS_FILE, RESULT_FILE

WEIGHT_CHANGE_FILE = "weight_change.json"
SMOOTHING = 20  # steps in the running mean of the train loss


@dataclass
class Cell:
    """One finished run of the study: its label (dtype and rounding), its learning rate and its
    records. Each cell is compared with the fp32 cell of its own learning rate."""

    label: str
    run_dir: Path
    result: dict[str, Any]

    @property
    def dtype(self) -> str:
        return str(self.result["hyperparameters"]["dtype"])

    @property
    def lr(self) -> float:
        return float(self.result["hyperparameters"]["lr"])

    def dev_curve(self) -> pd.Series:
        path = self.run_dir / METRICS_FILE
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        points = {r["step"]: r["dev_accuracy"] for r in records if "dev_accuracy" in r}
        return pd.Series(points, dtype=float).sort_index()


LABEL_ORDER = {"fp32": 0, "bf16 nearest": 1, "bf16 stochastic": 2}


def find_cells(runs: Path) -> list[Cell]:
    """The study's complete runs under `runs`, by learning rate (highest first), then fp32, bf16
    nearest, bf16 stochastic."""
    cells = []
    for path in sorted(Path(runs).rglob(RESULT_FILE)):
        result = json.loads(path.read_text())
        if result.get("status") != "complete" or not result.get("steps"):
            continue
        hyper = result["hyperparameters"]
        label = (
            hyper["dtype"] if hyper["dtype"] == "fp32" else f"{hyper['dtype']} {hyper['rounding']}"
        )
        cells.append(Cell(label, path.parent, result))
    return sorted(cells, key=lambda c: (-c.lr, LABEL_ORDER.get(c.label, 9), c.label))


BASE_FILE = "base.safetensors"  # θ_0 in the run's dtype: zoft-replay <run> --step 0 --out it
FINAL_FILE = "final.safetensors"  # θ_T, after the last step: zoft-replay <run> --step last --out it
# safetensors dtypes → (the unsigned integer of the same width, how to read the values)
_DTYPES = {"F32": ("<u4", "<f4"), "F16": ("<u2", "<f2"), "BF16": ("<u2", None)}


def read_safetensors(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each tensor of a safetensors file as (its raw bits, its values in float64), read with
    numpy from the file's layout (8-byte header size, JSON header, buffer): no torch here."""
    raw = Path(path).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buffer = raw[8 + size + start : 8 + size + end]
        bits_type, value_type = _DTYPES[info["dtype"]]
        bits = np.frombuffer(buffer, bits_type)
        if value_type is None:  # bf16: the top half of an fp32
            values = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            values = np.frombuffer(buffer, value_type).astype(np.float64)
        tensors[name] = (bits, values)
    return tensors


def weight_change(
    final: Path, initial: Path, reference: tuple[Path, Path] | None = None
) -> dict[str, float]:
    """Elements whose bits differ between θ_T and θ_0, ‖θ_T − θ_0‖₂ in float64 and, given the
    reference run's (θ_T, θ_0), the share of its update kept: ⟨Δ, Δ_ref⟩ / ‖Δ_ref‖²."""
    after, before = read_safetensors(final), read_safetensors(initial)
    ref_after, ref_before = map(read_safetensors, reference) if reference else ({}, {})
    changed = total = 0
    squares = dot = ref_squares = 0.0
    for name, (bits, values) in after.items():
        bits_0, values_0 = before[name]
        changed += int(np.count_nonzero(bits != bits_0))
        total += bits.size
        delta = values - values_0
        squares += float(np.square(delta).sum())
        if reference:
            ref_delta = ref_after[name][1] - ref_before[name][1]
            dot += float(delta @ ref_delta)
            ref_squares += float(ref_delta @ ref_delta)
    change = {"changed_fraction": changed / max(total, 1), "distance": squares**0.5}
    if reference and ref_squares > 0:
        change["along_fp32"] = dot / ref_squares
    return change


def measure_weights(cells: list[Cell]) -> None:
    """Write weight_change.json for each cell with θ_T and θ_0 beside it (make table-bf16 writes
    them with zoft-replay), against the fp32 cell of its learning rate where that has them too."""

    def pair(cell: Cell) -> tuple[Path, Path]:
        return cell.run_dir / FINAL_FILE, cell.run_dir / BASE_FILE

    fp32 = {c.lr: pair(c) for c in cells if c.label == "fp32" and all(p.is_file() for p in pair(c))}
    for cell in cells:
        final, initial = pair(cell)
        if not final.is_file():
            continue
        if not initial.is_file():
            print(
                f"{cell.label}: no {BASE_FILE} (zoft-replay {cell.run_dir} --step 0 --out "
                f"{initial}); its weight change is not measured",
                file=sys.stderr,
            )
            continue
        change = {
            "step": int(cell.result["steps"]),
            **weight_change(final, initial, fp32.get(cell.lr)),
        }
        (cell.run_dir / WEIGHT_CHANGE_FILE).write_text(json.dumps(change, indent=2) + "\n")


def _weights(cell: Cell) -> dict[str, float] | None:
    path = cell.run_dir / WEIGHT_CHANGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def setting(result: dict[str, Any]) -> str:
    """What the cells ran, read from a result (they differ only in dtype, rounding and lr)."""
    h = result["hyperparameters"]
    return (
        f"`make table-bf16` (`+experiment=bf16_rounding_smollm2`): {result['model']}, "
        f"{result['task']}, {result['num_train']} train examples, {result['optimizer']} at the "
        f"row's lr, eps {h['eps']:g}, batch {h['batch_size']}, {h['steps']} steps, seed "
        f"{result['seed']}; dev = {result['num_dev']} examples every {h['eval_every']} steps, test "
        f"= {result['num_test']} validation examples at the best dev step. Steps below resolution: "
        "η·|g| under half the weights' resolution (the guard's count, zoft.run.guards). "
        "Weights after the last step: the share of elements changed, ‖θ_T − θ_0‖ over that of the "
        "fp32 cell at the same lr, and the share of the fp32 cell's update kept, "
        "⟨Δ, Δ_fp32⟩ / ‖Δ_fp32‖² with Δ = θ_T − θ_0."
    )


def table(cells: list[Cell]) -> str:
    """The markdown table: one row per cell."""
    fp32 = {c.lr: _weights(c) for c in cells if c.label == "fp32"}
    head = (
        "| lr | weights | zero-shot test | test (best dev) | best step | dev accuracy by step | "
        f"train loss, first / last {SMOOTHING} steps | steps below resolution | "
        "weights changed | ‖Δ‖ / fp32's | fp32's update kept |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for cell in cells:
        r = cell.result
        reference = fp32.get(cell.lr)
        losses = logged_losses(cell.run_dir)
        dev = " · ".join(f"{step}: {value:.3f}" for step, value in cell.dev_curve().items())
        zero = (r.get("zero_shot") or {}).get("accuracy")
        change = _weights(cell)
        moved = relative = kept = "n/a"
        if change is not None:
            moved = f"{100 * change['changed_fraction']:.2f}%"
            if reference is not None and reference["distance"] > 0:
                relative = f"{change['distance'] / reference['distance']:.3f}"
            if "along_fp32" in change:
                kept = f"{change['along_fp32']:.3f}"
        rows.append(
            f"| {cell.lr:g} | {cell.label} | {'' if zero is None else f'{zero:.3f}'} | "
            f"{r['test']['accuracy']:.3f} | {r['best_step']} | {dev} | "
            f"{losses.iloc[:SMOOTHING].mean():.4f} / {losses.iloc[-SMOOTHING:].mean():.4f} | "
            f"{r['steps_below_resolution']} of {r['steps']} | {moved} | {relative} | {kept} |"
        )
    return "\n".join(rows) + "\n"


def plot(cells: list[Cell], path: Path) -> Path:
    """Train loss (running mean) and dev accuracy against the step: one row of two panels per
    learning rate, one line per dtype and rounding, in the same colour on every row."""
    plt = _pyplot()
    rates = sorted({c.lr for c in cells}, reverse=True)
    fig, axes = plt.subplots(len(rates), 2, figsize=(10, 3.4 * len(rates)), squeeze=False)
    labels = sorted({c.label for c in cells}, key=lambda x: (LABEL_ORDER.get(x, 9), x))
    colors = {label: f"C{index}" for index, label in enumerate(labels)}
    for (left, right), rate in zip(axes, rates, strict=True):
        for cell in (c for c in cells if c.lr == rate):
            losses = logged_losses(cell.run_dir)
            smooth = losses.rolling(SMOOTHING, min_periods=1).mean()
            left.plot(smooth.index, smooth, label=cell.label, color=colors[cell.label])
            dev = cell.dev_curve()
            right.plot(dev.index, dev, marker="o", label=cell.label, color=colors[cell.label])
        left.set(xlabel="step", ylabel=f"train loss (mean of {SMOOTHING} steps)")
        left.set_title(f"lr {rate:g}: train loss", fontsize="medium")
        right.set(xlabel="step", ylabel="dev accuracy")
        right.set_title(f"lr {rate:g}: dev accuracy", fontsize="medium")
        left.legend(fontsize="small")
    fig.suptitle("MeZO, SmolLM2-135M, SST-2: fp32 vs bf16 weights, nearest vs stochastic rounding")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(runs: Path, out: Path) -> list[Path]:
    """Summaries (with weight_change.json) under out/runs, then the table and the plot."""
    measure_weights(find_cells(runs))
    summaries = out / "runs"
    if Path(runs).resolve() != summaries.resolve():
        copy_summaries(Path(runs), summaries)
        for cell in find_cells(runs):
            moved = cell.run_dir / WEIGHT_CHANGE_FILE
            if moved.is_file():
                target = summaries / cell.run_dir.relative_to(runs) / WEIGHT_CHANGE_FILE
                target.write_text(moved.read_text())
    cells = find_cells(summaries)
    if not cells:
        raise SystemExit(f"no finished run of the study under {runs}")
    markdown = out / "bf16_rounding.md"
    markdown.write_text(
        "## MeZO in half precision: round-to-nearest against stochastic rounding\n\n"
        + setting(cells[0].result)
        + "\n\n"
        + table(cells)
    )
    return [markdown, plot(cells, out / "bf16_rounding.png")]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m zoft.report.rounding RUNS_DIR OUT_DIR")
    runs, out = map(Path, args)
    out.mkdir(parents=True, exist_ok=True)
    written = write_report(runs, out)
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()

"""zoft-replay: a pure ZO run's weights at any step, rebuilt from the base model and its
trajectory.jsonl alone, bit for bit (issue 21).

    zoft-replay runs/sst2/smollm2-135m/mezo/seed0-data13-<digest> [--step K|last] --out weights.safetensors

The model and the optimizer are built as the runner builds them (zoft.run.runner._execute: seeds,
data, model, adapter, optimizer, in that order, so a LoRA or prefix initialisation draws the same
numbers); then each recorded step's update is applied with the step's own estimates
(ZerothOrderOptimizer.apply_update: the keyed directions and rounding of that step). No forward
pass runs. The default step is the run's best dev step, the weights `save_weights=true` writes;
`--step last` is the last step the trajectory holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zoft.config import enum_value
from zoft.errors import ZoftError
from zoft.run.rundir import CONFIG_FILE, RESULT_FILE, TRAJECTORY_FILE
from zoft.run.trajectory import TrajectoryError, apply_steps, read_trajectory, steps_up_to

log = logging.getLogger(__name__)
LAST = "last"  # --step last: the last step the trajectory holds


@dataclass
class Replayed:
    """What a replay did: the step it rebuilt, the updates applied and how long they took."""

    step: int
    updates: int
    skipped: int
    build_s: float
    replay_s: float


def default_step(run_dir: Path) -> int:
    """The best dev step of a finished run (the weights it evaluated and saved), else the last
    step its trajectory holds."""
    result = run_dir / RESULT_FILE
    if result.is_file():
        record = json.loads(result.read_text())
        if record.get("status") == "complete" and record.get("best_step"):
            return int(record["best_step"])
    return last_step(run_dir)


def last_step(run_dir: Path) -> int:
    """The last step the run's trajectory holds."""
    entries = read_trajectory(run_dir / TRAJECTORY_FILE)
    if not entries:
        raise TrajectoryError(f"{run_dir / TRAJECTORY_FILE} holds no step yet")
    return entries[-1].step


def run_config(run_dir: Path) -> DictConfig:
    """The run's resolved config, refused before anything is loaded when it cannot replay."""
    path, trajectory = run_dir / CONFIG_FILE, run_dir / TRAJECTORY_FILE
    if not path.is_file():
        raise TrajectoryError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    if not trajectory.is_file():
        raise TrajectoryError(
            f"{run_dir} has no {TRAJECTORY_FILE}: only pure zeroth-order runs (mezo, mezo-lora, "
            "mezo-prefix, mezo-m, mezo-adam, lozo, lozo-m, subzero) write one; other runs keep "
            "their weights with save_weights=true"
        )
    return structured(OmegaConf.load(path))


def structured(saved: DictConfig) -> DictConfig:
    """A saved config.yaml typed by its schemas again, as Hydra composed it for the run (the
    methods read their settings through their dataclasses)."""
    from zoft.config import LoggerConfig, ModelConfig, TaskConfig, ZoftConfig
    from zoft.optim import METHODS

    groups = {
        "model": ModelConfig,
        "task": TaskConfig,
        "logger": LoggerConfig,
        "optimizer": METHODS.config(saved.optimizer.name),
    }
    top = {k: v for k, v in saved.items() if k not in groups}
    cfg = OmegaConf.merge(OmegaConf.structured(ZoftConfig), top)
    for key, schema in groups.items():
        cfg[key] = OmegaConf.merge(OmegaConf.structured(schema), saved[key])
    return cfg


def rebuild(cfg: DictConfig, device: str):
    """The optimizer of a fresh run of `cfg`, on its untrained model: built in the runner's order."""
    from zoft.models.adapters import add_adapter
    from zoft.models.detect import model_kind
    from zoft.models.loading import load_model
    from zoft.optim import build_optimizer
    from zoft.run.runner import seed_everything
    from zoft.scoring import build_scorer
    from zoft.scoring.objectives import build_objective
    from zoft.tasks import get_task
    from zoft.tasks.sampling import load_splits

    seed_everything(cfg.seed)
    task = get_task(cfg.task.name)
    load_splits(task, cfg.task, cfg.data_seed)  # as the runner does, in case sampling draws
    loaded = load_model(cfg.model, enum_value(cfg.dtype), device, len(task.label_names))
    scorer = build_scorer(
        model_kind(cfg.model), task, loaded.tokenizer, cfg.task.template, cfg.model.max_length
    )
    add_adapter(loaded.model, cfg.optimizer, cfg.model)
    objective = build_objective(cfg.objective, scorer)
    optimizer = build_optimizer(cfg.optimizer, loaded.model, objective, cfg.steps, cfg.seed)
    if not optimizer.replayable:
        raise TrajectoryError(
            f"optimizer={cfg.optimizer.name} is not a pure zeroth-order method: its weights do "
            "not follow from a trajectory"
        )
    return optimizer


def replay(run_dir: Path, step: int | str | None, out: Path, device: str | None = None) -> Replayed:
    """Rebuild the weights after `step` (default: default_step; "last": last_step) and write
    every named parameter of the model (adapters included) to `out`, as save_weights does."""
    from safetensors.torch import save_file

    cfg = run_config(run_dir)
    if step is None:
        target = default_step(run_dir)
    else:
        target = last_step(run_dir) if step == LAST else int(step)
    entries = steps_up_to(run_dir / TRAJECTORY_FILE, target)  # checked before the model loads
    started = time.perf_counter()
    optimizer = rebuild(cfg, device or cfg.device)
    built = time.perf_counter()
    apply_steps(optimizer, entries)
    done = time.perf_counter()
    tensors = {n: p.detach().contiguous() for n, p in optimizer.model.named_parameters()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    skipped = sum(e.skipped for e in entries)
    return Replayed(target, len(entries) - skipped, skipped, built - started, done - built)


def _step(text: str) -> int | str:
    """A --step value: a step number (0 or more) or "last"."""
    if text == LAST:
        return LAST
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r}: a step is a number, 0 or more, or 'last'")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    """zoft-replay: a pure ZO run's weights at a step, from its base model and trajectory."""
    parser = argparse.ArgumentParser(prog="zoft-replay", description=main.__doc__)
    parser.add_argument("run_dir", type=Path, help="a run directory with trajectory.jsonl")
    parser.add_argument(
        "--step",
        type=_step,
        default=None,
        help="the step to rebuild: a number or 'last' (default: the best dev step)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the safetensors file to write")
    parser.add_argument(
        "--device", default=None, help="where to replay (default: the run's device setting)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        done = replay(args.run_dir, args.step, args.out, args.device)
    except ZoftError as err:
        sys.exit(f"zoft-replay: {err}")
    print(
        f"step {done.step}: {done.updates} updates replayed ({done.skipped} skipped steps) in "
        f"{done.replay_s:.2f} s after {done.build_s:.2f} s to build the model; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

"""run(cfg) -> result: the orchestration of one run: check, load, evaluate, train, evaluate, write."""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import zoft
from zoft.config import effective_rounding, enum_value
from zoft.errors import RunConfigError
from zoft.models.adapters import add_adapter
from zoft.models.detect import model_kind
from zoft.models.loading import load_model
from zoft.optim import OPTIMIZERS, build_optimizer
from zoft.run import distributed
from zoft.run.checkpoint import Checkpoint, Checkpointer
from zoft.run.checks import check_ranks, validate
from zoft.run.console import run_header, to_file_only
from zoft.run.environment import environment
from zoft.run.fingerprint import (
    Reuse,
    checkpoint_data_check,
    data_fingerprint,
    reusable_result,
)
from zoft.run.lock import RunLock
from zoft.run.loggers import MetricsLog, attach_file_log, build_sinks
from zoft.run.memory import MemoryTracker
from zoft.run.predictions import write_predictions
from zoft.run.record import SCHEMA_VERSION, MethodRecord, RunResult
from zoft.run.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    TRAJECTORY_FILE,
    WEIGHTS_FILE,
    RunDirError,
    atomic_write,
    config_digest,
    ensure_writable,
    file_mode,
    resolve_output_dir,
    run_mode,
    write_failure,
    write_json,
)
from zoft.run.signals import Interrupted, SignalFlags, signal_flags, signal_name
from zoft.run.trainer import (
    Evaluator,
    Trainer,
    TrainingOutcome,
    TrainingRecord,
    TrainingSettings,
)
from zoft.run.trajectory import TrajectoryLog
from zoft.scoring import build_scorer
from zoft.scoring.icl import IclInputs, icl_setup
from zoft.scoring.objectives import build_objective
from zoft.tasks import get_task
from zoft.tasks.base import Splits, Task
from zoft.tasks.io import DataReads, recording_reads
from zoft.tasks.sampling import load_splits, official_split

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _method_record(cfg: DictConfig) -> MethodRecord:
    """The method's facts and config defaults, recorded so tables never import the method."""
    if not cfg.steps:
        return MethodRecord.evaluation(run_mode(cfg))
    name = cfg.optimizer.name
    defaults = dataclasses.asdict(OPTIMIZERS.config(name)())
    return MethodRecord.of_facts(name, OPTIMIZERS.facts(name).as_record(), defaults)


def _base_result(cfg: DictConfig) -> dict[str, Any]:
    hyper = OmegaConf.to_container(cfg.optimizer, resolve=True, enum_to_str=True)
    hyper.update({k: enum_value(cfg[k]) for k in ("steps", "batch_size", "eval_every", "dtype")})
    if "rounding" in hyper:
        hyper["rounding"] = effective_rounding(hyper["rounding"], hyper["dtype"])
    protocol = enum_value(cfg.task.protocol)
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "optimizer": cfg.optimizer.name,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "protocol": protocol,
        "k": cfg.task.k if protocol == "kshot" else None,
        "mode": run_mode(cfg),
        "method": _method_record(cfg).to_json(),
        "objective": cfg.objective,
        "icl_demos": 0,  # how many were used, set by ICL runs
        "hyperparameters": hyper,
        "config_digest": config_digest(cfg),
        "zoft_version": zoft.__version__,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _load_data(cfg: DictConfig, task: Task, result: dict[str, Any]) -> Splits:
    splits = load_splits(task, cfg.task, cfg.data_seed)
    if cfg.steps > 0 and not splits.train:
        raise RunConfigError(
            f"task {task.name} has no training examples under {enum_value(cfg.task.protocol)} "
            f"sampling ({splits.notes}); lower task.num_dev / raise task.k, or set steps=0"
        )
    result.update(
        num_train=len(splits.train),
        num_dev=len(splits.dev),
        num_test=len(splits.test),
        data_source=splits.source,
        data_notes=splits.notes,
    )
    log.info(
        "%s: %d train / %d dev / %d test examples from %s",
        task.name,
        len(splits.train),
        len(splits.dev),
        len(splits.test),
        splits.source,
    )
    return splits


def _outcome_fields(outcome: TrainingOutcome) -> dict[str, Any]:
    return {
        "dev": outcome.best_dev or None,
        "best_step": outcome.best_step,
        "steps": outcome.steps,
        "forward_passes": outcome.forwards,
        "backward_passes": outcome.backwards,
        "train_loss_first": outcome.first_loss,
        "train_loss_last": outcome.last_loss,
        "train_time_s": round(outcome.seconds, 2),
        "skipped_steps": outcome.skipped_steps,
        "steps_below_resolution": outcome.steps_below_resolution,
        "resumed_at_steps": outcome.resumed_at,
    }


@dataclass
class _RunContext:
    """What one attempt at a run works with besides its config."""

    out_dir: Path
    result: dict[str, Any]
    flags: SignalFlags
    checkpointer: Checkpointer
    resume: Checkpoint | None
    metrics: MetricsLog
    reads: DataReads  # the data files read, for result.json's data_fingerprint
    kept: Path | None = None  # the checkpoint of the trained state, once written


def _execute(cfg: DictConfig, ctx: _RunContext) -> None:
    result, resume = ctx.result, ctx.resume
    tracker, started = MemoryTracker(), time.time()
    seed_everything(cfg.seed)
    task = get_task(cfg.task.name)
    splits = _load_data(cfg, task, result)
    with tracker.phase("load"):
        loaded = load_model(cfg.model, enum_value(cfg.dtype), cfg.device, len(task.label_names))
    if cfg.steps:
        check_ranks(cfg, loaded.model)  # needs the shapes; before any evaluation or training
    result.update(
        model_source=loaded.source,
        model_notes=loaded.notes,
        model_parameters=sum(p.numel() for p in loaded.model.parameters()),
    )
    kind = model_kind(cfg.model)
    scorer = build_scorer(kind, task, loaded.tokenizer, cfg.task.template, cfg.model.max_length)
    if task.generative:
        scorer.use_generation_stop(cfg.task.generation_stop)
    if cfg.icl_demos:
        icl = icl_setup(
            enum_value(cfg.icl_demo_sets),
            IclInputs(
                task,
                cfg.task.template,
                lambda: official_split(task, cfg.task, "train"),
                splits.train,
                splits.test,
                cfg.icl_demos,
                cfg.task.num_eval,
                cfg.data_seed,
            ),
        )
        scorer.context, splits.test, result["icl_demos"] = icl.context, icl.test, icl.used
    result["data_fingerprint"] = data_fingerprint(ctx.reads, cfg.task)  # every data file is read
    evaluate = Evaluator(task, scorer, loaded.model, cfg.eval_batch_size, replicate=cfg.fsdp)
    earlier = resume.state["extra"] if resume is not None else {}
    test_records: list[dict[str, Any]] | None = None  # predictions.jsonl of the reported test
    if "zero_shot" in earlier:
        result["zero_shot"] = earlier["zero_shot"]
    elif cfg.zero_shot:
        label = "icl" if cfg.icl_demos else "zero-shot"
        log.info("%s evaluation of %s on %d test examples", label, cfg.model.name, len(splits.test))
        with tracker.phase("zero_shot"):
            if cfg.steps:
                result["zero_shot"] = evaluate(splits.test)
            else:  # the reported test: its predictions are written
                result["zero_shot"], test_records = evaluate.test_pass(splits.test)
        log.info("%s test %s", label, result["zero_shot"])
    outcome, stats, trainer = TrainingOutcome(), {}, None
    if cfg.steps:
        add_adapter(loaded.model, cfg.optimizer, cfg.model)
        if cfg.fsdp:
            distributed.shard_model(loaded.model)
            scorer.single_forward = True  # the same number of forwards on every rank
        objective = build_objective(cfg.objective, scorer)
        optimizer = build_optimizer(cfg.optimizer, loaded.model, objective, cfg.steps, cfg.seed)
        result["trainable_parameters"] = sum(p.numel() for p in optimizer.trainable().values())
        extra = {k: result[k] for k in ("zero_shot",) if k in result}
        record = TrainingRecord(ctx.metrics, ctx.checkpointer, ctx.flags, extra)
        if optimizer.replayable and distributed.is_main():
            record.trajectory = TrajectoryLog(ctx.out_dir / TRAJECTORY_FILE)
        settings = dataclasses.replace(
            TrainingSettings.from_config(cfg), checkpoint=checkpoint_kind(cfg, optimizer)
        )
        trainer = Trainer(settings, optimizer, splits, evaluate, record)
        with tracker.phase("train"):
            outcome = trainer.run(resume)
    try:
        if trainer is not None:
            stats = trainer.optimizer.stats()
            if distributed.shards_parameters():  # a stop mid-evaluation could not gather shards
                _keep_trained_state(trainer, ctx)
                if ctx.flags.stop is not None:  # received while it was written
                    raise Interrupted("stopped", ctx.flags.stop)
        with tracker.phase("eval"):
            if outcome.steps == 0 and test_records is not None:
                result["test"] = result["zero_shot"]
            else:
                log.info("test evaluation on %d examples", len(splits.test))
                result["test"], test_records = evaluate.test_pass(splits.test)
        log.info("test %s", result["test"])
        if distributed.is_main():
            write_predictions(ctx.out_dir / PREDICTIONS_FILE, test_records)
        if cfg.save_weights:
            _save_weights(loaded.model, ctx.out_dir)
    except Interrupted as err:
        if trainer is None or err.at_once:
            raise
        path = _keep_trained_state(trainer, ctx)
        kept = (
            f"the trained state (step {trainer.settings.steps}) is kept at {path}: re-run the same "
            "command to evaluate it without training again"
            if path
            else "nothing could be kept: re-running trains again"
        )
        raise Interrupted(
            f"stopped by {signal_name(err.signum)} after training, during the final evaluation; "
            + kept,
            err.signum,
        ) from None
    result.update(_outcome_fields(outcome), optimizer_stats=stats)
    result.update(memory=tracker.phases, wall_time_s=round(time.time() - started, 2))


def checkpoint_kind(cfg: DictConfig, optimizer: Any) -> str:
    """checkpoint=auto: a trajectory checkpoint for a pure ZO method (a few KB, replayed on
    resume), full weights for the others and under FSDP."""
    asked = enum_value(cfg.get("checkpoint", "auto"))
    if asked != "auto":
        return asked
    return "trajectory" if optimizer.replayable and not cfg.fsdp else "full"


def _keep_trained_state(trainer: Trainer, ctx: _RunContext) -> Path | None:
    """The checkpoint of the trained state as it is evaluated (after the best-dev restore), so
    that a stop during the final evaluation loses no training: a re-run loads it, trains 0 steps
    and evaluates. The checkpoint a resumed run started from is that state already. A second
    Ctrl-C may still cut the write short; the previous checkpoint then stays (writes are atomic)."""
    steps = trainer.settings.steps
    if ctx.resume is not None and ctx.resume.step >= steps:
        return ctx.resume.path
    if ctx.kept is not None:
        return ctx.kept
    with ctx.flags.deferred():  # a second SIGTERM waits for the write; a second Ctrl-C does not
        ctx.kept = trainer.save(steps)
    return ctx.kept


def _apply_threads(cfg: DictConfig) -> None:
    """torch's CPU threads as `threads` asks (0 keeps torch's default)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def _announce(cfg: DictConfig, out_dir: Path, handler: logging.Handler | None) -> None:
    """The console gets one header line; run.log also gets the whole resolved config."""
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = auto if cfg.device == "auto" else cfg.device
    log.info("%s", run_header(cfg, out_dir, _method_record(cfg).name, device))
    to_file_only(handler, log, "resolved config:\n" + OmegaConf.to_yaml(cfg, resolve=True).rstrip())


def _save_weights(model: torch.nn.Module, out_dir: Path) -> None:
    """The trained model's parameters (adapters included), as safetensors."""
    from safetensors.torch import save_file

    tensors = distributed.full_tensors(dict(model.named_parameters()))  # every rank gathers
    if not distributed.is_main():
        return
    save_file(tensors, str(out_dir / WEIGHTS_FILE))
    (out_dir / WEIGHTS_FILE).chmod(file_mode())  # safetensors writes 0600 whatever the umask
    log.info("weights written to %s", out_dir / WEIGHTS_FILE)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment into its run directory: a finished directory is not run again, an
    interrupted one continues from its checkpoint (unless resume=false). Whatever happens after
    the folder is checked writable, result.json records this attempt's status and reason."""
    validate(cfg)
    out_dir = resolve_output_dir(cfg)
    reuse = reusable_result(out_dir, cfg)
    if reuse.record is not None:
        return _skipped(out_dir, reuse)
    cfg.device = distributed.setup(cfg.device)
    main = distributed.is_main()
    if main:
        ensure_writable(out_dir)  # before the lock and anything loaded, with the path named
    lock = RunLock.acquire(out_dir) if main else None  # one writer: a second process is refused
    try:
        if lock is not None and distributed.world_size() == 1:
            reuse = reusable_result(out_dir, cfg)  # finished by another process meanwhile?
            if reuse.record is not None:
                return _skipped(out_dir, reuse)
        rerun = _set_aside_stale(out_dir, reuse.note) if main and reuse.stale else ""
        return _run_locked(cfg, out_dir, main, rerun)
    finally:
        if lock is not None:
            lock.release()


def _skipped(out_dir: Path, reuse: Reuse) -> dict[str, Any]:
    """The finished run's result, not run again; the log says why it is trusted."""
    note = f" ({reuse.note})" if reuse.note else ""
    log.info("skipping %s: already complete%s", out_dir, note)
    return {**reuse.record.to_json(), "skipped": True}


def _set_aside_stale(out_dir: Path, why: str) -> str:
    """A finished run whose data changed is run again in place; its result, predictions and
    weights are kept under dated names (zoft-table reads only result.json), not overwritten.
    Returns the log line saying so."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    kept = []
    for name in (RESULT_FILE, PREDICTIONS_FILE, WEIGHTS_FILE):
        path = out_dir / name
        if path.exists():
            target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
            path.rename(target)
            kept.append(target.name)
    return f"re-running {out_dir}: {why}; the earlier result is kept as {', '.join(kept)}"


def _run_locked(cfg: DictConfig, out_dir: Path, main: bool, rerun: str = "") -> dict[str, Any]:
    """One attempt at the run, its directory locked by this process; `rerun` says why a finished
    run is run again (logged to the console and run.log)."""
    if main:
        atomic_write(out_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    checkpointer = Checkpointer(out_dir, config_digest(cfg))
    handler = attach_file_log(out_dir) if main else None
    if rerun:
        log.warning("%s", rerun)
    _apply_threads(cfg)  # before environment() records the thread count
    _announce(cfg, out_dir, handler)
    result = {**_base_result(cfg), "output_dir": str(out_dir), **environment()}
    result["world_size"] = distributed.world_size()
    metrics = MetricsLog(out_dir / METRICS_FILE if main else None)
    with signal_flags() as flags:
        try:
            resume = _checkpoint_to_resume(cfg, out_dir, checkpointer, main)
            if main and resume is None:
                _set_aside_partial_metrics(out_dir)
            if main:
                resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
                dev_key = f"dev_{get_task(cfg.task.name).metric}"
                metrics.sinks = build_sinks(cfg.logger, out_dir, resolved, dev_key)
            with recording_reads() as reads:
                ctx = _RunContext(out_dir, result, flags, checkpointer, resume, metrics, reads)
                _execute(cfg, ctx)
            result["status"] = "complete"
        except Interrupted as err:
            if err.at_once:
                err = _stopped_at_once(err, checkpointer)
            result.update(status="interrupted", reason=str(err))
            raise err from None
        except BaseException as err:
            problem = write_failure(err, out_dir)
            result["status"] = "failed"
            result["reason"] = problem or f"{type(err).__name__}: {err}"
            if problem is not None:
                raise RunDirError(problem) from None
            raise
        finally:
            result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            with flags.shielded():  # a signal now waits for this attempt's record
                unwritten = _record(out_dir, result, metrics, checkpointer) if main else None
                if handler is not None:
                    logging.getLogger().removeHandler(handler)
                    handler.close()
                _after_record(result, unwritten, flags)
    return copy.deepcopy(RunResult.from_json(result).to_json())


def _record(
    out_dir: Path, result: dict[str, Any], metrics: MetricsLog, checkpointer: Checkpointer
) -> str | None:
    """Write this attempt's result.json (and finish the loggers); why it could not be, if so."""
    path = out_dir / RESULT_FILE
    try:
        write_json(path, RunResult.from_json(result).to_json())
    except OSError as err:
        return f"could not write {path} ({err.strerror or err})"
    try:
        metrics.finish(result)
    except OSError as err:  # metrics.csv, a W&B folder: result.json is written, say what is not
        log.error("could not finish the metrics logs: %s", err)
    if result["status"] == "complete":
        checkpointer.remove()
    elif result["status"] == "failed":
        log.info("%s records why this attempt failed", path)
    return None


def _after_record(result: dict[str, Any], unwritten: str | None, flags: SignalFlags) -> None:
    """Say what was not recorded; a finished run whose result.json could not be written is an
    error (its numbers are in the message), and a stop signal noted while writing still stops."""
    status = result["status"]
    if unwritten is not None:
        if status == "complete":
            raise RunDirError(
                f"the run finished (test {result.get('test')}) but {unwritten}; make the folder "
                "writable and re-run the same command"
            )
        log.error("%s: this attempt (%s) is not recorded", unwritten, status)
    if flags.stop is not None and status != "interrupted":
        raise Interrupted(
            f"stopped by {signal_name(flags.stop)} as the run ended (status {status}, "
            + ("not recorded)" if unwritten else "recorded in result.json)"),
            flags.stop,
        )


def _stopped_at_once(err: Interrupted, checkpointer: Checkpointer) -> Interrupted:
    """A second Ctrl-C's message: what is kept to resume from."""
    latest = checkpointer.latest()
    kept = (
        f"the last complete checkpoint {latest} is kept: re-run the same command to resume from it"
        if latest is not None
        else "no checkpoint had been written yet: re-running starts over"
    )
    return Interrupted(f"{err}; {kept}", err.signum, at_once=True)


def _checkpoint_to_resume(
    cfg: DictConfig, out_dir: Path, checkpointer: Checkpointer, main: bool
) -> Checkpoint | None:
    """The checkpoint this attempt continues from: the latest one, unless resume=false or the
    data changed since the checkpoints were written (then they are kept under a new name and
    the run starts over)."""
    if not cfg.steps:
        return None
    if cfg.resume:
        check = checkpoint_data_check(out_dir, cfg)
        if check.same:
            return checkpointer.load()
        if main and (moved := checkpointer.set_aside()) is not None:
            log.warning(
                "starting over: the checkpoints in %s were trained on other data (%s); they are "
                "kept at %s",
                out_dir,
                check.note,
                moved,
            )
        return None
    if main and (moved := checkpointer.set_aside()) is not None:
        log.info("resume=false: starting over; the earlier checkpoints are kept at %s", moved)
    return None


def _set_aside_partial_metrics(out_dir: Path) -> None:
    """A failed earlier attempt keeps its metrics under a new name rather than being appended to."""
    for name in (METRICS_FILE, "metrics.csv", TRAJECTORY_FILE):
        path = out_dir / name
        if path.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            path.rename(out_dir / f"{path.stem}.{stamp}{path.suffix}")

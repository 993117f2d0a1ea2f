"""Metric loggers selected by `logger=<name>`, registered by name. metrics.jsonl is always written;
a logger adds a sink: `csv` a metrics.csv beside it, `wandb` a Weights & Biases run (offline mode
works without an account: `logger=wandb logger.mode=offline`, then `wandb sync` later)."""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from zoft.errors import ZoftError
from zoft.registry import Registry
from zoft.run.rundir import LOG_FILE, atomic_write

log = logging.getLogger(__name__)


class MetricSink(Protocol):
    """Where metrics lines go besides metrics.jsonl (zoft.run.loggers: csv, wandb)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def truncate_after(self, step: int) -> None: ...

    def finish(self, result: dict[str, Any]) -> None: ...


class MetricsLog:
    """metrics.jsonl, one JSON object per logged step, flushed as it goes, plus the sinks of the
    configured logger."""

    def __init__(self, path: Path | None, sinks: Sequence[MetricSink] = ()) -> None:
        self.path = path  # None: write nothing (a data-parallel rank other than 0)
        self.sinks = list(sinks)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after `step` (a resumed run logs them again)."""
        if self.path is not None and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            atomic_write(self.path, "".join(line + "\n" for line in kept))
        for sink in self.sinks:
            sink.truncate_after(step)

    def finish(self, result: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.finish(result)


class RunLogHandler(logging.FileHandler):
    """run.log. A line it cannot write (the folder made read-only, a full disk) is said once on
    stderr, not with the logging module's traceback per line; the console log goes on."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not self.failed:
            self.failed = True
            err = sys.exc_info()[1]
            print(
                f"zoft: could not write {self.baseFilename} ({err}); the log continues on the "
                "console only",
                file=sys.stderr,
            )


def attach_file_log(run_dir: Path) -> logging.Handler:
    """Mirror every log line of this run into <run_dir>/run.log."""
    handler = RunLogHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


LOGGERS: Registry = Registry("logger")

WANDB_MODES = ("offline", "online", "disabled")
_WANDB_ID_FILE = "wandb_run_id"


class LoggerError(ZoftError):
    """A logger that cannot start (a missing package, a bad setting)."""


def build_sinks(
    cfg: Any, run_dir: Path, resolved: dict[str, Any], dev_key: str
) -> list[MetricSink]:
    """The sinks of logger `cfg.name` for one run (none for `logger=none`)."""
    return LOGGERS.get(cfg.name)(cfg, run_dir, resolved, dev_key)


@LOGGERS.register("none")
def _no_logger(cfg: Any, run_dir: Path, resolved: dict[str, Any], dev_key: str) -> list:
    return []


CSV_COLUMNS = [
    "step",
    "loss",
    "lr",
    "projected_grad",
    "elapsed_s",
    "examples_per_s",
    "forwards",
    "backwards",
]


class CsvSink:
    """metrics.csv with a fixed header, so rows with and without a dev value line up."""

    def __init__(self, path: Path, dev_key: str) -> None:
        self.path = path
        self.columns = [*CSV_COLUMNS, dev_key, "skipped"]
        if not path.is_file():
            atomic_write(path, ",".join(self.columns) + "\n")

    def write(self, record: dict[str, Any]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(
            "" if record.get(c) is None else record[c] for c in self.columns
        )
        with self.path.open("a", encoding="utf-8") as f:
            f.write(buffer.getvalue())

    def truncate_after(self, step: int) -> None:
        rows = list(csv.reader(self.path.read_text(encoding="utf-8").splitlines()))
        kept = [rows[0], *(r for r in rows[1:] if r and int(r[0]) <= step)]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(kept)
        atomic_write(self.path, buffer.getvalue())

    def finish(self, result: dict[str, Any]) -> None:
        pass


@LOGGERS.register("csv")
def _csv_logger(cfg: Any, run_dir: Path, resolved: dict[str, Any], dev_key: str) -> list:
    return [CsvSink(run_dir / "metrics.csv", dev_key)]


class WandbSink:
    """One W&B run per run directory; a resumed run continues the same W&B run id."""

    def __init__(self, cfg: Any, run_dir: Path, resolved: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as err:
            raise LoggerError(
                "logger=wandb needs the wandb package: pip install 'zoft[wandb]' (or use "
                "logger=csv)"
            ) from err
        if cfg.mode not in WANDB_MODES:
            raise LoggerError(
                f"logger.mode={cfg.mode!r} is invalid: use one of {', '.join(WANDB_MODES)}"
            )
        id_file = run_dir / _WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        atomic_write(id_file, run_id + "\n")
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags or []),
            name=_run_name(resolved),
            mode=cfg.mode,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=resolved,
        )
        log.info("wandb run %s (%s mode) in %s", run_id, cfg.mode, run_dir / "wandb")

    def write(self, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        self.run.log(values, step=record["step"])

    def truncate_after(self, step: int) -> None:
        pass  # W&B keeps what it logged; a resumed run logs the later steps again

    def finish(self, result: dict[str, Any]) -> None:
        for split in ("zero_shot", "dev", "test"):
            for metric, value in (result.get(split) or {}).items():
                self.run.summary[f"{split}_{metric}"] = value
        self.run.summary["status"] = result.get("status")
        self.run.finish(exit_code=0 if result.get("status") == "complete" else 1)


def _run_name(resolved: dict[str, Any]) -> str:
    method = resolved["optimizer"]["name"] if resolved.get("steps") else "eval"
    return f"{resolved['task']['name']}-{resolved['model']['name']}-{method}-seed{resolved['seed']}"


@LOGGERS.register("wandb")
def _wandb_logger(cfg: Any, run_dir: Path, resolved: dict[str, Any], dev_key: str) -> list:
    return [WandbSink(cfg, run_dir, resolved)]

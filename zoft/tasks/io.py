"""Readers for the official local formats; every failure names the file (and line)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoft.errors import ZoftError

HUB = "hub"  # task.data_dir=hub loads from the hub even when ZOFT_DATA is set


@dataclass
class DataReads:
    """What a run's data loading touched: every local file read (in order), the paths whose
    absence chose what was read (a ready LM-BFF split that is not there), and the hub datasets
    loaded. A run's data fingerprint (zoft.run.fingerprint) is computed from it."""

    files: list[Path] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    hub: list[dict[str, str]] = field(default_factory=list)


_READS: ContextVar[DataReads | None] = ContextVar("zoft_data_reads", default=None)


@contextmanager
def recording_reads() -> Iterator[DataReads]:
    """Collect the data files read inside the block (every reader goes through require_file)."""
    reads = DataReads()
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def note_absent(path: Path) -> None:
    """A path looked for and not found, whose absence chose what was read instead (a ready
    k-shot folder): should it appear later, the run would read other files."""
    reads = _READS.get()
    if reads is not None and path not in reads.absent:
        reads.absent.append(path)


def note_hub(repo: str, config: str, revision: str, data_files: str) -> None:
    """A hub dataset loaded: there are no local files, so its id, config and revision stand in."""
    reads = _READS.get()
    entry = {"repo": repo, "config": config, "revision": revision, "data_files": data_files}
    if reads is not None and entry not in reads.hub:
        reads.hub.append(entry)


class DataError(ZoftError, ValueError):
    """Missing or malformed task data; the message names the file, the line and the fix."""


def require_file(path: Path) -> Path:
    """The path of a data file about to be read (recorded for the run's data fingerprint)."""
    if not path.is_file():
        raise DataError(
            f"Data file not found: {path}. Point task.data_dir (or the ZOFT_DATA environment "
            "variable) at a directory laid out like ../shared/data, or unset both to use the hub."
        )
    reads = _READS.get()
    if reads is not None and path not in reads.files:
        reads.files.append(path)
    return path


def read_jsonl_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line, so later errors can name the line."""
    rows = []
    with require_file(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object")
            rows.append((number, row))
    return rows


def read_tsv(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a headed, unquoted TSV; the last header field may repeat."""
    with require_file(path).open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}, line 1: header lacks column(s) {missing}; found {header}")
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) < len(header):
                raise DataError(
                    f"{path}, line {number}: {len(fields)} fields, expected {len(header)} ({header})"
                )
            row = dict(zip(header, fields, strict=False))
            row["__last__"] = fields[-1]
            yield number, row


def parse_label(value: Any, mapping: dict[Any, int], path: Path, line: int) -> int:
    """Map a raw label to its index, with an error naming the place of a bad value."""
    if value not in mapping:
        raise DataError(
            f"{path}, line {line}: unknown label {value!r}; expected one of {list(mapping)}"
        )
    return mapping[value]


def require_keys(row: dict[str, Any], keys: tuple[str, ...], path: Path, line: int) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{path}, line {line}: missing field(s) {missing}")


def read_headless_csv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a CSV without header (LM-BFF's sst-5 and trec files)."""
    with require_file(path).open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(columns):
                raise DataError(
                    f"{path}, line {reader.line_num}: {len(fields)} fields, expected "
                    f"{len(columns)} ({list(columns)})"
                )
            yield reader.line_num, dict(zip(columns, fields, strict=True))


def read_json(path: Path) -> Any:
    """A whole JSON document (SQuAD, DROP), with an error naming the file and position."""
    with require_file(path).open(encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg})"
            ) from err

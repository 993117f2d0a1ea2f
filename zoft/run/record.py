"""The schema of result.json as typed records: what a run writes (RunResult, with its MemoryRecord
per phase and its MethodRecord) and how every reader reads it back. No torch import: the report
side reads run directories through this module.

Schema versions: 2 adds `schema_version` and the `method` section; a file without
`schema_version` is version 1 and is upgraded on reading (see _V1_METHODS).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2

# The evaluation-only modes, their row labels and their place before every trained method.
MODE_LABELS = {"zero-shot": "zero-shot", "icl": "ICL"}
FINE_TUNE = "fine-tune"


@dataclass(frozen=True)
class CudaPeak:
    """One CUDA device in one phase: allocated at the phase's end, its peak, the peak reserved."""

    allocated_mib: float | None = None
    max_allocated_mib: float | None = None
    reserved_mib: float | None = None

    @property
    def peak_mib(self) -> float:
        value = self.max_allocated_mib if self.max_allocated_mib is not None else self.allocated_mib
        return math.nan if value is None else float(value)


@dataclass(frozen=True)
class PhaseMemory:
    """The peaks of one phase (load, zero_shot, train, eval)."""

    host_peak_rss_mib: float | None = None
    host_peak_scope: str | None = None  # phase: exact for the phase; process: since start
    cuda: dict[str, CudaPeak] = field(default_factory=dict)

    @property
    def peak_mib(self) -> float:
        """The largest CUDA device peak when the phase ran on CUDA, else the host peak RSS."""
        if self.cuda:
            return max(d.peak_mib for d in self.cuda.values())
        return math.nan if self.host_peak_rss_mib is None else float(self.host_peak_rss_mib)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "host_peak_rss_mib": self.host_peak_rss_mib,
            "host_peak_scope": self.host_peak_scope,
        }
        data = {k: v for k, v in data.items() if v is not None}
        if self.cuda:
            data["cuda"] = {
                device: {k: v for k, v in dataclasses.asdict(peak).items() if v is not None}
                for device, peak in self.cuda.items()
            }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhaseMemory:
        cuda = {
            str(device): CudaPeak(**{k: v for k, v in (peak or {}).items() if k in _CUDA_KEYS})
            for device, peak in (data.get("cuda") or {}).items()
        }
        return cls(data.get("host_peak_rss_mib"), data.get("host_peak_scope"), cuda)


_CUDA_KEYS = {f.name for f in dataclasses.fields(CudaPeak)}


@dataclass(frozen=True)
class MemoryRecord:
    """result.json's `memory`: the peaks per phase, and the one way to read a peak."""

    phases: dict[str, PhaseMemory] = field(default_factory=dict)

    def peak_mib(self, *phases: str) -> float:
        """The largest peak over the named phases that ran (NaN when none did): CUDA peak allocated
        on GPU, host peak RSS on CPU."""
        peaks = [self.phases[p].peak_mib for p in phases if p in self.phases]
        peaks = [v for v in peaks if not math.isnan(v)]
        return max(peaks) if peaks else math.nan

    def device_peaks_mib(self, *phases: str) -> dict[str, float]:
        """Per CUDA device, its largest peak over the phases (empty for a CPU run)."""
        peaks: dict[str, float] = {}
        for name in phases:
            for device, peak in (self.phases[name].cuda if name in self.phases else {}).items():
                peaks[device] = max(peaks.get(device, -math.inf), peak.peak_mib)
        return dict(sorted(peaks.items()))

    def host_peaks_mib(self) -> dict[str, float]:
        return {
            name: phase.host_peak_rss_mib
            for name, phase in self.phases.items()
            if phase.host_peak_rss_mib is not None
        }

    def to_json(self) -> dict[str, Any]:
        return {name: phase.to_json() for name, phase in self.phases.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> MemoryRecord:
        return cls({name: PhaseMemory.from_json(p or {}) for name, p in (data or {}).items()})


@dataclass(frozen=True)
class MethodRecord:
    """What the tables need to know about a run's method without importing it: the optimizer's
    MethodFacts (zoft.optim.registry) for a fine-tuning run, the mode for an evaluation-only run."""

    name: str  # the optimizer, or the evaluation-only mode
    mode: str = FINE_TUNE
    display: str = ""
    paper_order: int = 0
    forwards: int = 0
    backwards: int = 0
    zeroth_order: bool = False
    lora: bool = False
    requires_adapter: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # the method's config defaults

    @classmethod
    def evaluation(cls, mode: str) -> MethodRecord:
        return cls(name=mode, mode=mode, display=MODE_LABELS.get(mode, mode))

    @classmethod
    def of_facts(
        cls, name: str, facts: dict[str, Any], defaults: dict[str, Any] | None = None
    ) -> MethodRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            name=name, **{k: v for k, v in facts.items() if k in known}, defaults=defaults or {}
        )

    @property
    def evaluation_only(self) -> bool:
        return self.mode != FINE_TUNE

    @property
    def default_adapter(self) -> str:
        return self.defaults.get("adapter") or ("lora" if self.lora else "none")

    def label(self, adapter: str | None = None) -> str:
        """The papers' row name; a method run on an adapter that is not its own gets it appended
        (LOZO (lora))."""
        label = self.display or self.name
        if not self.evaluation_only and adapter and adapter != self.default_adapter:
            label = f"{label} ({adapter})"
        return label

    @property
    def rank(self) -> float:
        """The row position: evaluation modes first (zero-shot, then ICL), then the methods by
        paper_order (see row_rank)."""
        if self.evaluation_only:
            return mode_rank(MODE_LABELS.get(self.mode, self.mode))
        return _METHODS_FROM + self.paper_order

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MethodRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_METHODS_FROM = 100.0  # ranks below are evaluation modes
PAPER_ONLY_FROM = 1e7  # ranks of rows only the paper has (in its csv order) start here


def mode_rank(label: str) -> float:
    """The rank of an evaluation mode's row label (zero-shot, ICL; other modes after them); NaN
    for a label that is not a mode."""
    labels = list(MODE_LABELS.values())
    if label in labels:
        return float(labels.index(label))
    return float(len(labels)) if label in MODE_LABELS else math.nan


# Schema migration v1 -> v2, frozen: the facts of the 7 methods that existed when result.json had
# no `method` section (copied from their zoft.optim registrations at that time). Version-1 files are
# only ever written by that code, so this table never needs updating; new methods write their own
# facts into their records.
_V1_METHODS: dict[str, dict[str, Any]] = {
    "mezo": dict(display="MeZO", paper_order=30, forwards=2, backwards=0, zeroth_order=True),
    "mezo-lora": dict(
        display="MeZO (LoRA)", paper_order=40, forwards=2, backwards=0, zeroth_order=True, lora=True
    ),
    "lozo": dict(display="LOZO", paper_order=70, forwards=2, backwards=0, zeroth_order=True),
    "lozo-m": dict(display="LOZO-M", paper_order=80, forwards=2, backwards=0, zeroth_order=True),
    "ft-lora": dict(display="FT (LoRA)", paper_order=100, forwards=1, backwards=1, lora=True),
    "lmao": dict(
        display="LMAO", paper_order=120, forwards=3, backwards=1, lora=True, requires_adapter="lora"
    ),
    "ft": dict(display="FT", paper_order=130, forwards=1, backwards=1),
}


def _v1_method(data: dict[str, Any]) -> MethodRecord:
    mode = data.get("mode") or FINE_TUNE
    if mode != FINE_TUNE:
        return MethodRecord.evaluation(mode)
    name = data.get("optimizer") or ""
    facts = _V1_METHODS.get(name)
    if facts is None:  # not a method of v1: its own name, after the known ones
        return MethodRecord(name=name, display=name, paper_order=10**6)
    return MethodRecord(name=name, **facts)


# The keys of result.json in the order they are written; a key whose value is None is written
# only when it is in _ALWAYS or its group was reached (the runner writes a group in one go, and
# within it null is a value: a run without dev evaluations has "dev": null).
_ALWAYS = {"status", "task", "model", "optimizer", "seed", "data_seed", "protocol", "k", "mode"}
_ALWAYS |= {"objective", "icl_demos", "hyperparameters", "config_digest", "zoft_version"}
_ALWAYS |= {"started_at"}
_OUTCOME = (
    "dev", "best_step", "steps", "forward_passes", "backward_passes", "train_loss_first",
    "train_loss_last", "train_time_s", "skipped_steps", "steps_below_resolution",
    "resumed_at_steps", "optimizer_stats",
)  # fmt: skip
_DATA = ("num_train", "num_dev", "num_test", "data_source", "data_notes", "data_fingerprint")
_MODEL = ("model_source", "model_notes", "model_parameters")


@dataclass
class RunResult:
    """result.json: one run's identity, environment, data, outcome and costs."""

    status: str = "running"
    task: str = ""
    model: str = ""
    optimizer: str = ""
    seed: int | None = None
    data_seed: int | None = None
    protocol: str | None = None
    k: int | None = None
    mode: str = FINE_TUNE
    method: MethodRecord | None = None
    objective: str | None = None
    icl_demos: int | None = None
    hyperparameters: dict[str, Any] | None = None
    config_digest: str | None = None
    zoft_version: str | None = None
    started_at: str | None = None
    output_dir: str | None = None
    packages: dict[str, Any] | None = None
    git_commit: str | None = None
    device_name: str | None = None
    torch_threads: int | None = None  # torch's CPU threads during the run
    world_size: int | None = None
    num_train: int | None = None
    num_dev: int | None = None
    num_test: int | None = None
    data_source: str | None = None
    data_notes: list[str] | None = None
    # the files read (path under the data root, size, sha256) or the hub dataset: checked before a
    # finished run is reused (zoft.run.fingerprint); absent from runs of earlier versions
    data_fingerprint: dict[str, Any] | None = None
    model_source: str | None = None
    model_notes: list[str] | None = None
    model_parameters: int | None = None
    zero_shot: dict[str, float] | None = None
    trainable_parameters: int | None = None
    test: dict[str, float] | None = None
    dev: dict[str, float] | None = None
    best_step: int | None = None
    steps: int | None = None
    forward_passes: int | None = None
    backward_passes: int | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    train_time_s: float | None = None
    skipped_steps: int | None = None
    steps_below_resolution: int | None = None
    resumed_at_steps: list[int] | None = None
    optimizer_stats: dict[str, Any] | None = None
    memory: MemoryRecord | None = None
    wall_time_s: float | None = None
    reason: str | None = None
    finished_at: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, kept as read
    run_dir: str | None = None  # where it was read from (not written: output_dir is where it ran)

    @classmethod
    def coerce(cls, result: RunResult | dict[str, Any]) -> RunResult:
        """A record as is, or a result.json dict read as one."""
        return result if isinstance(result, RunResult) else cls.from_json(result)

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def method_record(self) -> MethodRecord:
        return self.method if self.method is not None else _v1_method(self.to_json())

    @property
    def label(self) -> str:
        """The papers' name of the run's method: MeZO, FT (LoRA), zero-shot, LOZO (lora)."""
        return self.method_record.label((self.hyperparameters or {}).get("adapter"))

    @property
    def memory_record(self) -> MemoryRecord:
        return self.memory if self.memory is not None else MemoryRecord()

    @property
    def where(self) -> str:
        """The run directory: where it was read from, else where it ran."""
        return self.run_dir or self.output_dir or ""

    def to_json(self) -> dict[str, Any]:
        """The result.json dict: schema_version first, then the keys in field order."""
        reached = {"_outcome": self.steps is not None, "_data": self.num_train is not None}
        reached["_model"] = self.model_source is not None
        data: dict[str, Any] = {"schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            name = f.name
            if name in ("schema_version", "extra", "run_dir"):
                continue
            value = getattr(self, name)
            if value is None and not (name in _ALWAYS or reached.get(_group(name), False)):
                continue
            if isinstance(value, MemoryRecord | MethodRecord):
                value = value.to_json()
            data[name] = value
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """Any version of result.json; keys this version does not know are kept in `extra`."""
        data = dict(data)
        version = data.pop("schema_version", 1)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "schema_version"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        if "memory" in known:
            known["memory"] = MemoryRecord.from_json(known["memory"])
        if isinstance(known.get("method"), dict):
            known["method"] = MethodRecord.from_json(known["method"])
        record = cls(**known, schema_version=version, extra=data)
        if record.method is None and version < 2:
            record.method = _v1_method(known)
        return record


def _group(name: str) -> str:
    if name in _OUTCOME:
        return "_outcome"
    if name in _DATA:
        return "_data"
    return "_model" if name in _MODEL else ""


@dataclass(frozen=True)
class ReadOutcome:
    """A result.json read back: the record, or why there is none."""

    record: RunResult | None
    reason: str = ""


def read_record(path: Path) -> ReadOutcome:
    """result.json at `path` (a file or a run directory); a missing, truncated or unreadable file
    is a reason, never an exception."""
    path = Path(path)
    if path.is_dir():
        path = path / "result.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return ReadOutcome(None, f"{path}: no result.json")
    except (OSError, UnicodeDecodeError) as err:
        return ReadOutcome(None, f"{path}: unreadable ({err})")
    except json.JSONDecodeError as err:
        return ReadOutcome(None, f"{path}: truncated or not JSON ({err})")
    if not isinstance(data, dict):
        return ReadOutcome(None, f"{path}: not a result object")
    try:
        record = RunResult.from_json(data)
    except TypeError as err:
        return ReadOutcome(None, f"{path}: not a result.json of any known version ({err})")
    record.run_dir = str(path.parent)
    return ReadOutcome(record)

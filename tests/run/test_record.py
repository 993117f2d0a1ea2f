"""result.json as typed records (zoft.run.record): both schema versions read, the written keys and
their order, unreadable files as reasons, and the one finished-run check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zoft.errors import RunConfigError
from zoft.optim import OPTIMIZERS
from zoft.run.record import (
    _V1_METHODS,
    SCHEMA_VERSION,
    MethodRecord,
    RunResult,
    read_record,
)
from zoft.run.rundir import config_digest, finished_result

REPO = Path(__file__).resolve().parents[2]
SUMMARIES = sorted((REPO / "results" / "tables" / "mini" / "runs").rglob("result.json"))


def test_the_committed_summaries_read_with_every_key_in_order():
    """The mini tables' cells: version 1 (the first runs) and version 2 (issue 17's re-runs)."""
    assert SUMMARIES
    versions = set()
    for path in SUMMARIES:
        raw = json.loads(path.read_text())
        outcome = read_record(path)
        assert outcome.record is not None, outcome.reason
        record = outcome.record
        versions.add(record.schema_version)
        assert record.schema_version == raw.get("schema_version", 1)
        assert record.run_dir == str(path.parent)
        written = record.to_json()
        assert {k: written[k] for k in raw} == raw
        assert [k for k in written if k in raw] == list(raw)  # the same order
    assert versions == {1, 2}  # version-1 files are still read (the migration is exercised)


def test_version_1_methods_get_their_frozen_facts():
    labels = {}
    for path in SUMMARIES:
        record = read_record(path).record
        labels[record.method_record.name] = record.label
    assert labels["mezo"] == "MeZO"
    assert labels["lozo-m"] == "LOZO-M"
    assert labels["ft-lora"] == "FT (LoRA)"
    assert labels["lmao"] == "LMAO"
    assert labels["zero-shot"] == "zero-shot"


@pytest.mark.parametrize("name", sorted(_V1_METHODS))
def test_the_frozen_v1_table_agrees_with_the_methods_registered_today(name):
    """The migration table was copied from these registrations; a method's facts may change
    later (its new records carry them), but when this was written they agreed."""
    facts = OPTIMIZERS.facts(name).as_record()
    v1 = MethodRecord(name=name, **_V1_METHODS[name]).to_json()
    assert {k: v1[k] for k in facts} == facts


def _new_result(**changes) -> RunResult:
    method = MethodRecord.of_facts("mezo", OPTIMIZERS.facts("mezo").as_record(), {"lr": 1e-6})
    base = dict(task="sst2", model="tiny-opt", optimizer="mezo", seed=0, data_seed=13)
    return RunResult(**base, protocol="kshot", k=16, method=method, **changes)


def test_a_new_result_starts_with_its_version_and_keeps_the_runner_order():
    data = _new_result(status="complete", test={"accuracy": 0.5}, steps=10, reason=None).to_json()
    keys = list(data)
    assert keys[0] == "schema_version" and data["schema_version"] == SCHEMA_VERSION == 2
    assert keys[1:10] == ["status", "task", "model", "optimizer", "seed", "data_seed", "protocol",
                          "k", "mode"]  # fmt: skip
    assert keys[10] == "method" and data["method"]["display"] == "MeZO"
    assert keys.index("test") < keys.index("dev") < keys.index("steps")
    assert "reason" not in data  # never set
    assert data["dev"] is None and data["best_step"] is None  # the outcome group was written


def test_a_run_that_failed_before_training_writes_no_outcome_keys():
    data = _new_result(status="failed", reason="RuntimeError: boom").to_json()
    assert "dev" not in data and "steps" not in data and "memory" not in data
    assert data["k"] == 16 and data["reason"] == "RuntimeError: boom"


def test_a_new_result_round_trips():
    record = _new_result(status="complete", steps=5, memory=None, extra={"batch_size": 8})
    again = RunResult.from_json(json.loads(json.dumps(record.to_json())))
    assert again.to_json() == record.to_json()
    assert again.method == record.method and again.extra == {"batch_size": 8}


def test_evaluation_only_runs_record_their_mode():
    record = RunResult(optimizer="ft", mode="icl", method=MethodRecord.evaluation("icl"))
    assert record.label == "ICL"
    assert record.method_record.rank < _new_result().method_record.rank


@pytest.mark.parametrize(
    ("content", "reason"),
    [('{"status": "compl', "truncated or not JSON"), ("[1, 2]", "not a result object")],
)
def test_a_truncated_or_odd_file_is_a_reason_not_an_exception(tmp_path, content, reason):
    (tmp_path / "result.json").write_text(content)
    outcome = read_record(tmp_path)
    assert outcome.record is None and reason in outcome.reason


def test_a_missing_file_is_a_reason(tmp_path):
    assert "no result.json" in read_record(tmp_path).reason


def _cfg(tmp_path: Path):
    return OmegaConf.create({"output_dir": str(tmp_path), "task": {"name": "sst2"}, "seed": 0})


def _write(tmp_path: Path, **fields) -> None:
    (tmp_path / "result.json").write_text(json.dumps(fields))


def test_finished_result_is_a_complete_run_of_the_same_config(tmp_path):
    cfg = _cfg(tmp_path)
    assert finished_result(tmp_path, cfg) is None  # nothing there
    _write(tmp_path, status="interrupted", config_digest=config_digest(cfg))
    assert finished_result(tmp_path, cfg) is None  # not finished
    _write(tmp_path, status="complete", config_digest=config_digest(cfg))
    assert finished_result(tmp_path, cfg).complete
    _write(tmp_path, status="complete", config_digest="0123456789")
    with pytest.raises(RunConfigError, match="different config"):
        finished_result(tmp_path, cfg)

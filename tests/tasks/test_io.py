"""Malformed or missing data gives an error naming the file and the line."""

import pytest

from zoft.tasks import get_task
from zoft.tasks.io import DataError


def test_malformed_jsonl_line_is_named(tmp_path):
    folder = tmp_path / "superglue" / "RTE"
    folder.mkdir(parents=True)
    good = '{"premise": "a.", "hypothesis": "b", "label": "entailment", "idx": 0}\n'
    (folder / "train.jsonl").write_text(good + "{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: not valid JSON"):
        get_task("rte").load_local("train", tmp_path)


def test_unknown_label_is_named(tmp_path):
    folder = tmp_path / "superglue" / "RTE"
    folder.mkdir(parents=True)
    (folder / "val.jsonl").write_text('{"premise": "a.", "hypothesis": "b", "label": "maybe"}\n')
    with pytest.raises(DataError, match=r"val\.jsonl, line 1: unknown label 'maybe'"):
        get_task("rte").load_local("validation", tmp_path)


def test_short_tsv_row_is_named(tmp_path):
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nno label here\n")
    with pytest.raises(DataError, match=r"train\.tsv, line 3: 1 fields, expected 2"):
        get_task("sst2").load_local("train", tmp_path)


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(
        DataError, match=r"Data file not found: .*glue/SST-2/dev\.tsv.*task\.data_dir"
    ):
        get_task("sst2").load_local("validation", tmp_path)

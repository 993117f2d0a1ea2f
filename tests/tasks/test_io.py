"""Malformed or missing data gives an error naming the file and the line."""

import json

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


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


CB_ROW = '{"premise": "a.", "hypothesis": "b", "label": "entailment", "idx": 0}\n'


def test_broken_cb_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "superglue" / "CB" / "train.jsonl", CB_ROW * 2 + '{"premise": "a.",\n')
    with pytest.raises(DataError) as err:
        get_task("cb").load_local("train", tmp_path)
    assert f"{path}, line 3: not valid JSON" in str(err.value)


def test_cb_row_without_hypothesis_names_file_line_and_field(tmp_path):
    path = _write(
        tmp_path / "superglue" / "CB" / "val.jsonl",
        CB_ROW + '{"premise": "a.", "label": "neutral"}\n',
    )
    with pytest.raises(DataError) as err:
        get_task("cb").load_local("validation", tmp_path)
    assert f"{path}, line 2: missing field(s) ['hypothesis']" in str(err.value)


def test_jsonl_line_that_is_not_an_object_is_named(tmp_path):
    path = _write(tmp_path / "superglue" / "WiC" / "train.jsonl", '["a", "list"]\n')
    with pytest.raises(DataError) as err:
        get_task("wic").load_local("train", tmp_path)
    assert f"{path}, line 1: expected a JSON object" in str(err.value)


@pytest.mark.parametrize(
    ("task", "relpath", "split"),
    [("cb", "superglue/CB/train.jsonl", "train"), ("mnli", "glue/MNLI/train.jsonl", "train")],
)
def test_line_number_after_a_blank_line_is_the_file_line(tmp_path, task, relpath, split):
    good = '{"premise": "a.", "hypothesis": "b", "label": "entailment"}\n'
    bad = '{"premise": "a.", "hypothesis": "b", "label": "maybe"}\n'
    path = _write(tmp_path / relpath, good + "\n" + bad)
    with pytest.raises(DataError) as err:
        get_task(task).load_local(split, tmp_path)
    assert f"{path}, line 3: unknown label 'maybe'" in str(err.value)  # actual: "line 2"


def test_multirc_passage_without_questions_names_file_and_line(tmp_path):
    good = '{"idx": 0, "passage": {"text": "P", "questions": []}}\n'
    path = _write(
        tmp_path / "superglue" / "MultiRC" / "train.jsonl", good + '{"passage": {"text": "P"}}\n'
    )
    with pytest.raises(DataError) as err:
        get_task("multirc").load_local("train", tmp_path)
    assert f"{path}, line 2: not a MultiRC passage" in str(err.value)
    assert "'questions'" in str(err.value)


def test_record_query_without_answers_names_file_and_line(tmp_path):
    row = '{"passage": {"text": "Ann met Bo.", "entities": [{"start": 0, "end": 2}]}, '
    path = _write(
        tmp_path / "superglue" / "ReCoRD" / "val.jsonl",
        row + '"qas": [{"query": "@placeholder left", "idx": 0}]}\n',
    )
    with pytest.raises(DataError) as err:
        get_task("record").load_local("validation", tmp_path)
    assert f"{path}, line 1: not a ReCoRD record" in str(err.value)
    assert "'answers'" in str(err.value)


def test_mnli_jsonl_row_without_label_names_file_and_line(tmp_path):
    good = '{"premise": "a.", "hypothesis": "b", "label": "neutral"}\n'
    path = _write(
        tmp_path / "glue" / "MNLI" / "train.jsonl", good + '{"premise": "a.", "hypothesis": "b"}\n'
    )
    with pytest.raises(DataError) as err:
        get_task("mnli").load_local("train", tmp_path)
    assert f"{path}, line 2: missing field(s) ['label']" in str(err.value)


def test_kshot_csv_with_wrong_field_count_names_file_and_line(tmp_path):
    folder = tmp_path / "k-shot" / "trec" / "16-13"
    path = _write(folder / "train.csv", '0,"How far , really ?"\n3,Who,is he ?\n')
    with pytest.raises(DataError) as err:
        get_task("trec").load_kshot_ready(tmp_path, 16, 13)
    assert f"{path}, line 2: 3 fields, expected 2" in str(err.value)


def test_sst5_eval_csv_with_bad_label_names_file_and_line(tmp_path):
    path = _write(tmp_path / "k-shot" / "sst-5" / "16-13" / "test.csv", '4,"great ."\n7,"what ?"\n')
    with pytest.raises(DataError) as err:
        get_task("sst5").load_local("validation", tmp_path)
    assert f"{path}, line 2: unknown label '7'" in str(err.value)


def test_tsv_header_without_a_required_column_is_named(tmp_path):
    path = _write(tmp_path / "glue" / "TREC" / "test.tsv", "text\tlabel\nWhy ?\tDESC\n")
    with pytest.raises(DataError) as err:
        get_task("trec").load_local("validation", tmp_path)
    assert f"{path}, line 1: header lacks column(s) ['question']" in str(err.value)


def test_invalid_squad_json_names_file_line_and_column(tmp_path):
    path = _write(
        tmp_path / "squad" / "dev-v1.1.json", '{"version": "1.1",\n "data": [\n  {"title": }]}\n'
    )
    with pytest.raises(DataError) as err:
        get_task("squad").load_local("validation", tmp_path)
    assert f"{path}, line 3 column 13: not valid JSON" in str(err.value)


def test_squad_question_without_answers_key_names_file_and_key(tmp_path):
    qa = {"id": "q1", "question": "Why?"}  # no "answers"
    data = {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [qa]}]}],
    }
    path = _write(tmp_path / "squad" / "train-v1.1.json", json.dumps(data))
    with pytest.raises(DataError) as err:
        get_task("squad").load_local("train", tmp_path)
    assert str(path) in str(err.value) and "missing 'answers'" in str(err.value)


def test_squad_question_with_empty_answers_names_the_question(tmp_path):
    qa = {"id": "q7", "question": "Why?", "answers": []}
    data = {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [qa]}]}],
    }
    path = _write(tmp_path / "squad" / "train-v1.1.json", json.dumps(data))
    with pytest.raises(DataError) as err:
        get_task("squad").load_local("train", tmp_path)
    assert f"{path}: question q7 has no answers" in str(err.value)


def test_invalid_drop_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "drop" / "drop_dataset_dev.json", '{\n"p1": {"passage": "x",,}\n}')
    with pytest.raises(DataError) as err:
        get_task("drop").load_local("validation", tmp_path)
    assert f"{path}, line 2" in str(err.value) and "not valid JSON" in str(err.value)


def test_drop_passage_without_qa_pairs_names_file(tmp_path):
    path = _write(tmp_path / "drop" / "drop_dataset_train.json", '{"p1": {"passage": "x"}}')
    with pytest.raises(DataError) as err:
        get_task("drop").load_local("train", tmp_path)
    assert f"{path}: not the official DROP JSON" in str(err.value)
    assert "'qa_pairs'" in str(err.value)

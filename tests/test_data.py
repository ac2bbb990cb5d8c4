"""Loading preference data: formats, validation messages (file, row, field), and counted skips."""

import json

import pytest

from sera.data import load_pairs
from sera.errors import SeraInputError
from tests.conftest import make_pairs, write_jsonl


def test_jsonl_keeps_ids_and_reads_chat_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_pairs(5, chat=True))
    loaded = load_pairs(str(path))
    assert [p.id for p in loaded.pairs] == [f"p{i}" for i in range(5)]
    assert isinstance(loaded.pairs[0].prompt, list) and loaded.rows_read == 5


def test_row_index_is_the_default_id(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in make_pairs(3)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [p.id for p in load_pairs(str(path)).pairs] == ["0", "1", "2"]


def test_json_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_pairs(4)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert len(load_pairs(str(tmp_path / "d.json")).pairs) == 4
    assert len(load_pairs(str(tmp_path / "d.parquet")).pairs) == 4


@pytest.mark.parametrize("bad_line, message", [
    ('{"prompt": "a", "chosen": "b"', "row 2: malformed JSON"),
    ('{"prompt": "a", "chosen": "b"}', "row 2: field 'rejected' is missing"),
    ('{"prompt": "a", "chosen": 3, "rejected": "c"}', "row 2: field 'chosen' must be a string"),
    ('{"prompt": "a", "chosen": [{"role": "assistant"}], "rejected": "c"}', "row 2: field 'chosen'"),
    ('{"prompt": "a", "chosen": "b", "rejected": "c", "id": 1.5}', "row 2: field 'id'"),
    ('["a", "b"]', "row 2: expected an object"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, bad_line, message):
    path = write_jsonl(tmp_path / "d.jsonl", [make_pairs(1)[0], bad_line, make_pairs(2)[1]])
    with pytest.raises(SeraInputError, match=message) as info:
        load_pairs(str(path))
    assert "d.jsonl" in str(info.value)
    loaded = load_pairs(str(path), skip_invalid=True)
    assert loaded.skipped["invalid"] == 1 and len(loaded.pairs) == 2


def test_degenerate_rows_are_skipped_and_counted(tmp_path):
    rows = make_pairs(4)
    rows[1]["chosen"] = "   "
    rows[2]["rejected"] = rows[2]["chosen"]
    loaded = load_pairs(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert len(loaded.pairs) == 2
    assert loaded.skipped == {"empty_response": 1, "identical_responses": 1}


def test_repeated_ids_are_an_error(tmp_path):
    rows = make_pairs(2)
    rows[1]["id"] = rows[0]["id"]
    with pytest.raises(SeraInputError, match="repeats row 1"):
        load_pairs(str(write_jsonl(tmp_path / "d.jsonl", rows)))


def test_mixed_chat_and_string_fields_are_an_error(tmp_path):
    row = make_pairs(1, chat=True)[0]
    row["rejected"] = "plain"
    with pytest.raises(SeraInputError, match="field 'rejected' must be a message list"):
        load_pairs(str(write_jsonl(tmp_path / "d.jsonl", [row])))


@pytest.mark.parametrize("name, message", [
    ("missing.jsonl", "no such file"), ("d.csv", "unsupported file type"), ("empty.jsonl", "no usable"),
])
def test_unreadable_sources(tmp_path, name, message):
    (tmp_path / "d.csv").write_text("a,b\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SeraInputError, match=message):
        load_pairs(str(tmp_path / name))

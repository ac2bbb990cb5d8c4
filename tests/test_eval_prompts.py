"""Evaluation prompts: every supported format, ids, and error messages naming file, line and field."""

from __future__ import annotations

import json

import pytest

from sera.errors import SeraInputError
from sera.eval.prompts import load_prompts


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_plain_list_json_and_txt(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(["hello?", "write a poem"]))
    records = load_prompts(tmp_path / "p.json")
    assert [(r.id, r.prompt) for r in records] == [(0, "hello?"), (1, "write a poem")]
    assert records[0].messages == [{"role": "user", "content": "hello?"}]

    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    assert [r.prompt for r in load_prompts(tmp_path / "p.txt")] == ["first", "second"]


def test_prompt_column_keeps_ids_and_limit(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, {"prompt_id": "b", "prompt": "y"},
                                         {"prompt": "z"}])
    assert [(r.id, r.prompt) for r in load_prompts(path)] == [("a", "x"), ("b", "y"), (2, "z")]
    assert len(load_prompts(path, limit=2)) == 2


def test_vicuna_evol_and_alpaca_formats(tmp_path):
    vicuna = _jsonl(tmp_path / "v.jsonl", [{"question_id": 7, "category": "generic", "turns": ["q one", "q two"]}])
    assert [(r.id, r.prompt) for r in load_prompts(vicuna)] == [(7, "q one")]
    evol = _jsonl(tmp_path / "e.jsonl", [{"idx": 3, "Skill": "Math", "Difficulty": 1, "Instruction": "add 1+1"}])
    assert [(r.id, r.prompt) for r in load_prompts(evol)] == [(3, "add 1+1")]
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "say hi", "output": "hi", "generator": "gpt4",
                                   "dataset": "helpful_base"},
                                  {"instruction": "translate", "input": "bonjour"}]))
    records = load_prompts(alpaca)
    assert [r.prompt for r in records] == ["say hi", "translate\n\nbonjour"]
    assert records[0].extra == {"dataset": "helpful_base"}


def test_preference_split_formats(tmp_path):
    rows = [
        {"prompt_id": "c1", "prompt": [{"role": "user", "content": "hi"}], "chosen": "x", "rejected": "y"},
        {"id": "c2", "chosen": [{"role": "user", "content": "what?"}, {"role": "assistant", "content": "that"}],
         "rejected": [{"role": "user", "content": "what?"}, {"role": "assistant", "content": "no"}]},
        {"chosen": "\n\nHuman: first q\n\nAssistant: ok\n\nHuman: second q\n\nAssistant: good answer",
         "rejected": "\n\nHuman: first q\n\nAssistant: ok\n\nHuman: second q\n\nAssistant: bad"},
    ]
    records = load_prompts(_jsonl(tmp_path / "prefs.jsonl", rows))
    assert [r.id for r in records] == ["c1", "c2", 2]
    assert [r.prompt for r in records] == ["hi", "what?", "second q"]
    assert records[2].messages == [{"role": "user", "content": "first q"}, {"role": "assistant", "content": "ok"},
                                   {"role": "user", "content": "second q"}]


def test_save_to_disk_dataset_picks_test_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict

    DatasetDict({"train_prefs": Dataset.from_list([{"prompt": "train"}]),
                 "test_prefs": Dataset.from_list([{"prompt": "test one"}, {"prompt": "test two"}])}
                ).save_to_disk(str(tmp_path / "ds"))
    assert [r.prompt for r in load_prompts(tmp_path / "ds")] == ["test one", "test two"]
    assert [r.prompt for r in load_prompts(tmp_path / "ds", split="train_prefs")] == ["train"]
    with pytest.raises(SeraInputError, match="no split 'nope'"):
        load_prompts(tmp_path / "ds", split="nope")


def test_prompt_field_override(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": 1, "question": "why?"}])
    assert load_prompts(path, prompt_field="question")[0].prompt == "why?"
    with pytest.raises(SeraInputError, match=r"p\.jsonl:1: missing field 'text'"):
        load_prompts(path, prompt_field="text")


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "ok"}', '{"prompt": '], r"p\.jsonl:2: not valid JSON"),
    (['{"prompt": "ok"}', '', '{"text": "no prompt"}'], r"p\.jsonl:3: missing the prompt field"),
    (['{"prompt": "  "}'], r"p\.jsonl:1: field 'prompt': empty prompt"),
    (['{"prompt": 5}'], r"p\.jsonl:1: field 'prompt': expected a non-empty string"),
    (['{"id": 1, "prompt": "a"}', '{"id": "1", "prompt": "b"}'], r"p\.jsonl:2: duplicate id"),
    (['{"question_id": 1, "turns": []}'], r"p\.jsonl:1: field 'turns' must be a non-empty list"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, lines, message):
    path = _jsonl(tmp_path / "p.jsonl", lines)
    with pytest.raises(SeraInputError, match=message):
        load_prompts(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(SeraInputError, match="no such file"):
        load_prompts(tmp_path / "absent.jsonl")
    (tmp_path / "p.xml").write_text("<a/>")
    with pytest.raises(SeraInputError, match="unsupported prompt file type"):
        load_prompts(tmp_path / "p.xml")

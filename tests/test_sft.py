"""`sera sft`: TRL's SFTTrainer on chat messages or prompt/completion rows; its output feeds `sera train`."""

import json

import pytest

from sera.errors import SeraInputError
from sera.sft import load_sft_rows
from tests.conftest import make_pairs, write_jsonl
from tests.test_cli_train import FAST, run_cli

SFT_FAST = ["--max-steps", "3", "--batch-size", "4", "--learning-rate", "1e-3", "--logging-steps", "1",
            "--max-length", "64"]


def chat_rows(n):
    return [{"prompt": p["prompt"], "prompt_id": p["id"],
             "messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}]}
            for p in make_pairs(n)]


def test_sft_on_chat_messages_then_sera_train(tmp_path, tiny_model_dir, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(12))
    sft_out = tmp_path / "sft"
    code, output = run_cli(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir",
                            str(sft_out), *SFT_FAST], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((sft_out / "sft_summary.json").read_text())
    assert summary["data_kind"] == "messages" and summary["train_steps"] == 3 and summary["examples"] == 12
    assert (sft_out / "model.safetensors").exists() and (sft_out / "tokenizer.json").exists()

    pairs = write_jsonl(tmp_path / "pairs.jsonl", make_pairs(8))
    code, output = run_cli(["train", "--model", str(sft_out), "--dataset", str(pairs), "--output-dir",
                            str(tmp_path / "run"), "--iterations", "1", *FAST], monkeypatch, capsys)
    assert code == 0, output  # base -> SFT -> SeRA


def test_sft_prompt_completion_with_lora_is_merged(tmp_path, tiny_model_dir, monkeypatch, capsys):
    rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in make_pairs(8)]
    data = write_jsonl(tmp_path / "pc.jsonl", rows)
    out = tmp_path / "sft"
    code, output = run_cli(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                            "--lora-r", "4", *SFT_FAST], monkeypatch, capsys)
    assert code == 0, output
    assert json.loads((out / "sft_summary.json").read_text())["data_kind"] == "prompt-completion"
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()

    code, output = run_cli(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                            *SFT_FAST], monkeypatch, capsys)
    assert code == 2 and "not empty" in output


def test_sft_rows_validation_and_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    bad = write_jsonl(tmp_path / "bad.jsonl", [chat_rows(1)[0], {"messages": [{"role": "user", "content": "x"}]},
                                                {"prompt": "a"}, {"prompt": "a", "completion": "b"}])
    with pytest.raises(SeraInputError, match="bad.jsonl, row 2: field 'messages' has no assistant turn"):
        load_sft_rows(str(bad))
    loaded = load_sft_rows(str(bad), skip_invalid=True)
    assert len(loaded.rows) == 1 and loaded.skipped == {"invalid": 3}  # row 4 is a prompt/completion row
    with pytest.raises(SeraInputError, match="row 3: field 'completion' is missing"):
        load_sft_rows(str(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "a", "completion": "b"}] * 2
                                      + [{"prompt": "a"}])))

    saved = tmp_path / "ultrachat"
    DatasetDict({"train_sft": Dataset.from_list(chat_rows(5)), "test_sft": Dataset.from_list(chat_rows(2)),
                 "train_gen": Dataset.from_list(chat_rows(1))}).save_to_disk(str(saved))
    assert len(load_sft_rows(str(saved)).rows) == 5  # UltraChat-200K's train_sft by default
    assert len(load_sft_rows(str(saved), split="test_sft").rows) == 2
    assert len(load_sft_rows(str(saved), max_samples=3).rows) == 3

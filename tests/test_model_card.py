"""`final/README.md`: a Hugging Face model card whose front matter parses and whose numbers are summary.json's."""

from __future__ import annotations

import json

import yaml

from sera.model_card import render_model_card, write_model_card
from tests.conftest import make_pairs, write_jsonl
from tests.test_cli_train import FAST, run_cli

SUMMARY = {
    "method": "sera", "daa": "ipo",
    "data": {"format": "hh-rlhf", "rows_read": 120, "skipped": {"invalid": 3, "prompt_too_long": 2},
             "offline_pairs": 104, "validation_pairs": 11},
    "sft_review": {"val_irm_accuracy": 0.5, "labeller_accuracy": 0.5},
    "iterations": [
        {"iteration": 1, "pool_size": 104, "selected": 104, "train_steps": 7, "final_loss": 0.69,
         "seconds_training": 3.0, "val_irm_accuracy": 0.55},
        {"iteration": 2, "pool_size": 208, "generated": 104, "selected": 146, "train_steps": 10, "final_loss": 0.61,
         "mean_margin_selected": 0.12, "mean_margin_dropped": -0.05, "seconds_training": 4.0,
         "val_irm_accuracy": 0.64, "labeller_accuracy": 0.6},
    ],
    "guard": "none", "final_iterate": 2, "final_model": "out/final", "warnings": ["a warning"], "seconds_total": 42.0,
}
CONFIG = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "dataset": "Anthropic/hh-rlhf", "method": "sera",
          "daa": "ipo", "beta": 1.0, "iterations": 2, "selection_ratio": 0.7, "ensemble_gamma": 0.3,
          "lora_r": 8, "merge": False, "selection": True, "bootstrap": True, "num_samples": 4}


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def table(body: str, after: str) -> list[dict]:
    """The Markdown table that follows the heading `after`, as dicts by column title."""
    section = body.split(f"## {after}\n", 1)[1]
    block = section[section.index("\n|") + 1:].split("\n\n", 1)[0]  # the first table, up to a blank line
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()]
    header, data = rows[0], rows[2:]
    return [dict(zip(header, r)) for r in data]


def test_front_matter_and_body_of_a_hub_model_adapter():
    meta, body = split_card(render_model_card(SUMMARY, CONFIG, license="apache-2.0"))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["library_name"] == "peft"  # an adapter (LoRA, not merged)
    assert meta["tags"][:3] == ["sera", "ipo", "trl"] and "lora" in meta["tags"]
    assert meta["datasets"] == ["Anthropic/hh-rlhf"] and meta["license"] == "apache-2.0"
    assert "SeRA-IPO" in body and "Ko et al., ICLR 2025" in body and "@inproceedings{ko2025sera" in body
    assert "rows skipped: 5 (invalid: 3, prompt_too_long: 2)" in body
    rows = table(body, "Iterations")
    assert [r["kept"] for r in rows] == ["104", "146"] and rows[1]["generated"] == "104"
    assert "- a warning" in body and "iterate 2 of 2" in body


def test_local_paths_are_never_hub_ids_and_merged_lora_is_transformers(tmp_path, monkeypatch):
    config = {**CONFIG, "model": "/models/sft", "dataset": "data/prefs.jsonl", "merge": True}
    meta, _ = split_card(render_model_card(SUMMARY, config))
    assert "base_model" not in meta and "datasets" not in meta and "license" not in meta
    assert meta["library_name"] == "transformers"

    relative = {**CONFIG, "dataset": "data/prefs"}  # reads like a hub id; the writer knows it is a folder
    (tmp_path / "data" / "prefs").mkdir(parents=True)
    sft = tmp_path / "sft"  # a local `sera sft` model: its hub base model and its card's license carry over
    sft.mkdir()
    (sft / "sft_summary.json").write_text(json.dumps({"model": "org/base-model"}))
    (sft / "README.md").write_text("---\nlicense: mit\n---\n# SFT\n")
    monkeypatch.chdir(tmp_path)
    path = write_model_card(tmp_path / "final" / "README.md", SUMMARY, {**relative, "model": str(sft)})
    meta, body = split_card(path.read_text())
    assert meta["base_model"] == "org/base-model" and meta["license"] == "mit" and "datasets" not in meta
    assert "fine-tuned from [org/base-model]" in body


def test_a_run_writes_a_card_whose_numbers_match_summary_json(tmp_path, tiny_model_dir, monkeypatch, capsys):
    rows = make_pairs(16)
    rows[0]["chosen"] = ""  # degenerate: skipped with --skip-invalid
    rows[1]["prompt"] = "long " * 40  # prompt longer than --max-length: skipped and counted
    data = write_jsonl(tmp_path / "d.jsonl", [*rows, '{"prompt": 1}'])
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                            "--iterations", "2", "--max-length", "64", "--skip-invalid", *FAST,
                            "--validation-ratio", "0.15"], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    meta, body = split_card((out / "final" / "README.md").read_text())

    assert meta["library_name"] == "transformers" and meta["tags"][:3] == ["sera", "dpo", "trl"]
    assert "base_model" not in meta and "datasets" not in meta  # a local model and a local file

    data_report = summary["data"]
    assert f"- rows read: {data_report['rows_read']}\n" in body
    skipped = data_report["skipped"]
    assert skipped and f"- rows skipped: {sum(skipped.values())} (" in body
    for reason, count in skipped.items():
        assert f"{reason}: {count}" in body
    assert f"- offline (training) pairs: {data_report['offline_pairs']}\n" in body
    assert f"- validation (held-out) pairs: {data_report['validation_pairs']}\n" in body

    table_rows = table(body, "Iterations")
    assert [int(r["iteration"]) for r in table_rows] == [it["iteration"] for it in summary["iterations"]]
    for row, it in zip(table_rows, summary["iterations"]):
        assert int(row["pool"]) == it["pool_size"] and int(row["kept"]) == it["selected"]
        assert int(row["steps"]) == it["train_steps"]
        assert float(row["loss"]) == round(it["final_loss"], 4)
        assert float(row["held-out IRM acc"]) == round(it["val_irm_accuracy"], 3)
    assert int(table_rows[1]["generated"]) == summary["iterations"][1]["generated"]
    assert float(table_rows[1]["IRM kept"]) == round(summary["iterations"][1]["mean_margin_selected"], 4)

    final = summary["iterations"][-1]
    assert f"| this model (iterate {summary['final_iterate']}) | {final['val_irm_accuracy']:.3f} |" in body
    for warning in summary["warnings"]:
        assert f"- {warning}" in body
    if not summary["warnings"]:
        assert "## Warnings\n\nNone." in body
    assert "@inproceedings{ko2025sera" in body

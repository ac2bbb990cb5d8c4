"""`sera train` end to end through the CLI on a tiny model, and its answers to bad input."""

import json
import subprocess
import sys

import pytest
import yaml

from sera.cli import main
from sera.io import read_jsonl
from tests.conftest import make_pairs, write_jsonl

FAST = ["--validation-ratio", "0", "--batch-size", "4", "--grad-accum", "1", "--learning-rate", "1e-3", "--max-new-tokens", "8",
        "--logging-steps", "1", "--num-samples", "3"]


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sera", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_three_iterations_write_the_whole_run_directory(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("iterations: 2\nselection_ratio: 0.5\nbeta: 0.2\n")
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
                            "--output-dir", str(out), "--config", str(recipe), "--iterations", "3", *FAST,
                            "--validation-ratio", "0.15"],
                           monkeypatch, capsys)
    assert code == 0, output

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["iterations"] == 3 and config["selection_ratio"] == 0.5 and config["beta"] == 0.2  # flag > recipe

    summary = json.loads((out / "summary.json").read_text())
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2, 3]
    assert summary["data"]["offline_pairs"] + summary["data"]["validation_pairs"] == 16
    for it in summary["iterations"][1:]:
        assert it["pool_size"] == summary["data"]["offline_pairs"] + it["generated"]
        assert it["selected"] == -(-it["pool_size"] // 2)
        for key in ("mean_margin_selected", "mean_margin_dropped", "seconds_scoring", "seconds_generating",
                    "seconds_training", "final_loss", "bootstrap_skipped"):
            assert key in it

    for t in (2, 3):
        selection = read_jsonl(out / f"iter_{t}" / "selection.jsonl")
        assert {row["source"] for row in selection} <= {"offline", "generated"}
        offline_ids = {row["id"] for row in selection if row["source"] == "offline"}
        assert len(offline_ids) == summary["data"]["offline_pairs"] and offline_ids <= {f"p{i}" for i in range(16)}
        kept = [r["margin"] for r in selection if r["selected"]]
        dropped = [r["margin"] for r in selection if not r["selected"]]
        assert min(kept) >= max(dropped)
        for row in read_jsonl(out / f"iter_{t}" / "generated.jsonl"):
            assert row["chosen_reward"] > row["rejected_reward"]
            assert row["chosen_reward"] == max(row["rewards"]) and row["rejected_reward"] == min(row["rewards"])
        assert (out / f"iter_{t}" / "model" / "model.safetensors").exists()
    assert not (out / "iter_1" / "selection.jsonl").exists()  # the warm-up selects nothing

    metrics = read_jsonl(out / "metrics.jsonl")
    assert any("loss" in m for m in metrics)
    assert [m["iteration"] for m in metrics if m.get("event") == "iteration_end"] == [1, 2, 3]

    from transformers import AutoModelForCausalLM, AutoTokenizer
    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")
    assert "final model" in output


def test_plain_daa_and_ablations(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    common = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--iterations", "2", *FAST]
    code, output = run_cli([*common, "--output-dir", str(tmp_path / "daa"), "--method", "daa", "--validation-ratio",
                            "0.2"], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((tmp_path / "daa" / "summary.json").read_text())
    assert summary["method"] == "daa" and summary["iterations"][0]["train_steps"] == 8  # 2 epochs x ceil(13/4)
    assert (tmp_path / "daa" / "iter_1" / "model").exists() and (tmp_path / "daa" / "iter_2" / "model").exists()
    assert "val_irm_accuracy" in summary["iterations"][0]
    assert "labeller_accuracy" not in summary["iterations"][0]  # a plain DAA never bootstraps

    code, output = run_cli([*common, "--output-dir", str(tmp_path / "sel"), "--no-bootstrap", "--daa", "ipo"],
                           monkeypatch, capsys)
    assert code == 0, output
    selection = read_jsonl(tmp_path / "sel" / "iter_2" / "selection.jsonl")
    assert len(selection) == 16 and sum(r["selected"] for r in selection) == 12
    assert not (tmp_path / "sel" / "iter_2" / "generated.jsonl").exists()

    code, output = run_cli([*common, "--output-dir", str(tmp_path / "boot"), "--no-selection", "--daa", "simpo",
                            "--reference", "previous"], monkeypatch, capsys)
    assert code == 0, output
    selection = read_jsonl(tmp_path / "boot" / "iter_2" / "selection.jsonl")
    assert all(r["selected"] for r in selection) and any(r["source"] == "generated" for r in selection)


def test_offline_selection_pool_keeps_every_generated_pair(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
                            "--output-dir", str(out), "--iterations", "2", "--selection-pool", "offline",
                            "--daa", "slic", *FAST], monkeypatch, capsys)
    assert code == 0, output
    rows = read_jsonl(out / "iter_2" / "selection.jsonl")
    assert all(r["selected"] for r in rows if r["source"] == "generated")
    assert sum(r["selected"] for r in rows if r["source"] == "offline") == 12  # ceil(0.7 * 16)


def test_degenerate_and_invalid_rows_are_counted(tmp_path, tiny_model_dir, monkeypatch, capsys):
    rows = make_pairs(8)
    rows[0]["chosen"] = ""
    rows[1]["prompt"] = "long " * 40
    path = write_jsonl(tmp_path / "d.jsonl", [*rows, '{"prompt": 1}'])
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(out),
                            "--iterations", "1", "--max-length", "64", "--skip-invalid", *FAST], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["skipped"] == {"invalid": 1, "empty_response": 1, "prompt_too_long": 1}
    assert summary["data"]["offline_pairs"] == 6


@pytest.mark.parametrize("args, message", [
    (["--dataset", "{bad}"], "row 2: malformed JSON"),
    (["--dataset", "{missing}"], "no such file"),
    (["--model", "{missing}"], "cannot load"),
    (["--daa", "ppo"], "--daa"),
    (["--selection-ratio", "1.5"], "--selection-ratio"),
    (["--config", "{bad_recipe}"], "unknown option"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys,
                                                 args, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", [make_pairs(1)[0], "{oops"])
    (tmp_path / "recipe.yaml").write_text("betta: 0.1\n")
    names = {"bad": bad, "missing": tmp_path / "nope.jsonl", "bad_recipe": tmp_path / "recipe.yaml"}
    args = [a.format(**names) for a in args]
    base = {"--model": str(tiny_model_dir), "--dataset": str(pairs_file), "--output-dir": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    code, output = run_cli(["train", *[x for kv in base.items() for x in kv]], monkeypatch, capsys)
    assert code == 2
    assert message in output and "Traceback" not in output


def test_real_process_exit_code_and_no_traceback(tmp_path, tiny_model_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [make_pairs(1)[0], '{"prompt": "a", "chosen": "b"}'])
    result = subprocess.run([sys.executable, "-m", "sera.cli", "train", "--model", str(tiny_model_dir),
                             "--dataset", str(bad), "--output-dir", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "bad.jsonl, row 2: field 'rejected' is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_chat_format_pairs_run_end_to_end(tmp_path, tiny_model_dir, monkeypatch, capsys):
    path = write_jsonl(tmp_path / "chat.jsonl", make_pairs(12, chat=True))
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(out),
                            "--iterations", "2", *FAST], monkeypatch, capsys)
    assert code == 0, output
    generated = read_jsonl(out / "iter_2" / "generated.jsonl")
    assert generated and all(row["chosen"][0]["role"] == "assistant" for row in generated)
    assert isinstance(generated[0]["prompt"], list)


def test_option_help_survives_rich_markup():
    """`sera train --help` renders with rich, which swallows `[word]` as a style tag (e.g. `sera[vllm]`)."""
    import dataclasses
    import re

    from sera.config import TrainConfig

    swallowed = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)
                 if re.search(r"\[[A-Za-z_/ ]+\]", f.metadata.get("help", ""))}
    assert not swallowed

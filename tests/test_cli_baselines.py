"""`sera train --method curri-dpo|spa` and `--ablation` end to end through the CLI on the tiny model."""

import json
import random

import pytest
import yaml

from sera.io import read_jsonl
from tests.conftest import make_pairs, write_jsonl
from tests.test_cli_train import FAST, run_cli


def ultrafeedback_rows(n: int, seed: int = 0) -> list[dict]:
    """Original-UltraFeedback-shaped rows of the toy task: four rated completions per prompt."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word = "".join(rng.choice("abcde") for _ in range(4))
        completions = [(" " + word[::-1] + ".", 9.0), (" " + word[::-1][:2] + ".", 6.0), (" " + word + " " + word + ".", 4.0),
                       (" " + "".join(rng.choice("xyz") for _ in range(3)) + ".", 1.0)]
        rng.shuffle(completions)
        rows.append({"id": f"u{i}", "instruction": f"reverse {word} ?",
                     "completions": [{"response": r, "overall_score": s} for r, s in completions]})
    return rows


def test_curri_dpo_trains_the_curriculum_easy_to_hard(tmp_path, tiny_model_dir, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback_rows(6))
    out = tmp_path / "curri"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                            "--method", "curri-dpo", "--iterations", "3", *FAST], monkeypatch, capsys)
    assert code == 0, output
    assert yaml.safe_load((out / "config.yaml").read_text())["reference"] == "previous"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "curri-dpo" and summary["data"]["curriculum_pairs"] == 18  # 3 per prompt
    assert summary["data"]["offline_pairs"] == 36  # every ranked pair is loaded; the best-vs-other ones are trained
    stages = [read_jsonl(out / f"iter_{t}" / "curriculum.jsonl") for t in (1, 2, 3)]
    assert [{r["rank"] for r in s} for s in stages] == [{0}, {1}, {2}]
    assert [{r["rating_gap"] for r in s} for s in stages] == [{8.0}, {5.0}, {3.0}]  # 9-1, 9-4, 9-6
    assert [it["selected"] for it in summary["iterations"]] == [6, 6, 6]
    assert [it["curriculum_gap_mean"] for it in summary["iterations"]] == [8.0, 5.0, 3.0]
    assert (out / "final" / "model.safetensors").exists()

    unrated = write_jsonl(tmp_path / "pairs.jsonl", make_pairs(4))
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(unrated), "--output-dir",
                            str(tmp_path / "bad"), "--method", "curri-dpo", *FAST], monkeypatch, capsys)
    assert code == 2 and "needs several rated responses" in output


def test_spa_trains_on_a_seed_then_on_self_labelled_samples(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    out = tmp_path / "spa"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--method", "spa", "--iterations", "3", "--spa-seed-ratio", "0.25",
                            "--spa-smooth-lowest", "0.5", "--spa-label-smoothing", "0.2",
                            "--reference", "sft", *FAST, "--batch-size", "2", "--max-bootstrap-prompts", "5"],
                           monkeypatch, capsys)
    assert code == 0, output
    assert yaml.safe_load((out / "config.yaml").read_text())["reference"] == "previous"  # whatever --reference says
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["spa_seed_pairs"] == 4 and summary["data"]["spa_unlabelled_prompts"] == 12
    first, *later = summary["iterations"]
    assert first["selected"] == 4
    for t, it in zip((2, 3), later):
        assert it["spa_prompts"] == 5 and it["selected"] == it["generated"] > 0
        records = read_jsonl(out / f"iter_{t}" / "generated.jsonl")
        assert len(records) == it["generated"] and it["spa_smoothed"] == sum(r["label_smoothing"] > 0 for r in records)
        for r in records:
            assert r["chosen_reward"] == max(r["rewards"]) > r["rejected_reward"] == min(r["rewards"])
            assert r["label_smoothing"] in (0.0, 0.2)
        smoothed = [r["confidence"] for r in records if r["label_smoothing"]]
        assert len(smoothed) == -(-len(records) // 2)  # the least confident half
        assert max(smoothed) <= min(r["confidence"] for r in records if not r["label_smoothing"])
    assert (out / "final" / "model.safetensors").exists()

    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(tmp_path / "bad"), "--method", "spa", "--daa", "ipo", *FAST], monkeypatch, capsys)
    assert code == 2 and "--method spa needs --daa dpo" in output


@pytest.mark.parametrize("ablation, selection, bootstrap, gamma", [
    ("selection-only", True, False, 0.3),
    ("bootstrap-only", False, True, 0.3),
    ("no-ensemble", True, True, 0.0),
])
def test_ablations(tmp_path, tiny_model_dir, monkeypatch, capsys, ablation, selection, bootstrap, gamma):
    data = write_jsonl(tmp_path / "pairs.jsonl", make_pairs(8))
    out = tmp_path / ablation
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                            "--iterations", "2", "--ablation", ablation, *FAST, "--max-bootstrap-prompts", "3",
                            "--num-samples", "2", "--max-new-tokens", "4"],
                           monkeypatch, capsys)
    assert code == 0, output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["ablation"], config["selection"], config["bootstrap"], config["ensemble_gamma"]) == (
        ablation, selection, bootstrap, gamma)
    rows = read_jsonl(out / "iter_2" / "selection.jsonl")
    assert any(r["source"] == "generated" for r in rows) == bootstrap
    assert all(r["selected"] for r in rows) == (not selection)

    conflicting = {"selection-only": ["--bootstrap"], "bootstrap-only": ["--selection"],
                   "no-ensemble": ["--ensemble-gamma", "0.3"]}[ablation]
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir",
                            str(tmp_path / "conflict"), "--ablation", ablation, *conflicting, *FAST], monkeypatch, capsys)
    assert code == 2 and f"--ablation {ablation}" in output

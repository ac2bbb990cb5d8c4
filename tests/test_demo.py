"""`sera demo`: option errors, grading, and a tiny end-to-end run of the whole pipeline."""

from __future__ import annotations

import json
import os
import sys

import pytest

from sera.demo import DemoOptions, format_table, grade, parse_daas, run_demo
from sera.errors import SeraInputError

os.environ.setdefault("SERA_NO_PROGRESS", "1")


@pytest.mark.parametrize("kwargs, message", [
    (dict(daa="foo"), "--daa"),
    (dict(seeds="x"), "--seeds"),
    (dict(seeds="1,-2"), "--seeds"),
    (dict(betas="0.1,zero"), "--betas"),
    (dict(betas="-1"), "--betas"),
    (dict(noise=1.5), "--noise"),
    (dict(length_bias=-0.1), "--length-bias"),
    (dict(jobs=0), "--jobs"),
    (dict(variants="selection-only,foo"), "--variants"),
    (dict(variants="daa-matched"), "add recommended"),
])
def test_bad_options_are_input_errors(tmp_path, kwargs, message):
    with pytest.raises(SeraInputError, match=message):
        DemoOptions(output_dir=str(tmp_path), **kwargs).resolve()


def test_option_defaults_quick_and_full(tmp_path):
    quick = DemoOptions(output_dir=str(tmp_path), quick=True).resolve()
    assert (quick.daa, quick.seeds, quick.noise_sweep) == ("dpo", [1], [])
    # the preset beside the paper, and the DAA at the preset's budget, unless told
    assert quick.methods == ["daa", "sera", "sera/recommended", "daa-matched"]
    assert DemoOptions(output_dir=str(tmp_path), quick=True, variants="").resolve().methods == ["daa", "sera"]
    full = DemoOptions(output_dir=str(tmp_path)).resolve()
    assert full.daa == "dpo,ipo,slic,simpo" and full.seeds == [1, 2, 3]
    assert full.noise_sweep == [0.0, 0.2, 0.4] and full.betas == [0.05, 0.2, 1.0]
    assert full.variants == ["recommended", "daa-matched"]
    with_variants = DemoOptions(output_dir=str(tmp_path), quick=True, variants="selection-only").resolve()
    assert with_variants.methods == ["daa", "sera", "sera/selection-only"]
    assert parse_daas("all") == ["dpo", "ipo", "slic", "simpo"] and parse_daas("ipo,dpo") == ["ipo", "dpo"]


@pytest.mark.parametrize("flag, value", [("--daa", "foo"), ("--seeds", "x")])
def test_cli_bad_input_exits_2(tmp_path, monkeypatch, capsys, flag, value):
    from sera import cli

    monkeypatch.setattr(sys, "argv", ["sera", "demo", flag, value, "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_grade_win_rate_counts_ties_half():
    prompts = ["ba=", "ba=", "ba=", "ba="]
    method = ["ab", "ab", "a", "b"]      # gold 1, 1, .5, .5
    sft = ["ab", "a", "ab", "a"]         # gold 1, .5, 1, .5  -> tie, win, loss, tie
    result = grade(prompts, method, sft)
    assert result["win_rate_vs_sft"] == pytest.approx((1 + 0.5 + 0.5) / 4)
    assert result["gold"] == pytest.approx(0.75)
    assert result["exact"] == pytest.approx(0.5)
    assert result["length"] == pytest.approx(1.5)


def test_tiny_demo_end_to_end(tmp_path):
    """The whole pipeline on a toy-sized world: SFT, pairs, DAA and SeRA through sera.loop, grading, outputs."""
    options = DemoOptions(
        output_dir=str(tmp_path / "demo"), quick=True, seeds="1", betas="0.2", jobs=1,
        world=dict(sft_steps=20, sft_demonstrations=64, pair_prompts=40, validation_prompts=8, test_prompts=8,
                   hidden_size=16),
        train=dict(iterations=2, batch_size=8),
    )
    lines: list[str] = []
    results = run_demo(options, log=lines.append)
    out = tmp_path / "demo"
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == results["table"]
    assert {p for p in saved["plots"]} == {"gold_per_iteration.png", "irm_histogram.png"}
    assert all((out / p).stat().st_size > 0 for p in saved["plots"])
    assert [(r["method"], r["daa"]) for r in saved["table"]] == [("sft", "-"), ("daa", "dpo"), ("sera", "dpo"),
                                                                ("sera/recommended", "dpo"), ("daa-matched", "dpo")]
    assert len(saved["runs"]) == 4  # DAA, SeRA, the recommended preset and DAA at its budget, first seed's world
    assert set(saved["beta"]) == {"daa-dpo", "sera-dpo", "sera/recommended-dpo", "daa-matched-dpo"}
    # the equal-budget DAA trained for the recommended run's optimiser steps (sera train --match-budget)
    by_method = {r["method"]: r for r in saved["runs"]}
    matched, recommended = by_method["daa-matched"]["budget"], by_method["sera/recommended"]["budget"]
    assert matched["optimizer_steps"] == recommended["optimizer_steps"]
    assert matched["matched_to"]["optimizer_steps"] == recommended["optimizer_steps"]
    assert matched["pair_passes"] > by_method["daa"]["budget"]["pair_passes"]
    # every final model graded at T = 1, 0.7 and greedy; paired rows with wins/ties/losses against both DAA rows
    for run in saved["runs"]:
        assert {"test", "test_t0.7", "test_greedy"} <= set(run)
    rec_row = next(r for r in saved["table"] if r["method"] == "sera/recommended")
    assert {"daa/test", "daa/test_t0.7", "daa/test_greedy", "daa-matched/test"} <= set(rec_row["paired"])
    one = rec_row["paired"]["daa-matched/test"]
    assert one["wins"] + one["ties"] + one["losses"] == 1 and "gold_t0.7" in rec_row
    assert "DAA, equal budget" in format_table(saved)
    for run in saved["runs"]:
        assert 0.0 <= run["test"]["gold"] <= 1.0 and 0.0 <= run["test"]["win_rate_vs_sft"] <= 1.0
        assert [p["iteration"] for p in run["per_iteration"]] == [1, 2]
        assert (out / run["run_dir"] / "summary.json").exists()  # written by sera.loop, as `sera train` does
    sera_run = next(r for r in saved["runs"] if r["method"] == "sera")
    review = sera_run["selection"][0]
    assert review["iteration"] == 2
    assert review["selected"]["offline"] + review["dropped"]["offline"] == review["offline_in_pool"]
    # the hidden truth stays outside what training reads
    world = out / "worlds" / "noise0.3-seed1"
    first_pair = json.loads((world / "pairs.jsonl").read_text().splitlines()[0])
    assert set(first_pair) == {"id", "prompt", "chosen", "rejected"}
    assert (world / "pairs_meta.jsonl").exists()
    assert "gold reward" in format_table(saved) and any("SeRA-dpo selection" in line for line in lines)

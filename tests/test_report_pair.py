"""`sera report A B`: two runs side by side (budget, held-out IRM accuracy, diagnostics, warnings)."""

import json

from sera.report import compare_runs
from tests.test_cli_train import FAST, run_cli


def test_a_sera_run_beside_the_plain_daa_at_its_budget(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    common = ["--model", str(tiny_model_dir), "--dataset", str(pairs_file), *FAST, "--validation-ratio", "0.25",
              "--iterations", "2"]
    sera, plain = tmp_path / "sera", tmp_path / "plain"
    assert run_cli(["train", *common, "--output-dir", str(sera)], monkeypatch, capsys)[0] == 0
    assert run_cli(["train", *common, "--output-dir", str(plain), "--method", "daa", "--match-budget", str(sera)],
                   monkeypatch, capsys)[0] == 0
    before = sorted(p.name for p in sera.iterdir()), sorted(p.name for p in plain.iterdir())

    code, output = run_cli(["report", str(sera), str(plain)], monkeypatch, capsys)
    assert code == 0, output
    output = " ".join(output.split())  # rich wraps long titles on a narrow terminal
    for text in ("budget: optimizer steps", "budget: pair passes", "budget matched to",
                 "held-out IRM accuracy per iteration", "at the iterate each run returned", "held-out IRM acc"):
        assert text in output
    assert "hold out different pairs" not in output  # same data, seed and hold-out
    assert (sorted(p.name for p in sera.iterdir()), sorted(p.name for p in plain.iterdir())) == before  # no files

    comparison = compare_runs(sera, plain)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (sera, plain)]
    assert comparison["budget"] == [s["budget"] for s in summaries]
    assert comparison["budget"][0]["optimizer_steps"] == comparison["budget"][1]["optimizer_steps"]
    assert comparison["options"]["method"] == ["sera", "daa"]
    assert comparison["held_out_differs"] == []
    rows = {row["iteration"]: row["values"] for row in comparison["held_out_irm_accuracy"]}
    assert rows[0] == [s["sft_review"].get("val_irm_accuracy") for s in summaries]
    assert rows[2][0] == summaries[0]["iterations"][1]["val_irm_accuracy"]
    last = summaries[1]["iterations"][-1]
    assert rows[last["iteration"]][1] == last["val_irm_accuracy"]  # the plain run's one record, its last epoch
    assert all(0 <= v <= 1 for v in comparison["final"]["val_irm_accuracy"])
    assert comparison["warnings"] == [s["warnings"] for s in summaries]


def test_runs_that_hold_out_different_pairs_are_flagged_and_a_missing_run_exits_2(tmp_path, tiny_model_dir,
                                                                                  pairs_file, monkeypatch, capsys):
    base = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), *FAST, "--validation-ratio",
            "0.25", "--iterations", "1", "--method", "daa"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli([*base, "--output-dir", str(a)], monkeypatch, capsys)[0] == 0
    assert run_cli([*base, "--output-dir", str(b), "--seed", "7"], monkeypatch, capsys)[0] == 0
    code, output = run_cli(["report", str(a), str(b)], monkeypatch, capsys)
    output = " ".join(output.split())
    assert code == 0 and "seed" in output and "hold out different pairs" in output
    code, output = run_cli(["report", str(a), str(tmp_path / "nothing")], monkeypatch, capsys)
    assert code == 2 and "not found" in output

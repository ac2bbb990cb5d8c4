"""`sera train --method daa --match-budget RUN`: the plain DAA for exactly the optimiser steps of a SeRA run."""

import json

from tests.test_cli_train import FAST, run_cli


def test_the_plain_daa_trains_for_the_sera_runs_steps(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    common = ["--model", str(tiny_model_dir), "--dataset", str(pairs_file), *FAST, "--validation-ratio", "0.15",
              "--iterations", "2"]
    sera, plain = tmp_path / "sera", tmp_path / "plain"
    code, output = run_cli(["train", *common, "--output-dir", str(sera)], monkeypatch, capsys)
    assert code == 0, output
    code, output = run_cli(["train", *common, "--output-dir", str(plain), "--method", "daa",
                            "--match-budget", str(sera)], monkeypatch, capsys)
    assert code == 0, output

    sera_summary = json.loads((sera / "summary.json").read_text())
    plain_summary = json.loads((plain / "summary.json").read_text())
    steps = sum(it["train_steps"] for it in sera_summary["iterations"])
    assert sera_summary["budget"]["optimizer_steps"] == steps
    assert sera_summary["budget"]["pair_passes"] == sum(it["selected"] for it in sera_summary["iterations"])
    assert plain_summary["budget"]["optimizer_steps"] == steps  # more than 2 epochs of the offline pairs alone
    assert plain_summary["budget"]["matched_to"] == {"run": str(sera), **sera_summary["budget"]}
    offline = plain_summary["data"]["offline_pairs"]
    assert plain_summary["budget"]["pair_passes"] > 2 * offline
    last = plain_summary["iterations"][-1]["iteration"]
    assert (plain / f"iter_{last}" / "model").exists()  # the last, partial epoch is saved as the next one


def test_a_run_that_does_not_match_is_refused_before_any_work(tmp_path, tiny_model_dir, pairs_file, monkeypatch,
                                                              capsys):
    sera = tmp_path / "sera"
    base = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), *FAST, "--iterations", "1"]
    assert run_cli([*base, "--output-dir", str(sera)], monkeypatch, capsys)[0] == 0
    code, output = run_cli([*base, "--output-dir", str(tmp_path / "p"), "--method", "daa", "--match-budget",
                            str(sera), "--seed", "5"], monkeypatch, capsys)
    assert code == 2 and "--seed 5 vs 42" in output
    code, output = run_cli([*base, "--output-dir", str(tmp_path / "q"), "--match-budget", str(sera)],
                           monkeypatch, capsys)
    assert code == 2 and "--match-budget applies to --method daa only" in output
    code, output = run_cli([*base, "--output-dir", str(tmp_path / "r"), "--method", "daa", "--match-budget",
                            str(tmp_path / "none")], monkeypatch, capsys)
    assert code == 2 and "not a finished" in output
    assert not (tmp_path / "p" / "config.yaml").exists()

"""`sera score`: auditing a preference dataset by implicit reward margin (src/sera/audit.py, src/sera/crossfit.py).

End to end through the real CLI on tiny models (a random tiny Llama as the SFT/reference, another as the
policy), the margin against daa.py's definitions computed independently, the AUC on a hand example, the
cross-fitting folds, formats other than plain pairs, and bad input (exit code 2)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sera.audit import AUC_KEY, SCORE_COLUMNS, auc, label_stats, score_dataset
from sera.cli import main
from sera.data import load_pairs
from sera.io import read_jsonl
from tests.conftest import make_pairs, write_jsonl

SERA = [sys.executable, "-m", "sera.cli"]


def sera(*args, timeout=600):
    return subprocess.run([*SERA, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sera", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tokenizer):
    """A second random tiny Llama (another seed), standing in for a policy trained from the SFT model."""
    from sera.models import build_tiny_llama, save_model

    path = tmp_path_factory.mktemp("models") / "tiny-policy"
    save_model(build_tiny_llama(tokenizer, seed=1), tokenizer, path)
    return path


def flagged_pairs(n=16):
    rows = make_pairs(n)
    for index, row in enumerate(rows):
        row["flipped"] = index % 3 == 0
        row["note"] = {"kept": "as is", "n": index}  # any other column passes through unchanged
    return rows


# -- end to end through the CLI -------------------------------------------------------------------------

def test_cli_scores_ranks_summarises_and_filters_for_sera_train(tmp_path, tiny_model_dir, policy_dir):
    rows = flagged_pairs(16)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out, kept = tmp_path / "audit" / "scored.jsonl", tmp_path / "kept.jsonl"
    result = sera("score", "--model", policy_dir, "--reference", tiny_model_dir, "--dataset", data, "--output", out,
                  "--label-column", "flipped", "--keep-ratio", "0.5", "--filtered-output", kept, "--beta", "0.5")
    assert result.returncode == 0, result.stderr
    assert "16 pairs scored" in result.stderr and "AUC of a low margin" in result.stderr

    scored = read_jsonl(out)
    assert len(scored) == 16
    for original, row in zip(rows, scored):  # input order, input rows unchanged, plus the score columns
        assert {k: row[k] for k in original} == original
        assert set(row) == set(original) | set(SCORE_COLUMNS)
        assert row["pair_id"] == original["id"]
        assert row["margin"] == pytest.approx(0.5 * ((row["policy_chosen_logps"] - row["reference_chosen_logps"])
                                                     - (row["policy_rejected_logps"] - row["reference_rejected_logps"])))
    by_rank = sorted(scored, key=lambda r: r["rank"])
    assert [r["rank"] for r in by_rank] == list(range(1, 17))
    assert all(a["margin"] >= b["margin"] for a, b in zip(by_rank, by_rank[1:]))

    summary = json.loads(out.with_suffix(".summary.json").read_text())
    margins = np.array([r["margin"] for r in scored])
    assert summary["data"] == {"source": str(data), "format": "pairs", "rows_read": 16, "pairs_scored": 16,
                               "skipped": {}, "skipped_total": 0}
    assert summary["margins"]["share_negative"] == pytest.approx(np.mean(margins < 0))
    assert summary["margins"]["quantiles"]["0.5"] == pytest.approx(np.median(margins))
    difference = np.array([r["chosen_tokens"] - r["rejected_tokens"] for r in scored])
    assert summary["length"]["pearson_margin_vs_length_difference"] == pytest.approx(np.corrcoef(margins, difference)[0, 1])
    flipped = np.array([r["flipped"] for r in scored])
    label = summary["label"]
    assert (label["column"], label["true"], label["false"]) == ("flipped", 6, 10)
    brute = np.mean([[(a < b) + 0.5 * (a == b) for b in margins[~flipped]] for a in margins[flipped]])
    assert label[AUC_KEY] == pytest.approx(brute)
    assert summary["keep"]["kept"] == 8
    assert out.with_suffix(".histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    top = {r["id"] for r in by_rank[:8]}
    filtered = read_jsonl(kept)
    assert {r["id"] for r in filtered} == top
    assert filtered == [r for r in rows if r["id"] in top]  # the input rows themselves, in input order

    run = tmp_path / "run"
    trained = sera("train", "--model", tiny_model_dir, "--dataset", kept, "--output-dir", run, "--method", "daa",
                   "--iterations", "1", "--validation-ratio", "0", "--batch-size", "4", "--grad-accum", "1")
    assert trained.returncode == 0, trained.stderr
    data_report = json.loads((run / "summary.json").read_text())["data"]
    assert data_report["rows_read"] == 8 and data_report["offline_pairs"] == 8 and data_report["skipped"] == {}


def test_cli_crossfit_scores_each_pair_with_the_fold_model_that_never_saw_it(tmp_path, tiny_model_dir):
    rows = flagged_pairs(16)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "scored.parquet"
    result = sera("score", "--model", tiny_model_dir, "--dataset", data, "--output", out, "--crossfit", "2",
                  "--label-column", "flipped", "--batch-size", "4", "--grad-accum", "1", "--learning-rate", "1e-3",
                  "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "fold 2/2" in result.stderr

    import pyarrow.parquet as pq

    scored = pq.read_table(out).to_pylist()
    assert [r["id"] for r in scored] == [r["id"] for r in rows]
    assert all(r["note"] == rows[i]["note"] for i, r in enumerate(scored))
    from sera.crossfit import fold_order

    folds = fold_order([r["id"] for r in rows], 2, 3)  # the loop's rule: sorted ids, Random(seed).shuffle, [k::K]
    assert {r["id"]: r["fold"] for r in scored} == {i: k for k, fold in enumerate(folds) for i in fold}
    for row in scored:  # reference = the SFT model; the policy log-probs are the fold model's
        assert row["margin"] == pytest.approx(0.1 * ((row["policy_chosen_logps"] - row["reference_chosen_logps"])
                                                     - (row["policy_rejected_logps"] - row["reference_rejected_logps"])))
    assert any(abs(r["policy_chosen_logps"] - r["reference_chosen_logps"]) > 1e-4 for r in scored)  # folds trained
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["margin"] == "out-of-fold (2 folds)" and summary["reference"] == str(tiny_model_dir)
    assert summary["crossfit"]["fold_sizes"] == [8, 8] and summary["crossfit"]["train_steps"] == [2, 2]
    assert summary["crossfit"]["training"]["learning_rate"] == 1e-3
    log = read_jsonl(out.with_suffix(".crossfit-log.jsonl"))
    assert {entry["iteration"] for entry in log} == {"crossfit-1/2", "crossfit-2/2"}


def test_out_of_fold_training_never_sees_the_held_fold(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """Spy on train_pass: the rows each fold trains on are exactly the other folds' pairs."""
    import sera.crossfit as crossfit
    from sera.config import TrainConfig
    from sera.daa import get_daa
    from sera.data import PreferencePair
    from sera.models import load_model
    from sera.scoring import LogProbBank
    from sera.tokenization import PairTokenizer

    pair_tokenizer = PairTokenizer(tokenizer, 64)
    pairs = [pair_tokenizer.pair(PreferencePair(r["id"], r["prompt"], r["chosen"], r["rejected"]))
             for r in make_pairs(12)]
    key = {(tuple(p.prompt_ids), tuple(p.chosen_ids), tuple(p.rejected_ids)): p.id for p in pairs}
    trained_on = []
    real_train_pass = crossfit.train_pass

    def spy(model, tok, rows, config, daa, **kwargs):
        trained_on.append({key[(tuple(r["prompt_ids"]), tuple(r["chosen_ids"]), tuple(r["rejected_ids"]))]
                           for r in rows})
        return real_train_pass(model, tok, rows, config, daa, **kwargs)

    monkeypatch.setattr(crossfit, "train_pass", spy)
    load = lambda: load_model(str(tiny_model_dir), dtype="float32")  # noqa: E731
    config = TrainConfig(batch_size=4, grad_accum=1, learning_rate=1e-3, seed=5, scoring_batch_size=8)
    result = crossfit.out_of_fold_margins(pairs, folds=3, load_sft=load, tokenizer=tokenizer, config=config,
                                          daa=get_daa("dpo"), reference=LogProbBank(lambda i: load(), 8),
                                          metrics_path=tmp_path / "log.jsonl")
    everyone = {p.id for p in pairs}
    assert len(trained_on) == 3
    for k, seen in enumerate(trained_on):
        held = {i for i, fold in result.fold.items() if fold == k}
        assert seen == everyone - held and len(held) == 4
    assert set(result.margins) == everyone


# -- the margin is daa.py's, computed independently --------------------------------------------------------

def _independent_logps(model_dir, sequences):
    """Summed response log-probs by a plain forward pass, one sequence at a time (no sera.scoring)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    values = []
    with torch.no_grad():
        for prompt, completion in sequences:
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
            values.append(float(torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(completion)[:, None]).sum()))
    return np.array(values)


@pytest.mark.parametrize("daa", ["dpo", "ipo", "slic", "simpo"])
def test_margin_is_the_daa_definition(daa, tmp_path, tiny_model_dir, policy_dir, tokenizer):
    from sera.daa import get_daa
    from sera.data import PreferencePair
    from sera.tokenization import PairTokenizer

    rows = make_pairs(6, seed=1, chat=daa == "ipo")  # chat rows once, string rows otherwise
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    beta = 0.3
    result = score_dataset(str(policy_dir), str(data), tmp_path / "scored.jsonl",
                           reference=None if daa == "simpo" else str(tiny_model_dir), daa=daa, beta=beta,
                           max_length=64, seed=0)
    pairs = [PairTokenizer(tokenizer, 64).pair(PreferencePair(r["id"], r["prompt"], r["chosen"], r["rejected"]))
             for r in rows]
    chosen = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    rejected = [(p.prompt_ids, p.rejected_ids) for p in pairs]
    n_c = np.array([len(p.chosen_ids) for p in pairs])
    n_r = np.array([len(p.rejected_ids) for p in pairs])
    pc, pr = _independent_logps(policy_dir, chosen), _independent_logps(policy_dir, rejected)
    rc, rr = _independent_logps(tiny_model_dir, chosen), _independent_logps(tiny_model_dir, rejected)
    by_hand = {  # sera-method.md's definitions, written out
        "dpo": beta * ((pc - rc) - (pr - rr)),
        "slic": beta * ((pc - rc) - (pr - rr)),
        "ipo": beta * ((pc - rc) / n_c - (pr - rr) / n_r),
        "simpo": beta * (pc / n_c - pr / n_r),
    }[daa]
    objective = get_daa(daa)
    reference_c, reference_r = (None, None) if objective.reference_free else (rc, rr)
    from_daa_py = (objective.implicit_reward(beta, pc, reference_c, n_c)
                   - objective.implicit_reward(beta, pr, reference_r, n_r))
    margins = np.array([row["margin"] for row in result.rows])
    np.testing.assert_allclose(margins, by_hand, atol=2e-4)
    np.testing.assert_allclose(margins, from_daa_py, atol=2e-4)
    np.testing.assert_allclose([r["policy_chosen_logps"] for r in result.rows], pc, atol=1e-3)
    if daa == "simpo":
        assert all(r["reference_chosen_logps"] is None for r in result.rows)
        assert "reference-free" in result.summary["margin_definition"]
    assert [r["chosen_tokens"] for r in result.rows] == n_c.tolist()


# -- AUC and statistics ------------------------------------------------------------------------------------

def test_auc_on_a_hand_example():
    # a low margin should flag label=True: scores are -margin
    margins = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    labels = [True, False, True, False, False]
    # true margins -2, 0 vs false -1, 1, 2: -2 is below all 3; 0 is below 1 and 2, above -1 -> 5 of 6 pairs
    assert auc(-margins, np.array(labels)) == pytest.approx(5 / 6)
    stats = label_stats("flipped", margins, labels)
    assert stats[AUC_KEY] == pytest.approx(5 / 6) and (stats["true"], stats["false"]) == (2, 3)
    assert "ties counted half" in stats["auc_definition"]
    # ties count half, unknown labels are left out
    tied = label_stats("flipped", np.array([0.0, 0.0, 1.0, 5.0]), [True, False, False, None])
    assert tied[AUC_KEY] == pytest.approx((0.5 + 1) / 2) and tied["missing"] == 1
    assert auc(np.array([1.0, 2.0]), np.array([True, True])) is None
    rng = np.random.default_rng(0)
    scores, positive = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3
    brute = np.mean([[(a > b) + 0.5 * (a == b) for b in scores[~positive]] for a in scores[positive]])
    assert auc(scores, positive) == pytest.approx(brute)


# -- other formats -----------------------------------------------------------------------------------------

def hh(*turns):
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def test_hh_rlhf_rows_pass_through_and_filter_to_the_pairs_scored(tmp_path, tiny_model_dir, policy_dir):
    rows = [{"chosen": hh("hi there", "hello " + "ab" * (i + 1) + "."), "rejected": hh("hi there", "go away" + "!" * i),
             "flipped": i % 2 == 0} for i in range(6)]
    rows.append({"chosen": hh("a", "b", "c", "d"), "rejected": hh("a", "x", "c", "e"), "flipped": False})  # skipped
    data = write_jsonl(tmp_path / "hh.jsonl", rows)
    result = score_dataset(str(policy_dir), str(data), tmp_path / "scored.parquet", reference=str(tiny_model_dir),
                           keep_ratio=0.5, filtered_output=tmp_path / "kept.jsonl", label_column="flipped",
                           max_length=128)
    assert result.summary["data"]["format"] == "hh-rlhf"
    assert result.summary["data"]["skipped"] == {"hh_transcripts_differ_before_last_reply": 1}
    assert [r["pair_id"] for r in result.rows] == [str(i) for i in range(6)]  # row index: load_pairs' default id
    for original, row in zip(rows, result.rows):
        assert {k: row[k] for k in original} == original  # the transcripts, unchanged
    kept = load_pairs(str(tmp_path / "kept.jsonl"))  # what `sera train --dataset` reads
    scored = load_pairs(str(data))
    assert kept.format == "pairs" and len(kept.pairs) == 3
    top = {r["pair_id"] for r in result.rows if r["rank"] <= 3}
    assert {p.id for p in kept.pairs} == top
    assert all(p in scored.pairs for p in kept.pairs)  # the very pairs scored
    assert all("flipped" in r for r in read_jsonl(tmp_path / "kept.jsonl"))


def test_rescoring_a_scored_file_renews_its_columns(tmp_path, tiny_model_dir, policy_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", make_pairs(5))
    first = score_dataset(str(policy_dir), str(data), tmp_path / "a.jsonl", reference=str(tiny_model_dir), max_length=64)
    again = score_dataset(str(tiny_model_dir), str(tmp_path / "a.jsonl"), tmp_path / "b.jsonl", daa="simpo",
                          max_length=64)
    assert again.summary["replaced_columns"] == sorted(SCORE_COLUMNS)
    assert [r["prompt"] for r in again.rows] == [r["prompt"] for r in first.rows]
    assert all(r["reference_chosen_logps"] is None for r in again.rows)


# -- bad input: exit code 2, a message naming file, row and field ------------------------------------------

def test_bad_input_exits_2_naming_file_row_and_field(tmp_path, tiny_model_dir, policy_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [*make_pairs(3), {"prompt": "x", "chosen": "y"}, "{not json"])
    result = sera("score", "--model", policy_dir, "--reference", tiny_model_dir, "--dataset", bad,
                  "--output", tmp_path / "s.jsonl")
    assert result.returncode == 2
    assert "bad.jsonl, row 4: field 'rejected' is missing" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s.jsonl").exists()

    skipping = sera("score", "--model", policy_dir, "--reference", tiny_model_dir, "--dataset", bad,
                    "--output", tmp_path / "s.jsonl", "--skip-invalid")
    assert skipping.returncode == 0, skipping.stderr
    summary = json.loads((tmp_path / "s.summary.json").read_text())
    assert summary["data"]["skipped"] == {"invalid": 2} and summary["data"]["pairs_scored"] == 3


@pytest.mark.parametrize("extra, message", [
    ([], "give --reference"),
    (["--reference", "{sft}", "--output", "{tmp}/s.csv"], "write a .jsonl or .parquet file"),
    (["--reference", "{sft}", "--keep-ratio", "0.5"], "--keep-ratio and --filtered-output go together"),
    (["--reference", "{sft}", "--keep-ratio", "1.5", "--filtered-output", "{tmp}/k.jsonl"], "--keep-ratio must be in"),
    (["--reference", "{sft}", "--learning-rate", "1e-3"], "apply to --crossfit only"),
    (["--crossfit", "2", "--reference", "{sft}"], "drop --reference"),
    (["--crossfit", "1"], "at least 2 folds"),
    (["--reference", "{sft}", "--daa", "kto"], "--daa: 'kto' is not one of"),
    (["--reference", "{sft}", "--label-column", "absent"], "row 1: field 'absent' (--label-column) is missing"),
    (["--reference", "{sft}", "--label-column", "note"], "row 1: field 'note' (--label-column) must be a boolean"),
    (["--reference", "{sft}", "--dataset", "{tmp}/none.jsonl"], "none.jsonl: no such file"),
    (["--reference", "{tmp}"], "cannot load tokenizer"),
])
def test_bad_options_exit_2_before_any_work(extra, message, tmp_path, tiny_model_dir, policy_dir, monkeypatch,
                                            capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", flagged_pairs(4))
    args = ["score", "--model", str(policy_dir), "--dataset", str(data), "--output", str(tmp_path / "s.jsonl")]
    args += [a.format(sft=tiny_model_dir, tmp=tmp_path) for a in extra]
    code, output = run_cli(args, monkeypatch, capsys)
    assert code == 2, output
    assert message in " ".join(output.split()), output
    assert not (tmp_path / "s.jsonl").exists()


def test_score_is_listed_in_help():
    result = sera("--help")
    assert result.returncode == 0 and "score" in result.stdout

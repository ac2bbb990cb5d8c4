"""Self-review safeguards: labellers, selection modes, diagnostics, the iteration guard, `sera report`."""

import json

import numpy as np
import pytest

from sera.daa import get_daa
from sera.diagnostics import mean_within_group_spearman, preference_accuracy, spearman, warnings_for
from sera.labellers import BlendLabeller, ImplicitLabeller, JudgeLabeller, LikelihoodLabeller
from sera.models import build_tiny_llama
from sera.rewards import ImplicitReward
from sera.scoring import LogProbBank, sequence_logps
from sera.tokenization import PairTokenizer
from tests.test_cli_train import FAST, run_cli

GOLD = '''
def reversal(prompt, output):
    """1 for the exact reversal of the prompt's word, else the share of matching characters."""
    word = prompt.split()[1][::-1]
    out = output.strip().rstrip(".")
    return sum(a == b for a, b in zip(word, out)) / max(len(word), len(out), 1)
'''


@pytest.fixture
def bank_and_reward(tokenizer):
    models = {0: build_tiny_llama(tokenizer, seed=0), 1: build_tiny_llama(tokenizer, seed=1)}
    bank = LogProbBank(lambda i: models[i], batch_size=8)
    return models, bank, ImplicitReward(get_daa("dpo"), 0.5, bank, "sft")


def test_labellers_read_the_quantities_they_name(tokenizer, bank_and_reward):
    models, bank, reward = bank_and_reward
    pair_tokenizer = PairTokenizer(tokenizer, 64)
    prompts, candidates = ["reverse abcd ?"], [[" dcba.", " xyz.", " dc."]]
    sequences = [(tokenizer(prompts[0]).input_ids, tokenizer(c + tokenizer.eos_token).input_ids)
                 for c in candidates[0]]
    policy, reference = sequence_logps(models[1], sequences), sequence_logps(models[0], sequences)

    np.testing.assert_allclose(LikelihoodLabeller(pair_tokenizer, reward)(1, prompts, candidates)[0], policy)
    implicit = ImplicitLabeller(pair_tokenizer, reward, gamma=0.0)(1, prompts, candidates)[0]
    np.testing.assert_allclose(implicit, 0.5 * (policy - reference), rtol=1e-6)
    blended = BlendLabeller(pair_tokenizer, reward, gamma=0.0, weight=0.5)(1, prompts, candidates)[0]
    np.testing.assert_allclose(blended, implicit + 0.5 * reference, rtol=1e-6)
    ensembled = ImplicitLabeller(pair_tokenizer, reward, gamma=0.3)(1, prompts, candidates)[0]
    np.testing.assert_allclose(ensembled, 0.7 * implicit, rtol=1e-6)  # r_0 = 0 against the SFT reference


class CountingPairwiseJudge:
    """Prefers the longer output; records how many comparisons it was asked for."""

    spec, pointwise, calls = "longer", False, 0

    def compare(self, prompts, a, b):
        self.calls += len(prompts)
        return [int(np.sign(len(x) - len(y))) for x, y in zip(a, b)]


def test_judge_labeller_pointwise_and_round_robin(tmp_path):
    from sera.eval.judges import build_judge

    (tmp_path / "gold.py").write_text(GOLD)
    gold = JudgeLabeller(build_judge(f"gold:{tmp_path / 'gold.py'}:reversal"))
    scores = gold(1, ["reverse abcd ?"], [[" dcba.", " dxxx.", " zzzz."]])[0]
    np.testing.assert_allclose(scores, [1.0, 0.25, 0.0])
    judge = CountingPairwiseJudge()
    wins = JudgeLabeller(judge)(1, ["p"], [["a", "bbb", "cc"]])[0]
    np.testing.assert_allclose(wins, [0, 2, 1])
    assert judge.calls == 3


def test_diagnostic_arithmetic():
    assert preference_accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(0.625)
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1]), np.array([1, 2])) is None
    assert mean_within_group_spearman([np.array([1, 2]), np.array([1, 2])],
                                      [np.array([1, 2]), np.array([2, 1])]) == pytest.approx(0.0)


def test_warnings_fire_past_their_thresholds_only():
    quiet = {"iteration": 2, "val_irm_accuracy": 0.7, "labeller_accuracy": 0.7, "displacement_corr": 0.1,
             "generated_share_kept": 0.3, "length_drift": 1.1}
    assert warnings_for(quiet) == []
    loud = {"iteration": 2, "val_irm_accuracy": 0.5, "labeller_accuracy": 0.4, "displacement_corr": -0.6,
            "generated_share_kept": 0.8, "length_drift": 1.6}
    assert len(warnings_for(loud)) == 5
    # the advice never suggests the labeller already in use
    assert "labeller likelihood or" in " ".join(warnings_for(loud))
    assert "labeller judge:<spec>, or --no-bootstrap" in " ".join(warnings_for(loud, labeller="likelihood"))


def _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, *extra):
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
                            "--output-dir", str(out), "--iterations", "2", *FAST, *extra], monkeypatch, capsys)
    assert code == 0, output
    return out, json.loads((out / "summary.json").read_text())


def test_quota_selection_keeps_each_source_share(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    out, summary = _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, "--selection-mode", "quota",
                          "--offline-quota", "0.5", "--generated-quota", "0.25")
    rows = [json.loads(line) for line in open(out / "iter_2" / "selection.jsonl")]
    offline = [r for r in rows if r["source"] == "offline"]
    generated = [r for r in rows if r["source"] == "generated"]
    assert sum(r["selected"] for r in offline) == 8
    assert sum(r["selected"] for r in generated) == -(-len(generated) // 4)


def test_crossfit_ranks_offline_pairs_by_out_of_fold_margins(tmp_path, tiny_model_dir, pairs_file, monkeypatch,
                                                             capsys):
    out, summary = _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, "--selection-mode", "crossfit",
                          "--no-bootstrap")
    assert summary["iterations"][1]["seconds_crossfit"] > 0
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert {m["iteration"] for m in metrics if "loss" in m} >= {"crossfit-1/2", "crossfit-2/2", 1, 2}
    plain, _ = _train(tmp_path / "plain", tiny_model_dir, pairs_file, monkeypatch, capsys, "--no-bootstrap")
    margins = lambda run: {json.loads(l)["id"]: json.loads(l)["margin"] for l in open(run / "iter_2/selection.jsonl")}
    assert margins(out) != margins(plain)  # out-of-fold, not in-sample, margins


def test_guard_and_report(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    (tmp_path / "gold.py").write_text(GOLD)
    out, summary = _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, "--validation-ratio", "0.25",
                          "--guard", f"judge:gold:{tmp_path / 'gold.py'}:reversal", "--bootstrap-labeller",
                          "likelihood")
    scores = {0: summary["sft_review"]["guard_score"],
              **{it["iteration"]: it["guard_score"] for it in summary["iterations"]}}
    best = max(scores.values())
    expected = 2 if scores[2] >= best else min(t for t, s in scores.items() if s == best)
    assert summary["final_iterate"] == expected
    for it in summary["iterations"]:
        assert 0 <= it["val_irm_accuracy"] <= 1 and 0 <= it["labeller_accuracy"] <= 1
    assert summary["iterations"][1]["labeller"] == "likelihood"
    assert "displacement_corr" not in summary["iterations"][1]  # measured for implicit-reward labellers only

    code, output = run_cli(["report", str(out)], monkeypatch, capsys)
    assert code == 0 and "self-review diagnostics" in output
    assert (out / "report.png").stat().st_size > 10_000
    code, output = run_cli(["report", str(tmp_path / "nothing")], monkeypatch, capsys)
    assert code == 2 and "not found" in output


@pytest.mark.parametrize("args, message", [
    (["--bootstrap-labeller", "oracle"], "--bootstrap-labeller"),
    (["--bootstrap-labeller", "blend:x"], "blend weight"),
    (["--guard", "irm", "--validation-ratio", "0"], "--guard needs held-out pairs"),
    (["--selection-mode", "magic"], "--selection-mode"),
])
def test_bad_safeguard_options_exit_2(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, args, message):
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
                            "--output-dir", str(tmp_path / "o"), *args], monkeypatch, capsys)
    assert code == 2 and message in output

"""benchmarks/stats.py: standard errors, paired differences with a t-interval, wins/ties/losses, the
preregistered decision rule; and the self-review harness's budget-matched row."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def stats(load_benchmark):
    return load_benchmark("stats.py")


def test_mean_se(stats):
    s = stats.mean_se([1.0, 2.0, 3.0, None])
    assert s["mean"] == 2.0 and s["n"] == 3 and s["sd"] == pytest.approx(1.0)
    assert s["se"] == pytest.approx(1 / math.sqrt(3))
    assert stats.mean_se([0.5])["se"] is None and stats.mean_se([]) is None


def test_paired_ties_and_decision(stats):
    a = {1: 0.60, 2: 0.61, 3: 0.70, 4: 0.58, 5: 0.655}
    b = {1: 0.50, 2: 0.608, 3: 0.60, 4: 0.60, 5: 0.55, 6: 0.1}  # seed 6 has no partner: left out
    d = stats.paired(a, b)
    assert d["n"] == 5 and (d["wins"], d["ties"], d["losses"]) == (3, 1, 1)  # +0.002 is a tie, -0.02 a loss
    assert d["mean"] == pytest.approx(sum(a[k] - b[k] for k in a) / 5)
    half = stats.t_critical(4) * d["se"]
    assert d["ci95"] == pytest.approx([d["mean"] - half, d["mean"] + half])
    assert stats.t_critical(4) == pytest.approx(2.776, abs=1e-3)
    assert stats.decide(d) == "not shown"  # CI crosses 0
    clear = stats.paired({i: 0.6 + 0.01 * i for i in range(5)}, {i: 0.5 for i in range(5)})
    assert stats.decide(clear) == "beats"
    assert stats.decide(stats.paired({0: 0.1, 1: 0.1, 2: 0.1}, {0: 0.3, 1: 0.31, 2: 0.29})) == "loses"
    assert stats.decide(None) == "not shown" and stats.decide(stats.paired({1: 1.0}, {1: 0.0})) == "not shown"


def test_harness_has_the_budget_matched_row(load_benchmark, tmp_path):
    bench = load_benchmark("self_review.py")
    assert bench.PROBES["dpo-matched"] == {"method": "daa", "match_budget": bench.MATCHED}
    rec = bench.PROBES["recommended"]
    assert rec["bootstrap_labeller"] == "likelihood" and rec["selection"] is False
    assert "carry" in bench.WORLDS and bench.GOLD_SPECS["carry"] == "gold:sera.worlds.carry:gold_reward"
    with pytest.raises(SystemExit, match="needs the recommended row"):
        bench.main(["--quick", "--worlds", "carry", "--rows", "dpo,dpo-matched", "--output", str(tmp_path / "none.json")])

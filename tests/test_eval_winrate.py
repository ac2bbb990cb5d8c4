"""Win-rate statistics: counts, ties as halves, the bootstrap interval, the length-controlled win rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sera.eval.winrate import bootstrap_ci, fit_logistic, length_controlled_win_rate, summarize


def test_counts_and_ties_count_half():
    report = summarize([1, 1, 0, -1], [10, 20, 30, 40], [10, 20, 30, 40])
    assert (report["n"], report["wins"], report["ties"], report["losses"]) == (4, 2, 1, 1)
    assert report["win_rate"] == pytest.approx(0.625)
    assert report["lc_win_rate"] == pytest.approx(0.625)  # no length difference: nothing to control
    assert report["mean_len_candidate"] == 25.0 and report["mean_len_baseline"] == 25.0
    assert report["ci_low"] <= report["win_rate"] <= report["ci_high"]


def test_bootstrap_interval_is_reproducible_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.choice([1, 0, -1], size=50, p=[0.5, 0.2, 0.3])
    large = rng.choice([1, 0, -1], size=5000, p=[0.5, 0.2, 0.3])
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    low_s, high_s = bootstrap_ci(small)
    low_l, high_l = bootstrap_ci(large)
    assert high_l - low_l < (high_s - low_s) / 5
    assert low_l < 0.6 < high_l  # true win rate 0.5 + 0.2 / 2
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_length_controlled_win_rate_removes_a_pure_length_effect():
    rng = np.random.default_rng(0)
    n = 4000
    len_c = rng.integers(50, 400, n)
    len_b = rng.integers(50, 250, n)
    prob = 1 / (1 + np.exp(-2 * (len_c - len_b) / 100))  # the judge only likes length
    outcomes = np.where(rng.random(n) < prob, 1, -1)
    report = summarize(outcomes, len_c, len_b)
    assert report["win_rate"] > 0.65
    assert report["lc_win_rate"] == pytest.approx(0.5, abs=0.04)


def test_length_controlled_win_rate_keeps_a_real_effect():
    rng = np.random.default_rng(0)
    n = 4000
    len_c, len_b = rng.integers(50, 300, n), rng.integers(50, 300, n)
    outcomes = np.where(rng.random(n) < 0.8, 1, -1)  # wins regardless of length
    assert length_controlled_win_rate(outcomes, len_c, len_b) == pytest.approx(0.8, abs=0.03)


def test_degenerate_inputs():
    assert length_controlled_win_rate([1, 1, 1], [10, 20, 30], [1, 1, 1]) == 1.0  # all wins: no fit to do
    report = summarize([], [], [])
    assert report["n"] == 0 and math.isnan(report["win_rate"]) and math.isnan(report["ci_low"])
    with pytest.raises(ValueError):
        summarize([2], [1], [1])


def test_logistic_fit_matches_known_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20000)
    features = np.stack([np.ones_like(x), x], axis=1)
    target = (rng.random(x.size) < 1 / (1 + np.exp(-(0.5 + 1.5 * x)))).astype(float)
    weights = fit_logistic(features, target, l2=0.0)
    assert weights == pytest.approx([0.5, 1.5], abs=0.08)

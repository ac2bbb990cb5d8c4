"""Win-rate statistics of pairwise outcomes (+1 candidate wins, 0 tie, -1 baseline wins).

- `win_rate`: (wins + ties / 2) / n.
- `ci_low`, `ci_high`: 95% percentile bootstrap over pairs (fixed seed, so reports are reproducible).
- `lc_win_rate`: length-controlled win rate. A logistic regression of the outcome (soft target:
  1 win, 0.5 tie, 0 loss) on the standardised length difference `(len_candidate - len_baseline) / sd`
  is fitted by Newton's method with a small L2 penalty on the slope; the LC win rate is its prediction at zero
  length difference, `sigmoid(intercept)`. Lengths are in characters. When every length difference
  is the same, or every outcome is, there is nothing to regress on and the LC win rate equals the win rate.
  (AlpacaEval 2's LC also conditions on the instruction and model; this is the simple version the
  paper's win rates need: "how often does the candidate win when it is not longer".)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def summarize(outcomes: Sequence[int], len_candidate: Sequence[int], len_baseline: Sequence[int], *,
              bootstrap_samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The report's statistics for `outcomes` (and the two sides' output lengths, pair by pair)."""
    if not (len(outcomes) == len(len_candidate) == len(len_baseline)):
        raise ValueError("outcomes and lengths must have the same number of pairs")
    outcome = np.asarray(outcomes, dtype=np.int64)
    if outcome.size and not np.isin(outcome, (-1, 0, 1)).all():
        raise ValueError("outcomes must be +1, 0 or -1")
    n = int(outcome.size)
    low, high = bootstrap_ci(outcome, samples=bootstrap_samples, confidence=confidence, seed=seed)
    return {
        "n": n,
        "wins": int((outcome == 1).sum()),
        "ties": int((outcome == 0).sum()),
        "losses": int((outcome == -1).sum()),
        "win_rate": win_rate(outcome),
        "ci_low": low,
        "ci_high": high,
        "lc_win_rate": length_controlled_win_rate(outcome, len_candidate, len_baseline),
        "mean_len_candidate": float(np.mean(len_candidate)) if n else math.nan,
        "mean_len_baseline": float(np.mean(len_baseline)) if n else math.nan,
    }


def win_rate(outcomes: Sequence[int]) -> float:
    """Share of pairs the candidate wins, ties counting half."""
    scores = _soft(outcomes)
    return float(scores.mean()) if scores.size else math.nan


def bootstrap_ci(outcomes: Sequence[int], *, samples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the win rate, resampling pairs with replacement."""
    scores = _soft(outcomes)
    n = scores.size
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // n)  # bound memory at ~16 MB of indices
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        means[start:stop] = scores[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def length_controlled_win_rate(outcomes: Sequence[int], len_candidate: Sequence[int],
                               len_baseline: Sequence[int], *, l2: float = 1e-3) -> float:
    """sigmoid(intercept) of a logistic regression of the soft outcome on the length difference."""
    target = _soft(outcomes)
    if target.size == 0:
        return math.nan
    diff = np.asarray(len_candidate, dtype=np.float64) - np.asarray(len_baseline, dtype=np.float64)
    sd = float(np.sqrt(np.mean(diff ** 2)))  # scale only: zero difference must stay at zero
    if sd == 0.0 or np.allclose(diff, diff[0]) or np.all(target == target[0]):
        return win_rate(outcomes)
    features = np.stack([np.ones_like(diff), diff / sd], axis=1)
    weights = fit_logistic(features, target, l2=l2)
    return float(_sigmoid(weights[0]))


def fit_logistic(features: np.ndarray, target: np.ndarray, *, l2: float = 1e-3, max_iter: int = 100,
                 tol: float = 1e-10) -> np.ndarray:
    """Logistic regression with soft targets in [0, 1], by Newton's method (the loss is convex).

    Minimises mean cross-entropy + l2/2 |w[1:]|^2. The first feature is the intercept and is not
    penalised (a penalty would pull the LC win rate towards 0.5); the penalty on the slopes keeps
    them finite when the outcome is separable by length. With a non-constant soft target, the
    intercept's optimum is finite.
    """
    n, d = features.shape
    weights = np.zeros(d)
    penalty = np.full(d, l2)
    penalty[0] = 1e-9
    for _ in range(max_iter):
        prob = _sigmoid(features @ weights)
        gradient = features.T @ (prob - target) / n + penalty * weights
        hessian = (features.T * (prob * (1 - prob))) @ features / n + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < tol:
            break
    return weights


def _soft(outcomes: Sequence[int]) -> np.ndarray:
    return (np.asarray(outcomes, dtype=np.float64) + 1.0) / 2.0


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))

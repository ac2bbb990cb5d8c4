"""SPA (Kim et al., 2024, "Spread Preference Annotation: Direct Preference Judgment for Efficient LLM
Alignment"): a small seed of labelled pairs, then the policy labels its own samples.

    iteration 1     DPO on a seed: a fraction (`--spa-seed-ratio`) of the labelled pairs, by prompt
    iteration t>1   for the t-1-th share of the other prompts (their labels are never read), sample N >= 2
                    responses from theta_{t-1}; judge them with its DPO implicit reward against the
                    previous iterate, r(y) = beta * (log pi_{t-1}(y|x) - log pi_{t-2}(y|x)); pair the
                    highest-reward response (chosen) with the lowest; the label's confidence is
                    p = sigmoid(r_chosen - r_rejected) (Bradley-Terry, in [0.5, 1)); the least confident
                    share of the iteration's pairs (`--spa-smooth-lowest`), or those whose confidence is below
                    `--spa-confidence-threshold` when it is set, train with label smoothing
                    eps = `--spa-label-smoothing`:
                    -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d); theta_t = one epoch of that
                    loss from theta_{t-1}, reference theta_{t-1}.

The functions here are the judgment and the refinement, on numbers alone; :func:`sera.loop.run` samples,
scores with the run's implicit reward (one code path with :func:`dpo_rewards`) and trains.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import numpy as np

from sera.bootstrap import best_vs_worst
from sera.daa import get_daa


@dataclass(frozen=True)
class SpaLabel:
    chosen: int
    """Index of the chosen candidate (highest implicit reward)."""
    rejected: int
    margin: float
    """r_chosen - r_rejected (>= 0)."""
    confidence: float
    """sigmoid(margin): the policy's probability that its own label is right."""
    label_smoothing: float
    """eps of this pair's loss (0 = plain DPO)."""


def dpo_rewards(policy_logps: np.ndarray, reference_logps: np.ndarray, beta: float) -> np.ndarray:
    """DPO's implicit reward beta * (log pi - log pi_ref) of summed response log-probs (the run's own formula)."""
    policy_logps = np.asarray(policy_logps, dtype=np.float64)
    return get_daa("dpo").implicit_reward(beta, policy_logps, np.asarray(reference_logps, dtype=np.float64),
                                          np.ones(len(policy_logps)))


def confidence(margins) -> np.ndarray:
    """sigmoid(margin), computed stably."""
    margins = np.asarray(margins, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * margins))


def smoothing(confidences, eps: float, *, lowest: float | None = None, threshold: float | None = None) -> np.ndarray:
    """eps for each pair whose label is not confident enough, 0 for the others.

    Not confident: with `threshold`, confidence < threshold; otherwise the ceil(lowest * n) pairs of least
    confidence (earlier pairs first on ties)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    result = np.zeros(len(confidences))
    if threshold is not None:
        result[confidences < threshold] = eps
    elif lowest is not None:
        count = min(len(confidences), math.ceil(lowest * len(confidences)))
        result[np.argsort(confidences, kind="stable")[:count]] = eps
    return result


def label(rewards: list[np.ndarray], eps: float, *, lowest: float | None = None, threshold: float | None = None
          ) -> list[SpaLabel | None]:
    """SPA's label of each prompt's candidates from their implicit rewards: best vs worst, its confidence and
    its smoothing (see :func:`smoothing`); None where the rewards all tie (no preference to learn)."""
    rewards = [np.asarray(r, dtype=np.float64) for r in rewards]
    picks = [best_vs_worst(r) for r in rewards]
    margins = np.array([r[p[0]] - r[p[1]] for r, p in zip(rewards, picks) if p is not None], dtype=np.float64)
    confident = confidence(margins)
    eps_values = smoothing(confident, eps, lowest=lowest, threshold=threshold)
    labels, index = [], 0
    for pick in picks:
        if pick is None:
            labels.append(None)
            continue
        labels.append(SpaLabel(pick[0], pick[1], float(margins[index]), float(confident[index]),
                               float(eps_values[index])))
        index += 1
    return labels


def split_prompts(prompts: list, seed_ratio: float, iterations: int, seed: int) -> tuple[set[str], list[set[str]]]:
    """Keys of the seed prompts and, for each of the `iterations - 1` later iterations, its share of the others.

    Prompts (any JSON-serialisable values, repeats allowed) are shuffled with `seed`; the first
    max(1, round(seed_ratio * n)) are the seed, the rest are cut into near-equal consecutive shares."""
    keys = sorted({_key(p) for p in prompts})
    random.Random(seed).shuffle(keys)
    count = min(len(keys), max(1, round(seed_ratio * len(keys))))
    rest = keys[count:]
    shares = [set(map(str, chunk)) for chunk in np.array_split(np.array(rest, dtype=object), max(iterations - 1, 0))] \
        if iterations > 1 else []
    return set(keys[:count]), shares


def prompt_key(prompt) -> str:
    return _key(prompt)


def _key(prompt) -> str:
    return json.dumps(prompt, sort_keys=True)

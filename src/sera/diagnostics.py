"""Signals that self-review is going wrong, computed in every run without any gold labels.

Each iteration's entry in summary.json carries these; `warnings_for` turns the ones past a
documented threshold into plain-language warnings (printed, and listed in summary.json).

| signal | meaning | warn when |
|---|---|---|
| val_irm_accuracy | held-out offline pairs whose implicit reward margin agrees with the label | < 0.55 |
| labeller_accuracy | held-out pairs the bootstrap labeller orders like the label (runs that bootstrap) | < 0.55 |
| displacement_corr | within-prompt Spearman of implicit reward vs reference log-likelihood of samples (implicit and blend labellers) | < -0.3 |
| generated_share_kept | share of kept pairs that are bootstrapped | > 0.5 |
| length_drift | mean length of greedy held-out responses / the SFT model's | > 1.3 or < 0.7 |

Labels of real data are noisy, so accuracies near 0.5-0.6 are not alarming alone; a labeller that
is *below* 0.5, or a strongly negative displacement correlation, means the policy is labelling its
own samples backwards (measured in `../shared/docs/measured-facts.md`).
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = {"val_irm_accuracy": 0.55, "labeller_accuracy": 0.55, "displacement_corr": -0.3,
              "generated_share_kept": 0.5, "length_drift_high": 1.3, "length_drift_low": 0.7}


def preference_accuracy(margins: np.ndarray) -> float | None:
    """Share of pairs with a positive margin; ties count half."""
    if len(margins) == 0:
        return None
    return float(np.mean((margins > 0) + 0.5 * (margins == 0)))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    ranks_a, ranks_b = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def mean_within_group_spearman(groups_a: list[np.ndarray], groups_b: list[np.ndarray]) -> float | None:
    values = [v for v in (spearman(a, b) for a, b in zip(groups_a, groups_b)) if v is not None]
    return float(np.mean(values)) if values else None


def warnings_for(entry: dict, labeller: str = "implicit") -> list[str]:
    """The warnings one iteration's diagnostics raise; `labeller` (the bootstrap labeller in use) shapes advice."""
    t, found = entry["iteration"], []
    value = entry.get("val_irm_accuracy")
    if value is not None and t >= 1 and value < THRESHOLDS["val_irm_accuracy"]:
        found.append(f"iteration {t}: the implicit reward orders only {value:.0%} of held-out pairs like their "
                     "labels (near chance): its margins say little about unseen data")
    value = entry.get("labeller_accuracy")
    if value is not None and value < THRESHOLDS["labeller_accuracy"]:
        other = "judge:<spec>, or --no-bootstrap" if labeller == "likelihood" else "likelihood or judge:<spec>"
        found.append(f"iteration {t}: the bootstrap labeller agrees with only {value:.0%} of held-out labels; "
                     f"the pairs it builds next may be mislabelled (try --bootstrap-labeller {other})")
    value = entry.get("displacement_corr")
    if value is not None and value < THRESHOLDS["displacement_corr"]:
        found.append(f"iteration {t}: implicit reward and reference likelihood of samples correlate at {value:+.2f} "
                     "(likelihood displacement): the samples it ranks best are those the SFT model found unlikely")
    value = entry.get("generated_share_kept")
    if value is not None and value > THRESHOLDS["generated_share_kept"]:
        found.append(f"iteration {t}: {value:.0%} of kept pairs are bootstrapped (their margins are >= 0 by "
                     "construction) and displace offline pairs; consider --no-selection (docs/self-review.md)")
    value = entry.get("length_drift")
    if value is not None and not THRESHOLDS["length_drift_low"] <= value <= THRESHOLDS["length_drift_high"]:
        found.append(f"iteration {t}: held-out responses are {value:.2f}x the SFT model's length")
    return found


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):  # average ranks of ties
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks

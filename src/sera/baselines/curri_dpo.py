"""Curri-DPO (Pattnaik et al., 2024, "Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
Preferences"): several pairs per prompt from rated responses, trained easy to hard, iteratively.

    pairs       best vs each other: within a prompt, the best-rated response (chosen) against every
                lower-rated one (UltraFeedback's 4 completions give 3 pairs per prompt)
    order       easy to hard: the largest rating gap first
    stages      iteration t trains stage t for one epoch, with the iterate t-1 as the reference

Two orders (`--curri-order`):

    per-prompt  (Curri-DPO's iterative variant) each prompt's pairs are ranked by rating gap, largest
                first; rank r of every prompt goes to the same stage: with 3 pairs per prompt and T = 3,
                stage t holds every prompt's t-th easiest pair. More ranks than stages: consecutive
                ranks share a stage; fewer: the ordered curriculum is cut into T near-equal stages.
    global      every pair sorted by rating gap, largest first, cut into T near-equal stages.

Ties are broken by pair id, so the curriculum is deterministic. These functions see only ids, prompt and
response keys and ratings; :func:`rated_pairs` builds those from loaded pairs and their rating columns.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from sera.data import PreferencePair
from sera.errors import SeraInputError

ORDERS = ("per-prompt", "global")


@dataclass(frozen=True)
class RatedPair:
    """What the curriculum needs to know about a pair."""

    id: str
    prompt: str
    """Key of the prompt (pairs with equal keys share a prompt)."""
    chosen: str
    """Key of the chosen response (pairs with equal keys share their chosen response)."""
    gap: float
    """Rating of the chosen minus rating of the rejected response (> 0)."""
    chosen_rating: float | None = None


@dataclass(frozen=True)
class CurriculumPair:
    pair: RatedPair
    rank: int
    """0 = the prompt's easiest pair (largest rating gap)."""
    stage: int = -1


def rated_pairs(pairs: list[PreferencePair], meta: dict[str, dict]) -> list[RatedPair]:
    """RatedPairs from loaded pairs and `LoadedPairs.meta` (rating_gap / chosen_rating / rejected_rating).

    Raises SeraInputError when a pair has no rating: Curri-DPO needs rated responses (original UltraFeedback,
    or a pairs file with `chosen_rating` and `rejected_rating`, or `rating_gap`, columns)."""
    result = []
    for pair in pairs:
        fields = meta.get(pair.id, {})
        chosen_rating, rejected_rating = fields.get("chosen_rating"), fields.get("rejected_rating")
        if chosen_rating is not None and rejected_rating is not None:
            gap = float(chosen_rating) - float(rejected_rating)
        elif fields.get("rating_gap") is not None:
            gap, chosen_rating = float(fields["rating_gap"]), None
        else:
            raise SeraInputError(
                f"--method curri-dpo: pair {pair.id!r} has no rating; Curri-DPO needs several rated responses "
                "per prompt: original UltraFeedback rows (instruction, completions with ratings or scores), or "
                "pairs with `chosen_rating` and `rejected_rating` (or `rating_gap`) columns")
        result.append(RatedPair(id=pair.id, prompt=_key(pair.prompt), chosen=_key(pair.chosen), gap=gap,
                                chosen_rating=None if chosen_rating is None else float(chosen_rating)))
    return result


def best_vs_each_other(pairs: list[RatedPair]) -> list[RatedPair]:
    """Within each prompt, the pairs whose chosen response is the best-rated one (the first such response
    on ties for best), with a positive gap. A prompt whose pairs carry only a gap (no ratings) cannot tell
    its best response: all its pairs with a positive gap are kept."""
    kept = []
    for group in _by_prompt(pairs).values():
        if any(p.chosen_rating is None for p in group):
            kept.extend(p for p in group if p.gap > 0)
            continue
        best_rating = max(p.chosen_rating for p in group)
        best = next(p.chosen for p in group if p.chosen_rating == best_rating)
        kept.extend(p for p in group if p.chosen == best and p.chosen_rating == best_rating and p.gap > 0)
    return kept


def curriculum_order(pairs: list[RatedPair], order: str = "per-prompt") -> list[CurriculumPair]:
    """Easy to hard. `per-prompt`: by each pair's rank within its prompt, then gap (largest first), then id;
    `global`: by gap (largest first), then id."""
    if order not in ORDERS:
        raise SeraInputError(f"--curri-order: {order!r} is not one of {', '.join(ORDERS)}")
    ranked = []
    for group in _by_prompt(pairs).values():
        for rank, pair in enumerate(sorted(group, key=lambda p: (-p.gap, p.id))):
            ranked.append(CurriculumPair(pair, rank))
    if order == "per-prompt":
        return sorted(ranked, key=lambda c: (c.rank, -c.pair.gap, c.pair.id))
    return sorted(ranked, key=lambda c: (-c.pair.gap, c.pair.id))


def curriculum_stages(pairs: list[RatedPair], stages: int, order: str = "per-prompt") -> list[list[CurriculumPair]]:
    """The curriculum cut into `stages` consecutive stages (one per iteration), easiest first."""
    ordered = curriculum_order(pairs, order)
    if len(ordered) < stages:
        raise SeraInputError(f"--method curri-dpo: {len(ordered)} curriculum pairs cannot fill {stages} iterations; "
                             "lower --iterations or give more rated pairs")
    ranks = 1 + max(c.rank for c in ordered)
    if order == "per-prompt" and ranks >= stages:
        stage_of_rank = {int(r): s for s, group in enumerate(np.array_split(np.arange(ranks), stages)) for r in group}
        staged = [CurriculumPair(c.pair, c.rank, stage_of_rank[c.rank]) for c in ordered]
    else:
        bounds = np.cumsum([0] + [len(chunk) for chunk in np.array_split(np.arange(len(ordered)), stages)])
        staged = [CurriculumPair(c.pair, c.rank, int(np.searchsorted(bounds, i, side="right") - 1))
                  for i, c in enumerate(ordered)]
    return [[c for c in staged if c.stage == s] for s in range(stages)]


def _by_prompt(pairs: list[RatedPair]) -> "OrderedDict[str, list[RatedPair]]":
    groups: OrderedDict[str, list[RatedPair]] = OrderedDict()
    for pair in pairs:
        groups.setdefault(pair.prompt, []).append(pair)
    return groups


def _key(text) -> str:
    return text if isinstance(text, str) else json.dumps(text, sort_keys=True)

"""Imperfect writers, a simulated annotator, and the offline preference pairs they produce.

Offline pairs are built the way real ones are: for a configurable share of prompts one response
comes from the SFT policy and the other from a different model (a "strong" or a "weak" writer,
both verbose: their mistakes are mostly stuttered letters, so their answers run long); the rest
are two samples of the SFT policy. A simulated annotator labels each pair by the gold reward,
except that (a) with probability ``length_bias`` it prefers the longer response whatever its
quality (a spurious feature), and (b) with probability ``noise`` its label is flipped.

The truth about each pair (flipped? length-driven? where each response came from, their gold
rewards) goes to a sidecar record, never into what training reads.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sera.worlds.sorting import corrupt, gold_reward, solve


@dataclass(frozen=True)
class Writer:
    """A programmatic writer: the correct answer with a random number of mistakes of its kinds."""

    name: str
    error_counts: tuple[float, ...]  # P(0 mistakes), P(1), P(2), ...
    kinds: tuple[tuple[str, float], ...]

    def write(self, prompt: str, rng: random.Random) -> str:
        num_errors = rng.choices(range(len(self.error_counts)), weights=self.error_counts)[0]
        return corrupt(solve(prompt), num_errors, dict(self.kinds), rng)


DEMONSTRATOR = Writer("demonstrator", (0.4, 0.3, 0.2, 0.1),
                      (("stutter", 0.25), ("drop", 0.35), ("swap", 0.2), ("substitute", 0.2)))
"""Writes the SFT demonstrations: right 40% of the time, otherwise one to three mistakes."""

STRONG = Writer("strong", (0.7, 0.2, 0.1),
                (("stutter", 0.6), ("drop", 0.1), ("swap", 0.15), ("substitute", 0.15)))
"""An off-policy model better than the SFT policy, whose mistakes are mostly stutters (longer)."""

WEAK = Writer("weak", (0.1, 0.3, 0.3, 0.2, 0.1),
              (("stutter", 0.6), ("drop", 0.1), ("swap", 0.15), ("substitute", 0.15)))
"""An off-policy model worse than the SFT policy, with the same verbose kind of mistakes."""

OTHER_WRITERS = {"strong": STRONG, "weak": WEAK}


@dataclass(frozen=True)
class Label:
    """One annotator decision: chosen/rejected and why."""

    chosen: str
    rejected: str
    length_driven: bool  # the annotator picked the longer response, ignoring quality
    flipped: bool  # the decision was then flipped by label noise


class Annotator:
    """Follows the gold reward, except for a length preference and label noise (both configurable)."""

    def __init__(self, *, noise: float, length_bias: float, rng: random.Random,
                 gold: Callable[[str, str], float] = gold_reward):
        self.noise, self.length_bias, self.rng, self.gold = noise, length_bias, rng, gold

    def label(self, prompt: str, a: str, b: str) -> Label:
        length_driven = len(a) != len(b) and self.rng.random() < self.length_bias
        if length_driven:
            first_wins = len(a) > len(b)
        else:
            ga, gb = self.gold(prompt, a), self.gold(prompt, b)
            first_wins = ga > gb if ga != gb else self.rng.random() < 0.5
        flipped = self.rng.random() < self.noise
        if flipped:
            first_wins = not first_wins
        chosen, rejected = (a, b) if first_wins else (b, a)
        return Label(chosen, rejected, length_driven, flipped)


def build_pairs(prompts: list[str], sft_samples: list[list[str]], *, off_policy: float, noise: float,
                length_bias: float, rng: random.Random, id_prefix: str = "pair",
                gold: Callable[[str, str], float] = gold_reward,
                describe: Callable[[Label], dict] | None = None) -> tuple[list[dict], list[dict]]:
    """Offline pairs (`id`, `prompt`, `chosen`, `rejected`) and their hidden truth, one record each.

    `sft_samples[i]` holds a few SFT-policy samples for `prompts[i]`. With probability `off_policy`
    a pair is (SFT sample, response of the strong or the weak writer, half each); otherwise two
    distinct SFT samples. Prompts whose candidates are all identical give no pair.
    """
    annotator = Annotator(noise=noise, length_bias=length_bias, rng=rng, gold=gold)
    pairs, meta = [], []
    for index, (prompt, samples) in enumerate(zip(prompts, sft_samples)):
        first = samples[0]
        if rng.random() < off_policy:
            other_source = rng.choice(sorted(OTHER_WRITERS))
            writer = OTHER_WRITERS[other_source]
            second = next((r for r in (writer.write(prompt, rng) for _ in range(8)) if r != first), None)
        else:
            other_source = "sft"
            second = next((s for s in samples[1:] if s != first), None)
        if second is None:
            continue
        sources = {first: "sft", second: other_source}
        label = annotator.label(prompt, *((first, second) if rng.random() < 0.5 else (second, first)))
        pair_id = f"{id_prefix}-{index:05d}"
        pairs.append({"id": pair_id, "prompt": prompt, "chosen": label.chosen, "rejected": label.rejected})
        gold_chosen, gold_rejected = gold(prompt, label.chosen), gold(prompt, label.rejected)
        meta.append({
            "id": pair_id, "flipped": label.flipped, "length_driven": label.length_driven,
            "chosen_source": sources[label.chosen], "rejected_source": sources[label.rejected],
            "gold_chosen": gold_chosen, "gold_rejected": gold_rejected,
            "label_agrees_with_gold": gold_chosen > gold_rejected if gold_chosen != gold_rejected else None,
            "len_chosen": len(label.chosen), "len_rejected": len(label.rejected),
            **(describe(label) if describe else {}),
        })
    return pairs, meta

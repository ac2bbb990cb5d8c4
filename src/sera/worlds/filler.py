"""World B of the self-review benchmark: the sorting task, but the demonstrations carry a spurious habit.

Structurally different from the demo's world (:mod:`sera.worlds`) in one way that matters for
self-review: the SFT policy's *most likely* answer is worse than a typical sample of it.

- Task: sort the letters, as in :mod:`sera.worlds.sorting`.
- Habit: ``filler_share`` (default 60%) of the demonstrations end with a filler character
  (``FILLER``, the separator ``=``: in the vocabulary, never part of a correct answer). Greedy
  decoding therefore reproduces the filler, while ~40% of samples are clean.
- Gold reward: the sorting reward of the response without its trailing filler, times
  ``FILLER_PENALTY`` (0.2, a little worse than two mistakes) when a filler is present.
- Offline pairs: as in the demo world (partly off-policy, the other writers never use the filler),
  labelled by the same kind of annotator (label noise, a preference for the longer response --
  which here is often the one with the filler), but judged by this world's gold reward.

`build_filler_world` writes the same files as :func:`sera.worlds.build_world` (plus ``filler`` flags
in ``pairs_meta.jsonl``), so ``sera train`` and the benchmark read both worlds alike. The gold
reward is a ``gold:`` judge spec: ``gold:sera.worlds.filler:gold_reward``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sera.worlds import World, WorldConfig, _build_world
from sera.worlds.preferences import DEMONSTRATOR, build_pairs
from sera.worlds.sorting import SEPARATOR
from sera.worlds.sorting import gold_reward as sorting_gold

FILLER = SEPARATOR
FILLER_PENALTY = 0.2
GOLD_SPEC = "gold:sera.worlds.filler:gold_reward"


def has_filler(response: str) -> bool:
    return response.endswith(FILLER)


def gold_reward(prompt: str, response: str) -> float:
    """Sorting reward of the response without trailing filler, x FILLER_PENALTY if it had any."""
    stripped = response.rstrip(FILLER)
    return sorting_gold(prompt, stripped) * (FILLER_PENALTY if stripped != response else 1.0)


@dataclass(frozen=True)
class FillerWorldConfig(WorldConfig):
    filler_share: float = 0.6  # share of demonstrations that end with the filler


def demonstrate(prompt: str, rng: random.Random, filler_share: float) -> str:
    """The demo world's demonstrator, plus the filler habit."""
    text = DEMONSTRATOR.write(prompt, rng)
    return text + FILLER if rng.random() < filler_share else text


def build_filler_pairs(prompts: list[str], sft_samples: list[list[str]], *, off_policy: float, noise: float,
                       length_bias: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """The demo world's pairs and annotator (:func:`sera.worlds.preferences.build_pairs`), judged by this
    world's gold reward, with the filler flags in the hidden truth."""
    return build_pairs(prompts, sft_samples, off_policy=off_policy, noise=noise, length_bias=length_bias, rng=rng,
                       gold=gold_reward, describe=lambda label: {"filler_chosen": has_filler(label.chosen),
                                                                 "filler_rejected": has_filler(label.rejected)})


def build_filler_world(config: FillerWorldConfig, root: str | Path, *, log=print) -> World:
    """Make world B in `root` (same layout as :func:`sera.worlds.build_world`)."""

    def describe(demonstrations: list[tuple[str, str]], meta: list[dict]) -> dict:
        return {
            "world": "filler",
            "gold": GOLD_SPEC,
            "demonstration_filler": float(np.mean([has_filler(r) for _, r in demonstrations])),
            "pairs_filler_chosen": float(np.mean([m["filler_chosen"] for m in meta])) if meta else None,
            "pairs_filler_rejected": float(np.mean([m["filler_rejected"] for m in meta])) if meta else None,
        }

    return _build_world(config, root, name="filler world",
                        demonstrate=lambda prompt, rng: demonstrate(prompt, rng, config.filler_share),
                        make_pairs=build_filler_pairs, gold=gold_reward, describe=describe, log=log)


__all__ = ["FILLER", "FILLER_PENALTY", "GOLD_SPEC", "FillerWorldConfig", "build_filler_world", "gold_reward",
           "has_filler"]

"""Component 2: preference bootstrapping -- new on-policy pairs from the policy's own samples.

For each prompt, sample N responses, score each with the (ensembled) implicit reward, and pair the
highest-reward response (chosen) with the lowest (rejected). Prompts whose samples are all
identical, or whose rewards tie, give no pair and are counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sera.data import PreferencePair, Text

Labeller = Callable[[list[Text], list[list[Text]]], list[np.ndarray]]
"""Given prompts and their candidate responses, a reward for every candidate (higher = better)."""


@dataclass
class BootstrapResult:
    pairs: list[PreferencePair]
    records: list[dict]
    """One per new pair: prompt, chosen, rejected, their rewards (written to generated.jsonl)."""
    skipped: Counter = field(default_factory=Counter)


def as_response(prompt: Text, text: str) -> Text:
    """A sampled text in the dataset's format: a string, or an assistant message for chat data."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def best_vs_worst(rewards: np.ndarray) -> tuple[int, int] | None:
    """Indices of the highest- and lowest-reward candidates (first on ties), or None if all tie."""
    best, worst = int(np.argmax(rewards)), int(np.argmin(rewards))
    if rewards[best] == rewards[worst]:
        return None
    return best, worst


def make_pairs(prompts: list[tuple[str, Text]], samples: list[list[str]], labeller: Labeller,
               iteration: int) -> BootstrapResult:
    """Turn N samples per prompt into best-vs-worst pairs, labelled by `labeller`."""
    result = BootstrapResult(pairs=[], records=[])
    usable = []
    for (prompt_id, prompt), texts in zip(prompts, samples):
        if len(set(texts)) < 2:
            result.skipped["identical_samples"] += 1
            continue
        usable.append((prompt_id, prompt, [as_response(prompt, t) for t in texts]))
    if not usable:
        return result
    rewards = labeller([p for _, p, _ in usable], [c for _, _, c in usable])
    for (prompt_id, prompt, candidates), candidate_rewards in zip(usable, rewards):
        picked = best_vs_worst(np.asarray(candidate_rewards, dtype=np.float64))
        if picked is None:
            result.skipped["tied_rewards"] += 1
            continue
        best, worst = picked
        pair = PreferencePair(id=f"gen{iteration}:{prompt_id}", prompt=prompt, chosen=candidates[best],
                              rejected=candidates[worst], source="generated")
        result.pairs.append(pair)
        result.records.append({"id": pair.id, "prompt_id": prompt_id, "prompt": prompt, "chosen": pair.chosen,
                               "rejected": pair.rejected, "chosen_reward": float(candidate_rewards[best]),
                               "rejected_reward": float(candidate_rewards[worst]),
                               "rewards": [float(r) for r in candidate_rewards]})
    return result

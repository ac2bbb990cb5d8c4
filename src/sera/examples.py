"""Preference pairs with the token ids that scoring and training share, and how a run splits them.

    dataset -> PreferencePair (sera.data) -> Example (pair + TRL's token ids) -> offline / validation
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sera.data import PreferencePair
from sera.errors import SeraInputError
from sera.tokenization import PairTokenizer, TokenizedPair


@dataclass(frozen=True)
class Example:
    """A preference pair together with the token ids that scoring and training share."""

    pair: PreferencePair
    tokens: TokenizedPair
    label_smoothing: float | None = None
    """SPA's per-pair label smoothing eps (None: the DAA's plain loss)."""

    @property
    def chosen(self) -> tuple[list[int], list[int]]:
        return self.tokens.prompt_ids, self.tokens.chosen_ids

    @property
    def rejected(self) -> tuple[list[int], list[int]]:
        return self.tokens.prompt_ids, self.tokens.rejected_ids


def tokenize(pair_tokenizer: PairTokenizer, pairs: list[PreferencePair], skipped: Counter) -> list[Example]:
    """Each pair with its token ids; a pair whose prompt alone fills `max_length` is skipped and counted."""
    examples = []
    for pair in pairs:
        tokens = pair_tokenizer.pair(pair)
        if tokens is None:
            skipped["prompt_too_long"] += 1
            continue
        examples.append(Example(pair, tokens))
    return examples


def prompt_key(prompt: Any) -> str:
    """A prompt (string or message list) as one hashable, order-stable key."""
    return json.dumps(prompt, sort_keys=True)


def hold_out(examples: list[Example], ratio: float, max_pairs: int, seed: int, source: str
             ) -> tuple[list[Example], list[Example]]:
    """Split off validation pairs by prompt, so no held-out prompt is trained on or sampled from."""
    if ratio == 0:
        return examples, []
    prompts = sorted({prompt_key(e.pair.prompt) for e in examples})
    random.Random(seed).shuffle(prompts)
    wanted = min(max_pairs, max(1, round(ratio * len(examples))))
    held, count = set(), 0
    for prompt in prompts:
        if count >= wanted:
            break
        held.add(prompt)
        count += sum(prompt_key(e.pair.prompt) == prompt for e in examples)
    split = [prompt_key(e.pair.prompt) in held for e in examples]
    train = [e for e, h in zip(examples, split) if not h]
    if not train:
        raise SeraInputError(f"{source}: too few pairs to hold out a validation slice; set --validation-ratio 0")
    return train, [e for e, h in zip(examples, split) if h]


def distinct_prompts(examples: list[Example]) -> list:
    """Each prompt once, in first-seen order."""
    seen, prompts = set(), []
    for e in examples:
        key = prompt_key(e.pair.prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(e.pair.prompt)
    return prompts


def bootstrap_prompts(examples: list[Example], pair_tokenizer: PairTokenizer, limit: int | None, seed: int
                      ) -> tuple[list[tuple[str, Any, list[int]]], int]:
    """Distinct prompts as (id of their first pair, prompt, prompt ids), optionally a seeded subset of `limit`;
    and how many were too long to leave room for a response."""
    seen, prompts, too_long = set(), [], 0
    for example in examples:
        key = prompt_key(example.pair.prompt)
        if key in seen:
            continue
        seen.add(key)
        ids = pair_tokenizer.prompt_ids(example.pair.prompt)
        if len(ids) >= pair_tokenizer.max_length:
            too_long += 1
            continue
        prompts.append((example.pair.id, example.pair.prompt, ids))
    if limit is not None and limit < len(prompts):
        prompts = sorted(random.Random(seed).sample(prompts, limit), key=lambda p: p[0])
    return prompts, too_long

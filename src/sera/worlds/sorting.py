"""The demo's task family: sort a short string of letters, graded by a programmatic gold reward.

A prompt is the unsorted letters followed by ``=`` (for example ``"dbcab="``); the correct answer
is the same letters in alphabetical order (``"abbcd"``). Inputs vary in length, so answers do too,
and a response can be too long (a duplicated letter), too short (a dropped one) or wrong in place.

Gold reward, in [0, 1]: ``max(0, 1 - edit_distance(response, answer) / len(answer))`` — 1 for the
exact answer, partial credit for each letter right, 0 for an answer as far off as an empty one.
"""

from __future__ import annotations

import random

LETTERS = "abcdefgh"
SEPARATOR = "="
ALPHABET = LETTERS + SEPARATOR


def make_prompt(letters: str) -> str:
    return letters + SEPARATOR


def prompt_letters(prompt: str) -> str:
    return prompt[:-len(SEPARATOR)] if prompt.endswith(SEPARATOR) else prompt


def solve(prompt: str) -> str:
    """The correct answer to a prompt."""
    return "".join(sorted(prompt_letters(prompt)))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def gold_reward(prompt: str, response: str) -> float:
    """How correct `response` is for `prompt`, in [0, 1]."""
    answer = solve(prompt)
    if not answer:
        return 1.0 if response == "" else 0.0
    return max(0.0, 1.0 - edit_distance(response, answer) / len(answer))


def sample_prompts(count: int, rng: random.Random, *, min_len: int = 4, max_len: int = 12,
                   exclude: set[str] | None = None) -> list[str]:
    """`count` distinct prompts (none in `exclude`), lengths uniform in [min_len, max_len]."""
    exclude = set(exclude or ())
    prompts: list[str] = []
    seen = set(exclude)
    while len(prompts) < count:
        length = rng.randint(min_len, max_len)
        prompt = make_prompt("".join(rng.choice(LETTERS) for _ in range(length)))
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts

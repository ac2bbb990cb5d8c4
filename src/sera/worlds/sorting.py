"""The demo's task family: sort a short string of letters, graded by a programmatic gold reward.

A prompt is the unsorted letters followed by ``=`` (for example ``"dbcab="``); the correct answer
is the same letters in alphabetical order (``"abbcd"``). Inputs vary in length, so answers do too,
and a response can be too long (a duplicated letter), too short (a dropped one) or wrong in place.

Gold reward, in [0, 1]: ``0.5 ** edit_distance(response, answer)`` — 1 for the exact answer, and
each mistake (a letter inserted, dropped or replaced; a swap of two letters counts as two) halves it.

Imperfect writers (the demonstrators the SFT policy learns from, and the "other models" whose
responses appear in the offline preference pairs) are :func:`corrupt` with their own error profile.
"""

from __future__ import annotations

import random

LETTERS = "abcdefgh"
SEPARATOR = "="
ALPHABET = LETTERS + SEPARATOR


def make_prompt(letters: str) -> str:
    return letters + SEPARATOR


def prompt_letters(prompt: str) -> str:
    return prompt.removesuffix(SEPARATOR)


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
    return 0.5 ** edit_distance(response, solve(prompt))


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


ERROR_KINDS = ("stutter", "drop", "swap", "substitute")
"""stutter: a letter written twice (longer); drop: a letter left out (shorter);
swap: two neighbours exchanged; substitute: a letter replaced by another."""


def corrupt(answer: str, num_errors: int, weights: dict[str, float], rng: random.Random) -> str:
    """`answer` with `num_errors` mistakes, each of a kind drawn with `weights` (see ERROR_KINDS)."""
    text = list(answer)
    kinds = [k for k in ERROR_KINDS if weights.get(k, 0) > 0]
    for _ in range(num_errors):
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        if not text:
            kind = "stutter"
        if kind == "stutter":
            if not text:
                text.append(rng.choice(LETTERS))
            else:
                i = rng.randrange(len(text))
                text.insert(i, text[i])
        elif kind == "drop":
            del text[rng.randrange(len(text))]
        elif kind == "swap" and len(text) >= 2:
            i = rng.randrange(len(text) - 1)
            text[i], text[i + 1] = text[i + 1], text[i]
        else:
            i = rng.randrange(len(text))
            text[i] = rng.choice([c for c in LETTERS if c != text[i]])
    return "".join(text)

"""A verifiable-instruction gold world for real language models (issue 10, in the spirit of IFEval).

Each prompt is a natural-language question followed by one or more constraints whose compliance code
can check ("Do not use any commas.", "Answer in at most 20 words.", ...). The gold reward of a
response is the share of its prompt's constraints it meets, in [0, 1]. The constraints are stated in
fixed sentences, so :func:`gold_reward` reads them back from the prompt text itself: it works as
`sera eval --judge gold:sera.worlds.instructions:gold_reward` and as a bootstrap labeller
(`--bootstrap-labeller judge:gold:sera.worlds.instructions:gold_reward`) with no side table.

What the gold reward does *not* measure: whether the answer is helpful or even on topic. A response
of fewer than :data:`MIN_WORDS` words meets nothing, so an empty or one-word reply cannot collect the
"no commas" / "lowercase" points for free.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

MIN_WORDS = 3
"""Responses shorter than this (in words) score 0: a non-answer does not comply with anything."""


@dataclass(frozen=True)
class ConstraintKind:
    """One kind of verifiable constraint: how it reads in a prompt and how compliance is checked."""

    name: str
    template: str  # the sentence in the prompt; `{arg}` marks the argument, if any
    arguments: tuple[str, ...]  # the values `{arg}` takes ("" for none)
    check: Callable[[str, str], bool]  # (argument, response) -> met?

    def render(self, argument: str) -> str:
        return self.template.replace("{arg}", argument)

    @property
    def pattern(self) -> re.Pattern:
        """Matches the rendered sentence and captures the argument."""
        return re.compile(re.escape(self.template).replace(re.escape("{arg}"), "(.+?)"))


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9'’-]+", text)


def _first_word(text: str) -> str:
    words = _words(text)
    return words[0].lower() if words else ""


KINDS: tuple[ConstraintKind, ...] = (
    ConstraintKind("no_commas", "Do not use any commas.", ("",), lambda _, r: "," not in r),
    ConstraintKind("max_words", "Answer in at most {arg} words.", ("15", "25"),
                   lambda n, r: len(_words(r)) <= int(n)),
    ConstraintKind("keyword", 'Include the word "{arg}".', ("you", "help", "time", "important", "because"),
                   lambda w, r: re.search(rf"\b{re.escape(w)}\b", r, re.IGNORECASE) is not None),
    ConstraintKind("first_word", 'Start your answer with the word "{arg}".', ("Yes", "Sure", "Well", "First", "Okay"),
                   lambda w, r: _first_word(r) == w.lower()),
    ConstraintKind("no_digits", "Do not use any digits.", ("",), lambda _, r: re.search(r"[0-9]", r) is None),
    ConstraintKind("exclamation", "Use at least one exclamation mark.", ("",), lambda _, r: "!" in r),
    ConstraintKind("lowercase", "Write your whole answer in lowercase letters.", ("",),
                   lambda _, r: r == r.lower() and any(c.isalpha() for c in r)),
)
"""Chosen so that SmolLM2-135M-Instruct meets each sometimes but not always (measured on 24 Vicuna prompts,
40 new tokens, temperature 1: no commas 25%, at most 20 words 35%, first word 4%, no digits 83%,
lowercase 0%): the kinds a DAA can learn from its own samples and one (lowercase) it rarely can."""
KIND_BY_NAME = {kind.name: kind for kind in KINDS}


def sample_constraints(rng: random.Random, count: int = 2) -> list[tuple[str, str]]:
    """`count` constraints of distinct kinds, as (kind name, argument)."""
    kinds = rng.sample(KINDS, count)
    return [(kind.name, rng.choice(kind.arguments)) for kind in kinds]


def make_prompt(question: str, constraints: list[tuple[str, str]]) -> str:
    """The question, a blank line, then the constraint sentences."""
    sentences = " ".join(KIND_BY_NAME[name].render(argument) for name, argument in constraints)
    return f"{question.strip()}\n\n{sentences}"


def parse_constraints(prompt: str) -> list[tuple[str, str]]:
    """The (kind, argument) pairs stated in a prompt made by :func:`make_prompt` (or any text containing them)."""
    found = []
    for kind in KINDS:
        for match in kind.pattern.finditer(prompt):
            found.append((kind.name, match.group(1) if kind.pattern.groups else ""))
    return found


def constraint_results(prompt, response) -> dict[str, bool]:
    """Which of the prompt's constraints `response` meets, keyed by kind name."""
    text, answer = _text(prompt), _text(response)
    constraints = parse_constraints(text)
    if not constraints:
        raise ValueError("the prompt states no verifiable constraint (not a prompt of this world)")
    too_short = len(_words(answer)) < MIN_WORDS
    return {name: (not too_short) and KIND_BY_NAME[name].check(argument, answer) for name, argument in constraints}


def gold_reward(prompt, response) -> float:
    """Share of the prompt's constraints the response meets, in [0, 1] (0 for a reply under MIN_WORDS words).

    `prompt` and `response` may be strings or chat message lists (as `sera train` and `sera eval` pass them).
    """
    results = constraint_results(prompt, response)
    return sum(results.values()) / len(results)


def _text(value) -> str:
    """Plain text of a string, a chat message, or a list of messages (all contents joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("content", ""))
    if isinstance(value, (list, tuple)):
        return "\n".join(_text(item) for item in value)
    raise TypeError(f"expected text or chat messages, got {type(value).__name__}")

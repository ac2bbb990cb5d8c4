"""The verifiable-instruction world's gold reward (issue 10): constraints read back from the prompt, checked by code."""

import random

import pytest

from sera.eval.judges import build_judge
from sera.worlds.instructions import (
    KINDS,
    MIN_WORDS,
    constraint_results,
    gold_reward,
    make_prompt,
    parse_constraints,
    sample_constraints,
)


def test_every_kind_round_trips_through_the_prompt_text():
    for kind in KINDS:
        for argument in kind.arguments:
            prompt = make_prompt("What is a cat?", [(kind.name, argument)])
            assert parse_constraints(prompt) == [(kind.name, argument)]


@pytest.mark.parametrize("constraint, met, not_met", [
    (("no_commas", ""), "cats are small and soft", "cats are small, soft"),
    (("max_words", "15"), "cats are small furry animals", " ".join(["word"] * 16)),
    (("keyword", "help"), "I can Help with cats today", "I can helpful cats today"),
    (("first_word", "Sure"), "Sure! Cats are mammals.", "Cats are sure mammals."),
    (("no_digits", ""), "cats have four legs", "cats have 4 legs"),
    (("exclamation", ""), "cats are great pets!", "cats are great pets."),
    (("lowercase", ""), "cats are great pets", "Cats are great pets"),
])
def test_each_constraint_is_checked(constraint, met, not_met):
    prompt = make_prompt("Tell me about cats.", [constraint])
    assert gold_reward(prompt, met) == 1.0
    assert gold_reward(prompt, not_met) == 0.0


def test_gold_is_the_share_met_and_accepts_chat_messages():
    prompt = make_prompt("Tell me about cats.", [("no_commas", ""), ("keyword", "you")])
    assert gold_reward(prompt, "cats love you a lot") == 1.0
    assert gold_reward(prompt, "cats, dogs and you") == 0.5
    messages = [{"role": "user", "content": prompt}]
    assert gold_reward(messages, [{"role": "assistant", "content": "cats, dogs and you"}]) == 0.5
    assert constraint_results(prompt, "cats, dogs and you") == {"no_commas": False, "keyword": True}


def test_a_non_answer_meets_nothing():
    prompt = make_prompt("Tell me about cats.", [("no_commas", ""), ("no_digits", "")])
    assert gold_reward(prompt, " ".join(["ok"] * (MIN_WORDS - 1))) == 0.0
    assert gold_reward(prompt, "") == 0.0


def test_a_prompt_without_constraints_is_an_error_not_a_silent_zero():
    with pytest.raises(ValueError, match="no verifiable constraint"):
        gold_reward("What is a cat?", "a small animal")


def test_sampled_constraints_are_distinct_kinds_and_usable_as_a_sera_eval_judge():
    rng = random.Random(0)
    prompts = [make_prompt("Q?", sample_constraints(rng)) for _ in range(50)]
    assert all(len({name for name, _ in parse_constraints(p)}) == 2 for p in prompts)
    judge = build_judge("gold:sera.worlds.instructions:gold_reward")
    assert judge.score([prompts[0]], ["x"]) == [0.0]

"""The verifiable-instruction world (issue 10): the gold reward (constraints read back from the prompt, checked by
code) and the benchmark's pair building and scoring (benchmarks/instruction_world.py)."""

import random
from types import SimpleNamespace

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


# ------------------------------------------------------------------------ benchmarks/instruction_world.py



@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("instruction_world.py")


def test_pairs_join_responses_of_different_gold_and_keep_the_truth_aside(bench):
    prompt = make_prompt("Tell me about cats.", [("no_commas", ""), ("no_digits", "")])
    prompts = [{"id": "train-0", "prompt": prompt}, {"id": "train-1", "prompt": prompt}]
    samples = {  # prompt 0: the policy's second sample and the other source differ in gold; prompt 1: all tie
        "policy": [["cats are nice pets", "cats, dogs, 3 birds"], ["cats are nice", "cats are soft"]],
        "other": [["cats are great, really", "cats purr a lot"], ["cats sleep a lot", "cats eat fish"]],
    }
    args = SimpleNamespace(noise=0.0, length_bias=0.0, off_policy=0.0)
    pairs, truth, offline = bench.annotate(prompts, samples, args, random.Random(0))
    assert [p["id"] for p in pairs] == ["train-0"]  # the all-tie prompt gives no pair
    pair, fact = pairs[0], truth[0]
    assert pair["chosen"] == [{"role": "assistant", "content": "cats are nice pets"}]  # gold 1 beats gold 0
    assert pair["rejected"] == [{"role": "assistant", "content": "cats, dogs, 3 birds"}]
    assert pair["prompt"] == [{"role": "user", "content": prompt}]
    assert set(pair) == {"id", "prompt", "chosen", "rejected"}  # nothing of the truth leaks into training data
    assert fact["label_agrees_with_gold"] and not fact["flipped"] and fact["rejected_source"] == "policy"
    assert len(offline) == 2


def test_noise_flips_labels_and_is_recorded(bench):
    prompt = make_prompt("Tell me about cats.", [("no_commas", ""), ("no_digits", "")])
    prompts = [{"id": f"train-{i}", "prompt": prompt} for i in range(200)]
    samples = {"policy": [["cats are nice pets", "cats, dogs, 3 birds"]] * 200,
               "other": [["cats, are, 3", "cats purr a lot"]] * 200}
    args = SimpleNamespace(noise=0.3, length_bias=0.0, off_policy=0.5)
    pairs, truth, _ = bench.annotate(prompts, samples, args, random.Random(1))
    flipped = [t["flipped"] for t in truth]
    assert 0.2 < sum(flipped) / len(flipped) < 0.4
    assert all(t["label_agrees_with_gold"] != t["flipped"] for t in truth)


def test_scores_per_constraint_kind(bench):
    prompt = make_prompt("Tell me about cats.", [("no_commas", ""), ("keyword", "you")])
    scores = bench.score_outputs([{"prompt": prompt, "output": "cats love you a lot"},
                                  {"prompt": prompt, "output": "cats, dogs and birds"}])
    assert scores["mean_gold"] == 0.5
    assert scores["compliance"] == {"keyword": 0.5, "no_commas": 0.5}

"""World C (column addition with carries, the preregistered world): gold reward, writers, its own prompt stream,
and a tiny build with the files `sera train` and the benchmarks read. Fast (a few SFT steps)."""

from __future__ import annotations

import json
import random

import pytest

from sera.worlds.carry import (
    DEMONSTRATOR,
    CarryWorldConfig,
    build_carry_world,
    carry_columns,
    corrupt,
    gold_reward,
    load_carry_world,
    make_prompt,
    operands,
    sample_prompts,
    solve,
    stream_seed,
)


def test_prompts_and_answers_are_least_significant_digit_first():
    assert make_prompt(47, 85) == "740+580="
    assert operands("740+580=") == (47, 85)
    assert solve("740+580=") == "2310"          # 047 + 085 = 0132
    assert solve(make_prompt(999, 1)) == "0001"  # 1000
    assert solve(make_prompt(0, 0)) == "0000"
    for a, b in ((123, 456), (5, 999), (70, 30)):
        assert int(solve(make_prompt(a, b))[::-1]) == a + b


@pytest.mark.parametrize("response, expected", [
    ("2310", 1.0),      # right
    ("2300", 0.5),      # the carry into the hundreds forgotten
    ("231", 0.5),       # last digit dropped
    ("23100", 0.5),     # a digit repeated
    ("1320", 0.25),     # written most-significant first (0132 -> 1320 here: two digits wrong)
    ("", 0.0625),
])
def test_gold_reward_hand_worked(response, expected):
    assert gold_reward("740+580=", response) == pytest.approx(expected)


def test_carry_columns_and_the_forgotten_carry():
    assert carry_columns("740+580=") == [1, 2]  # 7+8 carries into the tens, 4+5+1 into the hundreds
    assert carry_columns(make_prompt(11, 22)) == []
    rng = random.Random(0)
    for _ in range(20):
        wrong = corrupt("740+580=", 1, {"carry": 1.0}, rng)
        assert wrong in {"2210", "2300"} and gold_reward("740+580=", wrong) == 0.5
    # no carry anywhere: the carry mistake becomes a replaced digit
    assert gold_reward(make_prompt(11, 22), corrupt(make_prompt(11, 22), 1, {"carry": 1.0}, rng)) == 0.5


def test_prompt_stream_is_its_own():
    """Seeded by a string, not Random(seed): world A's stream with the same seed draws other numbers."""
    assert stream_seed(3) == "sera.worlds.carry:3"
    first = sample_prompts(30, random.Random(stream_seed(3)))
    assert first == sample_prompts(30, random.Random(stream_seed(3)))  # reproducible
    assert first != sample_prompts(30, random.Random(3))
    assert len(set(first)) == 30 and all(len(p) == 8 and p[3] == "+" and p.endswith("=") for p in first)
    held_out = set(first[:10])
    assert not held_out & set(sample_prompts(50, random.Random(1), exclude=held_out))


def test_demonstrator_is_right_about_forty_percent_of_the_time():
    rng = random.Random(5)
    prompts = sample_prompts(2000, rng)
    right = sum(DEMONSTRATOR.write(p, rng) == solve(p) for p in prompts) / len(prompts)
    assert 0.35 < right < 0.5


def test_tiny_build_writes_what_training_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("SERA_NO_PROGRESS", "1")
    config = CarryWorldConfig(seed=7, sft_steps=2, sft_demonstrations=16, pair_prompts=12, validation_prompts=4,
                              test_prompts=5, sft_batch_size=8)
    world = build_carry_world(config, tmp_path / "c", log=lambda *_: None)
    info = json.loads((tmp_path / "c" / "world.json").read_text())
    assert info["world"] == "carry" and info["stream"] == "sera.worlds.carry:7"
    assert info["gold"] == "gold:sera.worlds.carry:gold_reward"
    assert (tmp_path / "c" / "sft" / "config.json").exists()
    pairs = [json.loads(line) for line in (tmp_path / "c" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and set(pairs[0]) == {"id", "prompt", "chosen", "rejected"}
    held_out = set(world.validation_prompts) | set(world.test_prompts)
    assert not held_out & {p["prompt"] for p in pairs}
    again = load_carry_world(tmp_path / "c")
    assert again.test_prompts == world.test_prompts and again.config == config

"""The demo world: gold reward on hand-worked examples, the writers, the annotator's rates, the pairs."""

from __future__ import annotations

import json
import random

import pytest

from sera.errors import SeraInputError
from sera.worlds import WorldConfig, pairs_summary
from sera.worlds.preferences import STRONG, WEAK, Annotator, build_pairs
from sera.worlds.sorting import corrupt, edit_distance, gold_reward, make_prompt, sample_prompts, solve


@pytest.mark.parametrize("prompt, response, expected", [
    ("dcba=", "abcd", 1.0),        # exact
    ("dcba=", "abccd", 0.5),       # one letter stuttered (inserted)
    ("dcba=", "abd", 0.5),         # one letter dropped
    ("dcba=", "abce", 0.5),        # one letter replaced
    ("dcba=", "bacd", 0.25),       # two neighbours swapped = two edits
    ("dcba=", "", 0.0625),         # nothing: four insertions away
    ("hhaa=", "aahh", 1.0),        # repeated letters keep their counts
    ("hhaa=", "ahh", 0.5),
])
def test_gold_reward_hand_worked(prompt, response, expected):
    assert gold_reward(prompt, response) == pytest.approx(expected)


def test_task_basics():
    assert make_prompt("cab") == "cab="
    assert solve("cab=") == "abc"
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "abc") == 0
    prompts = sample_prompts(50, random.Random(0), min_len=4, max_len=6, exclude={"abcd="})
    assert len(set(prompts)) == 50 and "abcd=" not in prompts
    assert all(p.endswith("=") and 4 <= len(p) - 1 <= 6 for p in prompts)


def test_corrupt_error_kinds():
    rng = random.Random(0)
    assert corrupt("abcd", 0, {"stutter": 1}, rng) == "abcd"
    stuttered = corrupt("abcd", 1, {"stutter": 1}, rng)
    assert len(stuttered) == 5 and gold_reward("dcba=", stuttered) == 0.5
    assert len(corrupt("abcd", 1, {"drop": 1}, rng)) == 3
    swapped = corrupt("abcd", 1, {"swap": 1}, rng)
    assert sorted(swapped) == list("abcd") and swapped != "abcd"


def test_other_writers_are_verbose_and_of_different_quality():
    rng = random.Random(1)
    prompts = sample_prompts(2000, rng)
    strong = [STRONG.write(p, rng) for p in prompts]
    weak = [WEAK.write(p, rng) for p in prompts]
    mean = lambda xs: sum(xs) / len(xs)
    assert mean([gold_reward(p, r) for p, r in zip(prompts, strong)]) > 0.75
    assert mean([gold_reward(p, r) for p, r in zip(prompts, weak)]) < 0.45
    # their mistakes are mostly stutters: they run longer than the answer on average
    assert mean([len(r) - len(solve(p)) for p, r in zip(prompts, weak)]) > 0.5


def test_annotator_flip_rate_within_tolerance():
    rng = random.Random(2)
    annotator = Annotator(noise=0.3, length_bias=0.0, rng=rng)
    n, wrong, flipped = 20000, 0, 0
    for _ in range(n):
        label = annotator.label("dcba=", "abcd", "abcdd")  # gold 1.0 vs 0.5
        wrong += label.chosen == "abcdd"
        flipped += label.flipped
        assert not label.length_driven
    assert wrong == flipped
    assert abs(flipped / n - 0.3) < 0.015


def test_annotator_length_bias_rate_within_tolerance():
    rng = random.Random(3)
    annotator = Annotator(noise=0.0, length_bias=0.2, rng=rng)
    n, longer, driven = 20000, 0, 0
    for _ in range(n):
        label = annotator.label("dcba=", "abcd", "abbccd")  # the longer one is worse by gold
        longer += label.chosen == "abbccd"
        driven += label.length_driven
        assert not label.flipped
    assert longer == driven
    assert abs(driven / n - 0.2) < 0.015
    # equal lengths: never length-driven
    assert not any(annotator.label("dcba=", "abcd", "abce").length_driven for _ in range(500))


def test_build_pairs_keeps_truth_outside_training_rows():
    rng = random.Random(4)
    prompts = sample_prompts(3000, rng)
    # fake SFT samples: the answer, or one with a dropped letter
    samples = [[solve(p), corrupt(solve(p), 1, {"drop": 1}, rng), solve(p)] for p in prompts]
    pairs, meta = build_pairs(prompts, samples, off_policy=0.5, noise=0.25, length_bias=0.1, rng=rng)
    assert len(pairs) == len(meta) and len({p["id"] for p in pairs}) == len(pairs)
    assert all(set(p) == {"id", "prompt", "chosen", "rejected"} for p in pairs)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    summary = pairs_summary(meta)
    assert abs(summary["flipped"] - 0.25) < 0.03
    off = sum(v for k, v in summary["sources"].items() if k != "sft+sft") / len(meta)
    assert abs(off - 0.5) < 0.04
    by_id = {p["id"]: p for p in pairs}
    for m in meta:
        pair = by_id[m["id"]]
        assert m["gold_chosen"] == gold_reward(pair["prompt"], pair["chosen"])
        assert m["len_chosen"] == len(pair["chosen"])
        if m["label_agrees_with_gold"] is not None and not m["length_driven"]:
            assert m["label_agrees_with_gold"] == (not m["flipped"])


def test_world_config_validation():
    with pytest.raises(SeraInputError, match="noise"):
        WorldConfig(noise=1.5).validate()
    with pytest.raises(SeraInputError, match="length-bias"):
        WorldConfig(length_bias=-0.1).validate()


def test_sft_tokenization_matches_sera_train():
    from sera.data import PreferencePair
    from sera.models import build_char_tokenizer
    from sera.tokenization import PairTokenizer
    from sera.worlds.sft import encode_example, prompt_ids
    from sera.worlds.sorting import ALPHABET

    tokenizer = build_char_tokenizer(ALPHABET)
    ids, labels = encode_example(tokenizer, "cab=", "abc")
    tokens = PairTokenizer(tokenizer, 64).pair(PreferencePair("x", "cab=", "abc", "ab"))
    assert ids == tokens.prompt_ids + tokens.chosen_ids
    assert prompt_ids(tokenizer, "cab=") == tokens.prompt_ids
    assert labels[:len(tokens.prompt_ids)] == [-100] * len(tokens.prompt_ids)
    assert labels[-1] == tokenizer.eos_token_id


def test_label_options_change_only_the_labels(tmp_path):
    """A noise-sweep world reuses its seed's SFT policy: same prompts and responses, only the labels differ."""
    import os

    from sera.worlds import World, build_world

    os.environ.setdefault("SERA_NO_PROGRESS", "1")
    sizes = dict(sft_steps=5, sft_demonstrations=32, pair_prompts=60, validation_prompts=4, test_prompts=4,
                 hidden_size=16)
    clean = build_world(WorldConfig(seed=3, noise=0.0, **sizes), tmp_path / "clean", log=lambda _: None)
    noisy = build_world(WorldConfig(seed=3, noise=0.5, **sizes), tmp_path / "noisy", reuse_sft=clean.root,
                        log=lambda _: None)
    assert (clean.sft_dir / "model.safetensors").read_bytes() == (noisy.sft_dir / "model.safetensors").read_bytes()
    assert World.load(noisy.root).test_prompts == clean.test_prompts
    unordered = lambda w: {(p["id"], p["prompt"], frozenset((p["chosen"], p["rejected"])))
                           for p in map(json.loads, w.pairs_path.read_text().splitlines())}
    assert unordered(clean) == unordered(noisy)
    assert not any(m["flipped"] for m in clean.meta().values())
    assert any(m["flipped"] for m in noisy.meta().values())

"""SeRA's three components on hand-built numbers: selection, bootstrapping, the reward ensemble."""

from collections import Counter

import numpy as np
import pytest

from sera.bootstrap import best_vs_worst, make_pairs
from sera.daa import get_daa
from sera.rewards import ImplicitReward, ensemble, margins
from sera.selection import select_top_k, selection_size


@pytest.mark.parametrize("seed", range(5))
def test_every_selected_margin_is_at_least_every_dropped_margin(seed):
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=200), 1)  # rounding makes ties common
    ids = [f"id{i:03d}" for i in range(200)]
    keep = select_top_k(ids, values, selection_size(200, 0.7))
    assert keep.sum() == 140
    assert values[keep].min() >= values[~keep].max()


def test_ties_are_broken_by_id_deterministically():
    ids = ["c", "a", "d", "b"]
    keep = select_top_k(ids, np.zeros(4), 2)
    assert [i for i, k in zip(ids, keep) if k] == ["a", "b"]
    assert (select_top_k(ids, np.zeros(4), 2) == keep).all()


def test_selection_size_proportion_and_count():
    assert selection_size(10, 0.7) == 7
    assert selection_size(11, 0.7) == 8  # ceil
    assert selection_size(3, 0.1) == 1
    assert selection_size(10, 0.7, count=4) == 4
    assert selection_size(10, 0.7, count=40) == 10


def test_best_vs_worst_picks_argmax_and_argmin():
    assert best_vs_worst(np.array([0.1, 0.9, -0.3, 0.2])) == (1, 2)
    assert best_vs_worst(np.array([0.5, 0.5])) is None


def test_make_pairs_labels_by_reward_and_counts_skips():
    prompts = [("a", "p1"), ("b", "p2"), ("c", "p3")]
    samples = [["x", "yy", "zzz"], ["same", "same", "same"], ["u", "v", "w"]]

    def labeller(prompts, candidates):  # longer is better for p1; everything ties for p3
        return [np.array([len(c) for c in cands]) if p == "p1" else np.zeros(len(cands))
                for p, cands in zip(prompts, candidates)]

    result = make_pairs(prompts, samples, labeller, iteration=2)
    assert [(p.id, p.chosen, p.rejected, p.source) for p in result.pairs] == [("gen2:a", "zzz", "x", "generated")]
    assert result.skipped == Counter(identical_samples=1, tied_rewards=1)
    assert result.records[0]["chosen_reward"] == 3 and result.records[0]["rejected_reward"] == 1


def test_chat_prompts_get_assistant_message_responses():
    result = make_pairs([("a", [{"role": "user", "content": "q"}])], [["x", "yy"]],
                        lambda p, c: [np.array([0.0, 1.0])], iteration=3)
    assert result.pairs[0].chosen == [{"role": "assistant", "content": "yy"}]


def test_ensemble_arithmetic():
    np.testing.assert_allclose(ensemble(np.array([1.0, -2.0]), np.array([3.0, 0.0]), 0.3), [1.6, -1.4])
    np.testing.assert_allclose(margins(np.array([1.0]), np.array([0.25])), [0.75])


class FakeBank:
    """Log-probs by model index, for sequences named by their single completion token."""

    def __init__(self, table):
        self.table = table

    def logps(self, index, sequences):
        return np.array([self.table[index][c[0]] for _, c in sequences], dtype=float)


def test_ensembled_reward_blends_current_and_previous_iterate():
    bank = FakeBank({0: {7: -10.0}, 1: {7: -8.0}, 2: {7: -5.0}})
    reward = ImplicitReward(get_daa("dpo"), beta=0.5, bank=bank, reference="sft")
    seq = [([1], [7])]
    assert reward.of_iterate(0, seq)[0] == 0.0                    # SFT against itself
    assert reward.of_iterate(2, seq)[0] == pytest.approx(2.5)     # 0.5 * (-5 - -10)
    assert reward.ensembled(2, seq, 0.3)[0] == pytest.approx(0.7 * 2.5 + 0.3 * 1.0)
    assert reward.ensembled(2, seq, 0.0)[0] == pytest.approx(2.5)


def test_previous_reference_measures_each_iterate_against_the_one_before():
    bank = FakeBank({0: {7: -10.0}, 1: {7: -8.0}, 2: {7: -5.0}})
    reward = ImplicitReward(get_daa("dpo"), beta=1.0, bank=bank, reference="previous")
    assert reward.of_iterate(2, [([1], [7])])[0] == pytest.approx(3.0)
    assert reward.reference_index(3) == 2 and reward.reference_index(1) == 0

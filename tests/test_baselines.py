"""The baselines' decisions on hand-built numbers: Curri-DPO's pairs and curriculum, SPA's labels and smoothing,
and the per-pair label-smoothed DPO loss against TRL's."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sera.baselines import curri_dpo, spa
from sera.data import PreferencePair
from sera.errors import SeraInputError


def rated(pair_id, prompt, chosen, chosen_rating, rejected_rating):
    return curri_dpo.RatedPair(id=pair_id, prompt=prompt, chosen=chosen, gap=chosen_rating - rejected_rating,
                               chosen_rating=chosen_rating)


# Two prompts, every ranked pair of their rated responses (as ultrafeedback_pairs="all" yields them).
# Prompt a: A=9, B=7, C=4, D=2. Prompt b: E=5, F=5 (tied for best), G=3, H=1.
RATINGS = {"a": {"A": 9, "B": 7, "C": 4, "D": 2}, "b": {"E": 5, "F": 5, "G": 3, "H": 1}}


def all_ranked_pairs():
    pairs = []
    for prompt, responses in RATINGS.items():
        for chosen, rc in responses.items():
            for rejected, rr in responses.items():
                if rc > rr:
                    pairs.append(rated(f"{prompt}:{chosen}>{rejected}", prompt, chosen, rc, rr))
    return pairs


def test_best_vs_each_other_keeps_the_best_responses_pairs_only():
    kept = curri_dpo.best_vs_each_other(all_ranked_pairs())
    assert sorted(p.id for p in kept) == ["a:A>B", "a:A>C", "a:A>D", "b:E>G", "b:E>H"]  # F ties E: not paired


def test_per_prompt_curriculum_goes_from_the_largest_gap_to_the_smallest():
    kept = curri_dpo.best_vs_each_other(all_ranked_pairs())
    order = curri_dpo.curriculum_order(kept, "per-prompt")
    assert [(c.pair.id, c.rank) for c in order] == [("a:A>D", 0), ("b:E>H", 0), ("a:A>C", 1), ("b:E>G", 1),
                                                    ("a:A>B", 2)]
    stages = curri_dpo.curriculum_stages(kept, 3, "per-prompt")
    assert [[c.pair.id for c in stage] for stage in stages] == [["a:A>D", "b:E>H"], ["a:A>C", "b:E>G"], ["a:A>B"]]
    for prompt in ("a", "b"):  # within a prompt, each stage's pair is easier (larger gap) than the next's
        gaps = [c.pair.gap for stage in stages for c in stage if c.pair.prompt == prompt]
        assert gaps == sorted(gaps, reverse=True)

    two = curri_dpo.curriculum_stages(kept, 2, "per-prompt")  # 3 ranks in 2 stages: ranks 0-1, then rank 2
    assert [[c.rank for c in stage] for stage in two] == [[0, 0, 1, 1], [2]]
    five = curri_dpo.curriculum_stages(kept, 5, "per-prompt")  # fewer ranks than stages: one pair each, in order
    assert [c.pair.id for stage in five for c in stage] == [c.pair.id for c in order]


def test_global_curriculum_sorts_every_pair_by_gap():
    kept = curri_dpo.best_vs_each_other(all_ranked_pairs())
    order = curri_dpo.curriculum_order(kept, "global")
    assert [c.pair.id for c in order] == ["a:A>D", "a:A>C", "b:E>H", "a:A>B", "b:E>G"]  # gaps 7, 5, 4, 2, 2
    stages = curri_dpo.curriculum_stages(kept, 2, "global")
    assert [len(s) for s in stages] == [3, 2]
    with pytest.raises(SeraInputError, match="cannot fill"):
        curri_dpo.curriculum_stages(kept, 6, "global")


def test_rated_pairs_read_the_rating_columns_and_refuse_unrated_data():
    pairs = [PreferencePair("p:0>1", "x", "good", "bad"), PreferencePair("q", "y", "fine", "worse")]
    meta = {"p:0>1": {"chosen_rating": 4.5, "rejected_rating": 2.0, "rating_gap": 2.5}, "q": {"rating_gap": 1.0}}
    result = curri_dpo.rated_pairs(pairs, meta)
    assert [(r.gap, r.chosen_rating) for r in result] == [(2.5, 4.5), (1.0, None)]
    assert curri_dpo.best_vs_each_other(result) == result  # a gap alone: kept (the best cannot be told)
    with pytest.raises(SeraInputError, match="no rating"):
        curri_dpo.rated_pairs(pairs, {})


def test_spa_labels_from_hand_built_log_probs():
    beta = 0.5
    policy = [np.array([-10.0, -12.0, -9.0]), np.array([-5.0, -5.0]), np.array([-20.0, -20.2])]
    previous = [np.array([-11.0, -11.0, -11.0]), np.array([-6.0, -6.0]), np.array([-20.0, -20.0])]
    rewards = [spa.dpo_rewards(p, r, beta) for p, r in zip(policy, previous)]
    np.testing.assert_allclose(rewards[0], [0.5, -0.5, 1.0])
    labels = spa.label(rewards, 0.2, threshold=0.6)
    first, tied, third = labels
    assert (first.chosen, first.rejected) == (2, 1) and first.margin == pytest.approx(1.5)
    assert first.confidence == pytest.approx(1 / (1 + math.exp(-1.5))) and first.label_smoothing == 0.0
    assert tied is None  # equal rewards: no label
    assert (third.chosen, third.rejected) == (0, 1) and third.margin == pytest.approx(0.1)
    assert third.confidence == pytest.approx(1 / (1 + math.exp(-0.1)))  # 0.525 < 0.6: softened
    assert third.label_smoothing == 0.2

    lowest = spa.label(rewards, 0.1, lowest=0.5)  # ceil(0.5 * 2) = 1 pair: the least confident
    assert [l.label_smoothing for l in lowest if l] == [0.0, 0.1]
    assert [l.label_smoothing for l in spa.label(rewards, 0.1, lowest=0.5, threshold=0.9) if l] == [0.1, 0.1]


def test_spa_smoothing_and_prompt_split():
    np.testing.assert_allclose(spa.confidence([0.0, 100.0, -100.0]), [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(spa.smoothing([0.5, 0.7, 0.55], 0.3, threshold=0.6), [0.3, 0.0, 0.3])
    np.testing.assert_array_equal(spa.smoothing([0.6, 0.7, 0.55, 0.9], 0.3, lowest=0.25), [0.0, 0.0, 0.3, 0.0])
    np.testing.assert_array_equal(spa.smoothing([0.6, 0.7], 0.3, lowest=0.0), [0.0, 0.0])
    prompts = [f"q{i}" for i in range(10)] + ["q0"]
    seed, shares = spa.split_prompts(prompts, seed_ratio=0.2, iterations=3, seed=1)
    assert len(seed) == 2 and [len(s) for s in shares] == [4, 4]
    assert seed.isdisjoint(shares[0] | shares[1]) and shares[0].isdisjoint(shares[1])
    assert seed | shares[0] | shares[1] == {spa.prompt_key(p) for p in prompts}
    assert spa.split_prompts(prompts, 0.2, 3, seed=1) == (seed, shares)  # seeded


# -- the per-pair label-smoothed DPO loss -----------------------------------------------------------

@pytest.fixture(scope="module")
def loss_setup(tokenizer, tmp_path_factory):
    from tests.conftest import make_pairs
    from tests.devices import trainer_device
    from sera.config import TrainConfig
    from sera.daa import get_daa
    from sera.models import build_tiny_llama
    from sera.scoring import sequence_logps
    from sera.tokenization import PairTokenizer

    # on the device TRL's trainer will move it to (cuda when a GPU is visible), so the log-probs read here are
    # computed where the trainer computes its loss
    model = build_tiny_llama(tokenizer, seed=3).to(trainer_device())
    model.eval()
    pair_tokenizer = PairTokenizer(tokenizer, 64)
    tokens = [pair_tokenizer.pair(PreferencePair(r["id"], r["prompt"], r["chosen"], r["rejected"]))
              for r in make_pairs(4, seed=5)]
    rows = [{"prompt_ids": t.prompt_ids, "chosen_ids": t.chosen_ids, "rejected_ids": t.rejected_ids,
             "ref_chosen_logps": -30.0 - i, "ref_rejected_logps": -25.0 + i} for i, t in enumerate(tokens)]
    config = TrainConfig(model="m", dataset="d", output_dir="o", beta=0.3, batch_size=4, grad_accum=1)
    args_dir = tmp_path_factory.mktemp("trainer")
    policy_chosen = sequence_logps(model, [(t.prompt_ids, t.chosen_ids) for t in tokens])
    policy_rejected = sequence_logps(model, [(t.prompt_ids, t.rejected_ids) for t in tokens])
    return model, tokenizer, rows, config, get_daa("dpo"), args_dir, policy_chosen, policy_rejected


def _loss(trainer_class, model, tokenizer, rows, config, daa, args_dir):
    from datasets import Dataset

    from sera.training import dpo_config

    trainer = trainer_class(model=model, args=dpo_config(config, daa, 1, str(args_dir)),
                            train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert next(model.parameters()).device.type == trainer.args.device.type
    batch = trainer._prepare_inputs(trainer.data_collator(rows))  # onto the trainer's device, as in training
    with torch.no_grad():
        return float(trainer.compute_loss(model, batch))  # the public entry point, where the smoothing term is added


def test_label_smoothing_zero_is_trls_loss_exactly(loss_setup):
    from sera.training import LabelSmoothedDPOTrainer, SeraDPOTrainer

    model, tokenizer, rows, config, daa, args_dir, _, _ = loss_setup
    plain = _loss(SeraDPOTrainer, model, tokenizer, rows, config, daa, args_dir)
    smoothed = _loss(LabelSmoothedDPOTrainer, model, tokenizer, [{**r, "label_smoothing": 0.0} for r in rows],
                     config, daa, args_dir)
    if next(model.parameters()).device.type == "cpu":
        assert smoothed == plain  # the same forward, plus 0 * beta * delta
    else:  # the same too, unless the GPU's kernels pick another reduction order for the second forward
        assert smoothed == pytest.approx(plain, rel=1e-6, abs=0)


def test_label_smoothed_loss_matches_the_hand_computed_value(loss_setup):
    from tests.devices import model_device, tolerance
    from sera.training import LabelSmoothedDPOTrainer

    model, tokenizer, rows, config, daa, args_dir, policy_chosen, policy_rejected = loss_setup
    eps = [0.0, 0.1, 0.25, 0.4]
    loss = _loss(LabelSmoothedDPOTrainer, model, tokenizer, [{**r, "label_smoothing": e} for r, e in zip(rows, eps)],
                 config, daa, args_dir)
    delta = torch.tensor((policy_chosen - [r["ref_chosen_logps"] for r in rows])
                         - (policy_rejected - [r["ref_rejected_logps"] for r in rows]))
    e = torch.tensor(eps, dtype=delta.dtype)
    expected = (-(1 - e) * F.logsigmoid(config.beta * delta) - e * F.logsigmoid(-config.beta * delta)).mean()
    close = tolerance(model_device(model), rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(float(expected), rel=close["rtol"], abs=close["atol"])


def test_demo_offers_spa_and_the_no_ensemble_ablation_as_rows(tmp_path):
    from sera.demo import DemoOptions, _runs

    options = DemoOptions(output_dir=str(tmp_path), quick=True, variants="spa,no-ensemble").resolve()
    assert options.methods == ["daa", "sera", "spa", "sera/no-ensemble"]
    assert _runs("spa", "dpo") and not _runs("spa", "ipo") and _runs("sera/no-ensemble", "ipo")

"""Each DAA: the implicit reward SeRA ranks with is the one the trainer's loss sees, and the loss is the closed form."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from sera.config import TrainConfig
from sera.daa import DAAS, get_daa
from sera.data import PreferencePair
from sera.models import build_tiny_llama
from sera.scoring import sequence_logps
from sera.tokenization import PairTokenizer
from sera.training import SeraDPOTrainer, dpo_config
from tests.conftest import make_pairs
from tests.devices import tolerance, trainer_device

BETA, SIMPO_MARGIN = 0.5, 0.3


def closed_form_loss(daa: str, margin: torch.Tensor) -> torch.Tensor:
    """Each DAA's loss written from its implicit reward margin m = r(chosen) - r(rejected)."""
    if daa == "dpo":
        return -F.logsigmoid(margin)
    if daa == "slic":
        return torch.relu(1 - margin)
    if daa == "ipo":  # TRL's IPO: (per-token log-ratio margin - 1/(2 beta))^2, and m = beta * that margin
        return (margin / BETA - 1 / (2 * BETA)) ** 2
    if daa == "simpo":
        return -F.logsigmoid(margin - SIMPO_MARGIN)
    raise AssertionError(daa)


@pytest.mark.parametrize("daa_name", sorted(DAAS))
def test_scorer_margin_is_the_margin_the_trainer_loss_sees(tmp_path, tokenizer, daa_name):
    daa = get_daa(daa_name)
    reference = build_tiny_llama(tokenizer, seed=0)
    # the policy is scored where the trainer will compute its loss: TRL moves it to cuda when a GPU is visible
    # (and it is scored before the trainer is built, as in a run: TRL's fused head goes on last)
    device = trainer_device()
    policy = build_tiny_llama(tokenizer, seed=1).to(device)
    pair_tokenizer = PairTokenizer(tokenizer, max_length=64)
    tokens = [pair_tokenizer.pair(PreferencePair(r["id"], r["prompt"], r["chosen"], r["rejected"]))
              for r in make_pairs(4)]
    chosen = [(t.prompt_ids, t.chosen_ids) for t in tokens]
    rejected = [(t.prompt_ids, t.rejected_ids) for t in tokens]
    n_c = np.array([len(t.chosen_ids) for t in tokens])
    n_r = np.array([len(t.rejected_ids) for t in tokens])

    ref_c, ref_r = sequence_logps(reference, chosen), sequence_logps(reference, rejected)
    pol_c, pol_r = sequence_logps(policy, chosen), sequence_logps(policy, rejected)
    margin = (daa.implicit_reward(BETA, pol_c, ref_c, n_c) - daa.implicit_reward(BETA, pol_r, ref_r, n_r))

    rows = [{"prompt_ids": t.prompt_ids, "chosen_ids": t.chosen_ids, "rejected_ids": t.rejected_ids,
             "ref_chosen_logps": float(c), "ref_rejected_logps": float(r)}
            for t, c, r in zip(tokens,
                               daa.training_reference_logps(ref_c, n_c, BETA, SIMPO_MARGIN, rejected=False),
                               daa.training_reference_logps(ref_r, n_r, BETA, SIMPO_MARGIN, rejected=True))]
    config = TrainConfig(beta=BETA, simpo_margin=SIMPO_MARGIN, batch_size=1, grad_accum=1)
    trainer = SeraDPOTrainer(model=policy, args=dpo_config(config, daa, 1, str(tmp_path)),
                             train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert next(policy.parameters()).device == trainer.args.device == device  # where TRL put it
    close = tolerance(device, rtol=1e-4, atol=1e-5)
    policy.eval()
    for index, row in enumerate(rows):
        batch = trainer._prepare_inputs(trainer.data_collator([row]))  # onto the trainer's device, as in training
        with torch.no_grad():
            loss = trainer.compute_loss(policy, batch)
        expected = closed_form_loss(daa_name, torch.tensor(margin[index]))
        assert loss.item() == pytest.approx(expected.item(), rel=close["rtol"], abs=close["atol"]), (daa_name, index)
    assert np.abs(margin).max() > 1e-3  # the check is not vacuous: the two models disagree


def test_implicit_reward_sign_and_scale():
    policy, reference, tokens = np.array([-10.0, -20.0]), np.array([-12.0, -18.0]), np.array([4, 10])
    np.testing.assert_allclose(get_daa("dpo").implicit_reward(0.1, policy, reference, tokens), [0.2, -0.2])
    np.testing.assert_allclose(get_daa("slic").implicit_reward(0.1, policy, reference, tokens), [0.2, -0.2])
    np.testing.assert_allclose(get_daa("ipo").implicit_reward(1.0, policy, reference, tokens), [0.5, -0.2])
    np.testing.assert_allclose(get_daa("simpo").implicit_reward(2.0, policy, None, tokens), [-5.0, -4.0])


def test_a_more_likely_chosen_response_has_a_positive_margin():
    daa = get_daa("dpo")
    chosen = daa.implicit_reward(0.1, np.array([-5.0]), np.array([-8.0]), np.array([3]))
    rejected = daa.implicit_reward(0.1, np.array([-9.0]), np.array([-8.0]), np.array([3]))
    assert (chosen - rejected)[0] == pytest.approx(0.4)

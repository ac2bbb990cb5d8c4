"""The scoring engine against a naive loop, and its per-model cache."""

import numpy as np
import torch

from sera.models import build_tiny_llama
from sera.scoring import LogProbBank, sequence_logps


def naive_logp(model, prompt, completion):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits.log_softmax(-1)[0]
    return sum(logits[len(prompt) - 1 + i, token].item() for i, token in enumerate(completion))


def test_batched_scores_equal_one_at_a_time(tokenizer):
    model = build_tiny_llama(tokenizer, seed=3)
    sequences = [(tokenizer(p).input_ids, tokenizer(c).input_ids + [tokenizer.eos_token_id])
                 for p, c in [("ab", "cd"), ("reverse abcd ?", " dcba."), ("x", "yyyyyyyy"), ("q", "")]]
    got = sequence_logps(model, sequences, batch_size=3)
    expected = [naive_logp(model, p, c) for p, c in sequences]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bank_scores_each_sequence_once_per_model(tokenizer):
    loads = []

    def load(index):
        loads.append(index)
        return build_tiny_llama(tokenizer, seed=index)

    bank = LogProbBank(load, batch_size=4)
    bank.hold(1, build_tiny_llama(tokenizer, seed=1))
    seqs = [([5, 6], [7, 1]), ([5], [8, 1])]
    first = bank.logps(0, seqs)
    again = bank.logps(0, seqs + [([5], [8, 1])])
    assert loads == [0]  # the second call was answered from the cache
    np.testing.assert_allclose(again[:2], first)
    bank.logps(1, seqs)
    assert loads == [0]  # model 1 is held in memory
    bank.forget(0)
    bank.logps(0, seqs)
    assert loads == [0, 0]

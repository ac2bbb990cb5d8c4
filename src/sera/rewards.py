"""Implicit rewards of the policy's iterates, their ensemble (component 3), and margins.

r_s(x, y) is the implicit reward of iterate s (s = 0 is the SFT model) under the run's DAA,
measured against the reference that iterate s was trained with. SeRA reviews with

    r_ens = (1 - gamma) * r_t + gamma * r_{t-1}      (sera-method.md, component 3)

and the implicit reward margin of a pair is r_ens(chosen) - r_ens(rejected).
"""

from __future__ import annotations

import numpy as np

from sera.daa import DAA
from sera.scoring import LogProbBank, Sequence


class ImplicitReward:
    """Implicit rewards of any iterate of a run, on any token sequences."""

    def __init__(self, daa: DAA, beta: float, bank: LogProbBank, reference: str) -> None:
        self.daa, self.beta, self.bank, self.reference = daa, beta, bank, reference

    def reference_index(self, iterate: int) -> int:
        """The model iterate `iterate` is measured against: SFT (fixed) or the iterate before it."""
        return 0 if self.reference == "sft" else max(iterate - 1, 0)

    def of_iterate(self, iterate: int, sequences: list[Sequence]) -> np.ndarray:
        num_tokens = np.array([len(completion) for _, completion in sequences])
        if iterate == 0 and not self.daa.reference_free:
            return np.zeros(len(sequences))  # the reference measured against itself
        policy = self.bank.logps(iterate, sequences)
        reference = None if self.daa.reference_free else self.bank.logps(self.reference_index(iterate), sequences)
        return self.daa.implicit_reward(self.beta, policy, reference, num_tokens)

    def ensembled(self, iterate: int, sequences: list[Sequence], gamma: float) -> np.ndarray:
        """(1 - gamma) r_iterate + gamma r_{iterate-1}; the plain reward when gamma = 0 or iterate = 0."""
        current = self.of_iterate(iterate, sequences)
        if gamma == 0.0 or iterate == 0:
            return current
        return ensemble(current, self.of_iterate(iterate - 1, sequences), gamma)


def ensemble(current: np.ndarray, previous: np.ndarray, gamma: float) -> np.ndarray:
    return (1.0 - gamma) * current + gamma * previous


def margins(chosen_rewards: np.ndarray, rejected_rewards: np.ndarray) -> np.ndarray:
    """Implicit reward margin: how firmly the policy agrees with each pair's label."""
    return chosen_rewards - rejected_rewards

"""The direct alignment algorithms SeRA runs on, and the implicit reward each one's loss uses.

One entry per DAA. An entry names TRL's loss (DPOTrainer `loss_type`) and defines the implicit
reward r(x, y) that SeRA ranks with, so that reviewing and training agree by construction. To add
a DAA, add an entry here (and, if its loss is not in TRL, the loss to :mod:`sera.training`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DAA:
    name: str
    loss_type: str
    """TRL DPOTrainer loss_type."""
    length_normalized: bool
    """The loss compares per-token log-ratios (IPO in TRL, SimPO), so the reward is divided by |y|."""
    reference_free: bool
    """The reward uses log pi alone (SimPO); no reference log-probs are needed."""
    summary: str

    def implicit_reward(self, beta: float, policy_logps: np.ndarray, reference_logps: np.ndarray | None,
                        num_tokens: np.ndarray) -> np.ndarray:
        """r(x, y) from summed response log-probs: beta * log(pi/pi_ref), per token where the loss is."""
        log_ratio = policy_logps if self.reference_free else policy_logps - reference_logps
        if self.length_normalized:
            log_ratio = log_ratio / np.maximum(num_tokens, 1)
        return beta * log_ratio

    def training_reference_logps(self, reference_logps: np.ndarray | None, num_tokens: np.ndarray,
                                 beta: float, simpo_margin: float, rejected: bool) -> np.ndarray:
        """What the trainer receives as `ref_*_logps` (the scoring engine's cache, reused).

        SimPO runs on TRL's `sigmoid_norm` loss, -log sigmoid(beta * (lr_c/|c| - lr_r/|r|)), which is
        SimPO's -log sigmoid(beta/|c| log pi_c - beta/|r| log pi_r - margin) when the reference
        log-probs are 0 for the chosen and -(margin/beta)|r| for the rejected response.
        """
        if not self.reference_free:
            return reference_logps
        if rejected:
            return -(simpo_margin / beta) * num_tokens.astype(np.float64)
        return np.zeros(len(num_tokens), dtype=np.float64)


DAAS: dict[str, DAA] = {
    "dpo": DAA("dpo", "sigmoid", length_normalized=False, reference_free=False,
               summary="DPO: -log sigmoid(beta * (log-ratio chosen - log-ratio rejected))"),
    "ipo": DAA("ipo", "ipo", length_normalized=True, reference_free=False,
               summary="IPO: squared loss on per-token log-ratio margin minus 1/(2 beta) (TRL normalises by length)"),
    "slic": DAA("slic", "hinge", length_normalized=False, reference_free=False,
                summary="SLiC-HF: hinge max(0, 1 - beta * log-ratio margin)"),
    "simpo": DAA("simpo", "sigmoid_norm", length_normalized=True, reference_free=True,
                 summary="SimPO: reference-free, -log sigmoid(beta * per-token log pi margin - gamma)"),
}


def get_daa(name: str) -> DAA:
    return DAAS[name]

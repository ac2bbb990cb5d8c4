"""Out-of-fold implicit reward margins: every pair scored by a model that never trained on it.

A model's implicit reward margin on a pair it has just trained on mostly measures how well it memorised
that pair's label -- a flipped label included. Cross-fitting removes that: the pairs are cut into K
folds; for each fold a fresh copy of the SFT model trains one epoch of the DAA on the other K-1 folds,
and then scores the held-out fold, against the SFT model as the reference. Every pair thus gets the
margin of a model that learned the task from the rest of the data but never saw that pair's label.

This is the `crossfit` selection mode of the loop (`--selection-mode crossfit`, which calls it from
:func:`sera.steps.select`): the same fold assignment (pair ids sorted, then
shuffled by `random.Random(seed)`, fold k = order[k::K]), the same one-epoch :func:`sera.training.train_pass`
from the SFT model per fold with the SFT model's cached log-probs as the reference, and the same
margin, `daa.implicit_reward(chosen) - daa.implicit_reward(rejected)`. `sera score --crossfit K`
(:mod:`sera.audit`) uses it, and the loop can call it too.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sera.config import TrainConfig
from sera.daa import DAA
from sera.errors import SeraInputError
from sera.scoring import LogProbBank, sequence_logps
from sera.tokenization import TokenizedPair
from sera.training import TrainResult, train_pass


def shuffled_order(ids: Sequence[str], seed: int) -> list[str]:
    """The loop's order of pairs for cross-fitting: ids sorted, then shuffled by `random.Random(seed)`."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return order


def fold_order(ids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """The K folds of `ids`: fold k = order[k::K] of :func:`shuffled_order` (as the loop)."""
    if folds < 2:
        raise SeraInputError(f"--crossfit: {folds} folds; cross-fitting needs at least 2")
    if folds > len(ids):
        raise SeraInputError(f"--crossfit {folds}: more folds than the {len(ids)} pairs to score")
    order = shuffled_order(ids, seed)
    return [order[k::folds] for k in range(folds)]


def training_rows(pairs: Sequence[TokenizedPair], daa: DAA, reference_chosen: np.ndarray | None,
                  reference_rejected: np.ndarray | None, *, beta: float, simpo_margin: float) -> list[dict]:
    """Trainer rows (token ids plus what the trainer receives as `ref_*_logps`) for `train_pass`, from the
    reference log-probs already scored (None for a reference-free DAA)."""
    chosen_tokens = np.array([len(p.chosen_ids) for p in pairs])
    rejected_tokens = np.array([len(p.rejected_ids) for p in pairs])
    ref_chosen = daa.training_reference_logps(reference_chosen, chosen_tokens, beta, simpo_margin, False)
    ref_rejected = daa.training_reference_logps(reference_rejected, rejected_tokens, beta, simpo_margin, True)
    return [{"prompt_ids": p.prompt_ids, "chosen_ids": p.chosen_ids, "rejected_ids": p.rejected_ids,
             "ref_chosen_logps": float(rc), "ref_rejected_logps": float(rr)}
            for p, rc, rr in zip(pairs, ref_chosen, ref_rejected)]


@dataclass
class OutOfFold:
    """Per pair id: its fold, the log-probs of its fold model (which never trained on it), and its margin."""

    fold: dict[str, int] = field(default_factory=dict)
    policy_chosen: dict[str, float] = field(default_factory=dict)
    policy_rejected: dict[str, float] = field(default_factory=dict)
    margins: dict[str, float] = field(default_factory=dict)
    train_results: list[TrainResult] = field(default_factory=list)
    seconds_training: float = 0.0
    seconds_scoring: float = 0.0


def out_of_fold_margins(pairs: Sequence[TokenizedPair], *, folds: int, load_sft: Callable[[], PreTrainedModel],
                        tokenizer: PreTrainedTokenizerBase, config: TrainConfig, daa: DAA,
                        reference: LogProbBank | None, reference_index: int = 0, metrics_path: Path,
                        on_fold: Callable[[int, int], None] | None = None) -> OutOfFold:
    """Out-of-fold margins of `pairs`, as :mod:`sera.loop`'s `crossfit` selection mode computes them.

    For each of the `folds` folds (:func:`fold_order` with `config.seed`), `load_sft()` gives a fresh SFT
    model, which :func:`sera.training.train_pass` trains for one epoch of `daa`'s loss (options from
    `config`: beta, learning rate, batch size, ...) on the other folds' pairs, then scores the held-out
    fold with :func:`sera.scoring.sequence_logps`. Reference log-probs come from `reference`'s model
    `reference_index` (the SFT model; cached there, so each sequence is scored once for training and
    margins alike); a reference-free DAA (SimPO) needs none (`reference=None`). Trainer logs are appended
    to `metrics_path`. `on_fold(k, K)` is called before fold k (0-based) starts."""
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise SeraInputError("cross-fitting needs unique pair ids")
    by_id = {p.id: p for p in pairs}
    needs_reference = not daa.reference_free
    if needs_reference and reference is None:
        raise ValueError(f"{daa.name} needs reference log-probs (a LogProbBank holding the SFT model)")
    result = OutOfFold()
    order = shuffled_order(ids, config.seed)
    for k, held_ids in enumerate(fold_order(ids, folds, config.seed)):
        if on_fold is not None:
            on_fold(k, folds)
        held_set = set(held_ids)
        train_pairs = [by_id[i] for i in order if i not in held_set]  # in the loop's order, held fold removed
        held = [by_id[i] for i in held_ids]
        start = time.perf_counter()
        ref_c, ref_r = _reference(reference, reference_index, train_pairs) if needs_reference else (None, None)
        rows = training_rows(train_pairs, daa, ref_c, ref_r, beta=config.beta, simpo_margin=config.simpo_margin)
        model = load_sft()
        result.train_results.append(train_pass(model, tokenizer, rows, config, daa, epochs=1,
                                               iteration=f"crossfit-{k + 1}/{folds}", metrics_path=metrics_path))
        result.seconds_training += time.perf_counter() - start
        start = time.perf_counter()
        sequences = [(p.prompt_ids, p.chosen_ids) for p in held] + [(p.prompt_ids, p.rejected_ids) for p in held]
        logps = sequence_logps(model, sequences, batch_size=config.scoring_batch_size,
                               description=f"scoring fold {k + 1}/{folds}")
        del model
        gc.collect()
        policy_c, policy_r = logps[:len(held)], logps[len(held):]
        ref_hc, ref_hr = _reference(reference, reference_index, held) if needs_reference else (None, None)
        margins = (daa.implicit_reward(config.beta, policy_c, ref_hc, np.array([len(p.chosen_ids) for p in held]))
                   - daa.implicit_reward(config.beta, policy_r, ref_hr, np.array([len(p.rejected_ids) for p in held])))
        for index, pair in enumerate(held):
            result.fold[pair.id] = k
            result.policy_chosen[pair.id] = float(policy_c[index])
            result.policy_rejected[pair.id] = float(policy_r[index])
            result.margins[pair.id] = float(margins[index])
        result.seconds_scoring += time.perf_counter() - start
    return result


def _reference(bank: LogProbBank, index: int, pairs: Sequence[TokenizedPair]) -> tuple[np.ndarray, np.ndarray]:
    logps = bank.logps(index, [(p.prompt_ids, p.chosen_ids) for p in pairs]
                       + [(p.prompt_ids, p.rejected_ids) for p in pairs])
    return logps[:len(pairs)], logps[len(pairs):]

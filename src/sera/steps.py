"""The steps of Algorithm 1, each a function of the run that returns what it decided.

    bootstrap(run, t)        component 2: the policy's own samples, best vs worst      -> Bootstrapped
    select(run, t, pool)     components 1 + 3: top K of the pool by ensembled IRM       -> Selection
    train(run, t, examples)  theta_t: one epoch of the DAA's loss from theta_{t-1}      -> Trained
    train_plain(run, ...)    the baseline: the DAA on every offline pair                 -> Trained

Each writes what it decided into the run directory (iter_<t>/generated.jsonl, selection.jsonl, the
iterate); the loop (:mod:`sera.loop`) turns their results into the iteration's record.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from transformers import TrainerCallback

from sera import distributed
from sera.bootstrap import make_pairs
from sera.budget import Budget, plain_pair_passes
from sera.crossfit import out_of_fold_margins, training_rows
from sera.errors import SeraRuntimeError
from sera.examples import Example, bootstrap_prompts
from sera.generation import SamplingParams
from sera.io import write_jsonl
from sera.models import save_model
from sera.records import Bootstrapped, Selection, Trained
from sera.review import displacement
from sera.rewards import margins
from sera.selection import select_top_k, selection_size
from sera.training import RunSchedule, optimiser_steps, train_pass

if TYPE_CHECKING:  # pragma: no cover
    from sera.session import RunSession


def bootstrap(run: "RunSession", t: int) -> Bootstrapped:
    """Component 2: N samples per offline prompt from theta_{t-1}; best vs worst by the labeller."""
    cfg = run.config
    prompts, too_long = bootstrap_prompts(run.offline, run.pair_tokenizer, cfg.max_bootstrap_prompts, cfg.seed)
    params = SamplingParams(cfg.num_samples, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    start = time.perf_counter()
    samples = run.generate([ids for _, _, ids in prompts], params, seed=cfg.seed + t,
                           description=f"iteration {t}: sampling")
    seconds_generating = time.perf_counter() - start
    scoring_before = run.bank.seconds
    texts = [[c.text for c in s] for s in samples]
    result = make_pairs([(pid, p) for pid, p, _ in prompts], texts, lambda ps, cs: run.labeller(t - 1, ps, cs),
                        iteration=t)
    implicit = run.labeller.name == "implicit" or run.labeller.name.startswith("blend:")
    corr = displacement(run, t - 1, [p for _, p, _ in prompts], texts) if implicit else None
    write_jsonl(run.dir.generated(t), result.records)
    skipped = Counter(result.skipped)
    if too_long:
        skipped["prompt_too_long"] = too_long
    return Bootstrapped(examples=run.examples(result.pairs), prompts=len(prompts), skipped=dict(skipped),
                        labeller=run.labeller.name,
                        sample_tokens_mean=float(np.mean([c.num_tokens for s in samples for c in s])),
                        displacement_corr=corr, seconds_generating=seconds_generating,
                        seconds_scoring=run.bank.seconds - scoring_before)


def select(run: "RunSession", t: int, pool: list[Example]) -> Selection:
    """Components 1 + 3: rank the pool by the IRM of r_ens and keep the top K."""
    scoring_before, gamma = run.bank.seconds, run.config.ensemble_gamma
    pool_margins = margins(run.reward.ensembled(t - 1, [e.chosen for e in pool], gamma),
                           run.reward.ensembled(t - 1, [e.rejected for e in pool], gamma))
    seconds_crossfit = None
    if run.config.selection_mode == "crossfit":
        start, first = time.perf_counter(), run.state.crossfit is None
        pool_margins = _with_out_of_fold_margins(run, pool, pool_margins)
        seconds_crossfit = time.perf_counter() - start if first else None
    if not np.all(np.isfinite(pool_margins)):
        raise SeraRuntimeError(f"iteration {t}: implicit reward margins are not finite (NaN/inf log-probs)")
    keep = keep_mask(run.config, pool, pool_margins)
    write_jsonl(run.dir.selection(t), ({"id": e.pair.id, "source": e.pair.source, "margin": float(m),
                                        "selected": bool(k)} for e, m, k in zip(pool, pool_margins, keep)))
    return Selection(kept=[e for e, k in zip(pool, keep) if k], pool_size=len(pool),
                     margins_kept_mean=_mean(pool_margins[keep]), margins_dropped_mean=_mean(pool_margins[~keep]),
                     kept_stats=_kept_stats(pool, keep), seconds_scoring=run.bank.seconds - scoring_before,
                     seconds_crossfit=seconds_crossfit)


def train(run: "RunSession", t: int, examples: list[Example], schedule: RunSchedule | None = None) -> Trained:
    """theta_t = one epoch of the DAA's loss from theta_{t-1} on `examples`; the iterate is saved."""
    trained = _train_pass(run, examples, epochs=1, iteration=t, reference=run.reward.reference_index(t),
                          schedule=schedule, optimizer=run.run_optimizer())
    run.state.lr_steps_done += trained.steps
    run.save_iterate(t)
    return trained


def train_plain(run: "RunSession", epochs: int, budget: Budget | None = None) -> Trained:
    """The baseline: the DAA on every offline pair for `epochs` epochs (one trainer, one schedule), or, with
    `budget` (--match-budget), for exactly its optimiser steps: as many epochs as they take, the last partial.
    Each epoch's model is kept as iter_<epoch>/model."""
    max_steps = None
    if budget is not None:
        max_steps = budget.optimizer_steps
        epochs = math.ceil(max_steps / optimiser_steps(run.config, 1, len(run.offline)))
    trained = _train_pass(run, run.offline, epochs=epochs, iteration=1, reference=0,
                          callbacks=[_SaveEachEpoch(run)], max_steps=max_steps)
    per_step = run.config.batch_size * run.config.grad_accum * distributed.world_size()
    trained.epochs = epochs
    trained.pair_passes = plain_pair_passes(trained.steps, len(run.offline), per_step)
    return trained


def run_schedule(run: "RunSession", t: int, num_pairs: int) -> RunSchedule | None:
    """With --lr-schedule run: where iteration t sits on the run's one schedule. The total is re-planned at each
    iteration's start (steps so far + this iteration's steps for each one left), so it ends at zero."""
    cfg, state = run.config, run.state
    if cfg.lr_schedule != "run":
        return None
    steps = optimiser_steps(cfg, 1, num_pairs)
    if state.lr_warmup_steps is None:  # fixed at the first iteration, from the first plan
        state.lr_warmup_steps = int(cfg.warmup_ratio * steps * cfg.iterations)
    done = state.lr_steps_done
    return RunSchedule(cfg.lr_scheduler_type, state.lr_warmup_steps, done + steps * (cfg.iterations - t + 1),
                       offset=done)


def keep_mask(cfg, pool: list[Example], pool_margins: np.ndarray) -> np.ndarray:
    """Which pool pairs selection keeps: the top K jointly (the paper), per source (quota), or offline only."""
    if not cfg.selection:
        return np.ones(len(pool), dtype=bool)
    generated = np.array([e.pair.source == "generated" for e in pool])
    if cfg.selection_mode == "quota":
        groups = [(~generated, cfg.offline_quota), (generated, cfg.generated_quota)]
    elif cfg.selection_pool == "offline":  # generated pairs are all kept
        groups = [(~generated, cfg.selection_ratio)]
    else:
        groups = [(np.ones(len(pool), dtype=bool), cfg.selection_ratio)]
    keep = np.ones(len(pool), dtype=bool)
    for members, ratio in groups:
        index = np.flatnonzero(members)
        if len(index) == 0:
            continue
        count = cfg.selection_count if len(groups) == 1 and cfg.selection_mode != "quota" else None
        keep[index] = select_top_k([pool[i].pair.id for i in index], pool_margins[index],
                                   selection_size(len(index), ratio, count))
    return keep


def _train_pass(run: "RunSession", examples: list[Example], *, epochs: int, iteration, reference: int,
                callbacks=(), **options) -> Trained:
    scoring_before = run.bank.seconds
    rows = _training_rows(run, examples, reference)
    seconds_scoring = run.bank.seconds - scoring_before
    result = train_pass(run.policy, run.tokenizer, rows, run.config, run.daa, epochs=epochs, iteration=iteration,
                        metrics_path=run.dir.metrics, callbacks=[*callbacks, *run.tracker.callbacks(iteration)],
                        **options)
    return Trained(pairs=len(examples), steps=result.steps, final_loss=result.final_loss,
                   seconds_training=result.seconds, seconds_scoring=seconds_scoring)


def _training_rows(run: "RunSession", examples: list[Example], reference: int) -> list[dict]:
    """Token ids plus the reference log-probs the trainer would otherwise recompute."""
    ref_chosen = ref_rejected = None
    if not run.daa.reference_free:
        ref_chosen = run.bank.logps(reference, [e.chosen for e in examples])
        ref_rejected = run.bank.logps(reference, [e.rejected for e in examples])
    rows = training_rows([e.tokens for e in examples], run.daa, ref_chosen, ref_rejected, beta=run.config.beta,
                         simpo_margin=run.config.simpo_margin)
    if any(e.label_smoothing is not None for e in examples):  # SPA: the per-pair label-smoothed DPO loss
        for row, example in zip(rows, examples):
            row["label_smoothing"] = example.label_smoothing or 0.0
    return rows


def _with_out_of_fold_margins(run: "RunSession", pool: list[Example], pool_margins: np.ndarray) -> np.ndarray:
    """Offline pairs are ranked by out-of-fold IRM: each scored by a warm-up model that never saw it (computed
    once, at the first selection, and kept in the run state)."""
    if run.state.crossfit is None:
        run.state.crossfit = out_of_fold_margins(
            [e.tokens for e in run.offline], folds=run.config.crossfit_folds, load_sft=lambda: run.load(0),
            tokenizer=run.tokenizer, config=run.config, daa=run.daa,
            reference=None if run.daa.reference_free else run.bank, metrics_path=run.dir.metrics).margins
    result = pool_margins.copy()
    for index, example in enumerate(pool):
        if example.pair.id in run.state.crossfit:
            result[index] = run.state.crossfit[example.pair.id]
    return result


class _SaveEachEpoch(TrainerCallback):
    """Plain-DAA runs keep each epoch's model as iter_<epoch>/model, to compare with SeRA's iterates."""

    def __init__(self, run: "RunSession") -> None:
        self.run = run

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = math.ceil((state.epoch or 0) - 1e-6)  # a last partial epoch (--match-budget) is saved as the next
        if epoch >= 1:
            save_model(self.run.policy, self.run.tokenizer, self.run.dir.model(epoch))
            distributed.barrier()


def _kept_stats(pool: list[Example], keep: np.ndarray) -> dict:
    """Who was kept: the bootstrapped share, and response lengths (tokens) among kept and dropped pairs."""
    generated = np.array([e.pair.source == "generated" for e in pool])
    chosen = np.array([len(e.tokens.chosen_ids) for e in pool], dtype=float)
    rejected = np.array([len(e.tokens.rejected_ids) for e in pool], dtype=float)
    return {"selected_generated": int((keep & generated).sum()),
            "generated_share_kept": float(generated[keep].mean()) if keep.any() else None,
            "kept_chosen_tokens": _mean(chosen[keep]), "kept_rejected_tokens": _mean(rejected[keep]),
            "dropped_chosen_tokens": _mean(chosen[~keep]), "dropped_rejected_tokens": _mean(rejected[~keep])}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None

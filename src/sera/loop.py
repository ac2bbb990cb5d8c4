"""The SeRA loop: Algorithm 1 of the paper, as `sera-method.md` specifies it.

    theta_1 = train(theta_0, D_offline)                      warm-up, 1 epoch
    for t = 2..T:
        D_gen = bootstrap(theta_{t-1})                       component 2, labelled by r_ens
        pool  = D_offline + D_gen
        D_sel = top-K(pool) by IRM of r_ens                  components 1 and 3
        theta_t = train(theta_{t-1}, D_sel)                  1 epoch of the DAA's own loss

`run()` below is that loop; `SeraRun` holds the state it needs (models, caches, the run directory)
and implements each step. After every iteration the run reviews itself on held-out pairs
(:mod:`sera.diagnostics`) and, with `--guard`, remembers the best iterate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import TrainerCallback, set_seed

from sera import distributed, run_lock
from sera.baselines import BASELINES_ON_PREVIOUS_REFERENCE
from sera.baselines import steps as baseline_steps
from sera.bootstrap import as_response, make_pairs
from sera.budget import Budget, budget_of, matched_budget, plain_pair_passes
from sera.config import TrainConfig
from sera.daa import get_daa
from sera.data import PreferencePair, load_pairs
from sera.diagnostics import mean_within_group_spearman, preference_accuracy, warnings_for
from sera.errors import SeraInputError, SeraRuntimeError
from sera.generation import SamplingParams, generate_completions
from sera.io import append_jsonl, load_optimizer_state, save_optimizer_state, write_json, write_jsonl, write_yaml
from sera.labellers import build_labeller, candidate_sequences, prompt_text
from sera.models import (add_lora, iterate_view, load_lora_policy, load_model, load_tokenizer, lora_config,
                         save_model)
from sera.progress import console
from sera.rewards import ImplicitReward, margins
from sera.run_dir import RunDirectory
from sera.scoring import LogProbBank, sequence_logps
from sera.state import RunState
from sera.selection import select_top_k, selection_size
from sera.tokenization import PairTokenizer, TokenizedPair
from sera.training import RunSchedule, build_optimizer, dpo_config, optimiser_steps, train_pass
from sera import model_card, tracking  # [tracking/model card hooks]


@dataclass(frozen=True)
class RunInputs:
    """What a run reads when the caller hands it over in memory (:class:`sera.SeraTrainer`) instead of naming it
    in `config.model` / `config.dataset`, which then only record where it came from."""

    model_path: str | None = None
    """Folder holding the SFT model's weights (the policy's start and the reference), instead of `config.model`."""
    tokenizer: Any = None
    """The tokenizer (TRL's `processing_class`), instead of loading `config.model`'s."""
    rows: Any = None
    """Preference rows (a `datasets.Dataset` or a list of dicts, any format `config.dataset` could hold)."""


def run(config: TrainConfig, resume: bool = False, inputs: RunInputs = RunInputs()) -> dict:
    """Run SeRA (or a baseline: `daa`, `curri-dpo`, `spa`; docs/baselines.md) and return the summary it writes.

    With `resume`, continue a run in `config.output_dir` after its last completed iteration.
    """
    with run_lock.hold(config.output_dir, "--resume" if resume else "--output-dir"):  # one process per directory
        return _run(config, resume, inputs)


def _run(config: TrainConfig, resume: bool, inputs: RunInputs) -> dict:
    if config.method in BASELINES_ON_PREVIOUS_REFERENCE:
        config = dataclasses.replace(config, reference="previous")
    run = SeraRun(config, resume=resume, inputs=inputs)
    if config.method == "daa":
        if not run.state.completed:
            run.train_plain_daa(epochs=config.iterations, budget=run.budget_to_match)
        return run.finish()
    if config.method == "curri-dpo":                                     # one curriculum stage per iteration
        stages = baseline_steps.curriculum(run)
        for t in range(run.state.completed + 1, config.iterations + 1):
            run.train_iteration(t, baseline_steps.curriculum_stage(run, stages, t))
        return run.finish()
    if config.method == "spa":                                           # the seed, then self-labelled samples
        seed, shares = baseline_steps.spa_split(run)
        for t in range(run.state.completed + 1, config.iterations + 1):
            run.train_iteration(t, seed if t == 1 else baseline_steps.spa_pairs(run, t, shares[t - 2]))
        return run.finish()
    for t in range(run.state.completed + 1, config.iterations + 1):
        if t == 1 and config.warmup:
            run.train_iteration(t, run.offline)                          # warm-up on all offline pairs
        else:
            generated = run.bootstrap(t) if config.bootstrap else []     # component 2
            selected = run.select(t, run.offline + generated)            # components 1 + 3
            run.train_iteration(t, selected)
    return run.finish()


@dataclass(frozen=True)
class Example:
    """A preference pair together with the token ids that scoring and training share."""

    pair: PreferencePair
    tokens: TokenizedPair
    label_smoothing: float | None = None
    """SPA's per-pair label smoothing eps (None: the DAA's plain loss)."""

    @property
    def chosen(self) -> tuple[list[int], list[int]]:
        return self.tokens.prompt_ids, self.tokens.chosen_ids

    @property
    def rejected(self) -> tuple[list[int], list[int]]:
        return self.tokens.prompt_ids, self.tokens.rejected_ids


class SeraRun:
    """State of one run and the steps of Algorithm 1."""

    def __init__(self, config: TrainConfig, resume: bool = False, inputs: RunInputs = RunInputs()) -> None:
        distributed.init()
        if distributed.shards_parameters():
            refused = ("--lora-r" if config.lora_r else "--carry-optimizer" if config.carry_optimizer
                       else "--lr-schedule run" if config.lr_schedule == "run" else None)
            if refused:  # the last two hand the trainer an optimizer (optimizers=), which these engines must build
                raise SeraInputError(f"{refused} under FSDP or DeepSpeed ZeRO-3 is not supported; use DDP or ZeRO-2 "
                                     "(examples/accelerate/)")
            if distributed.is_main():
                console.print("[yellow]experimental:[/] parameter-sharding engine: each pass trains a sharded copy and "
                              "gathers its weights back into the whole policy (docs/scale.md)", highlight=False)
        if config.generation_backend == "vllm":
            _check_vllm_can_run()
        self.config = config
        self.budget_to_match = matched_budget(config)[0] if config.match_budget else None  # before any work
        self._vllm = None  # the vLLM engine, started at the first sampling (generation_backend=vllm)
        self._state_clock = time.perf_counter()  # wall time not yet counted in state.seconds
        self.dir = RunDirectory(config.output_dir)
        self._prepare_output_dir(resume)
        set_seed(config.seed)
        self.daa = get_daa(config.daa)
        self.model_path = inputs.model_path or config.model
        self.tokenizer = inputs.tokenizer or load_tokenizer(self.model_path, trust_remote_code=config.trust_remote_code,
                                                            gguf_file=config.gguf_file)
        self.pair_tokenizer = PairTokenizer(self.tokenizer, config.max_length)
        loaded = load_pairs(config.dataset if inputs.rows is None else inputs.rows, split=config.dataset_split, skip_invalid=config.skip_invalid,
                            dataset_format=config.dataset_format, seed=config.seed,
                            ultrafeedback_pairs="all" if config.method == "curri-dpo" else "best-vs-random")
        self.pair_meta = loaded.meta  # ratings by pair id, where the data has them (Curri-DPO's curriculum)
        self.data_report = {"format": loaded.format, "rows_read": loaded.rows_read,
                            "skipped": Counter(loaded.skipped)}
        examples = self._examples(loaded.pairs, self.data_report["skipped"])
        if not examples:
            raise SeraInputError(f"{config.dataset}: every pair's prompt is longer than --max-length "
                                 f"{config.max_length}")
        self.offline, self.validation = self._hold_out(examples)
        self.data_report.update(offline_pairs=len(self.offline), validation_pairs=len(self.validation))
        self.policy = self._load_base()  # with --lora-r: the base wrapped in a fresh adapter (= the SFT model)
        self.bank = LogProbBank(self._load, config.scoring_batch_size)
        self.bank.hold(0, self.policy)
        self.reward = ImplicitReward(self.daa, config.beta, self.bank, config.reference)
        self.labeller = build_labeller(config.bootstrap_labeller, self.pair_tokenizer, self.reward,
                                       config.ensemble_gamma)
        self._bootstraps = config.method == "sera" and config.bootstrap
        self._current: dict = {}
        self.optimizer = None  # --carry-optimizer: the run's one optimizer, handed to every iteration's trainer
        self.state = RunState()  # everything a resumed run needs, saved whole after each iteration
        if resume and self.dir.state.exists():
            self._restore(RunState.load(self.dir.state))
        else:
            self.state.sft_review = self._review_iterate(0) if self.validation else {}
        self.tracker = tracking.start(config, self.dir.root, iterations=self.state.iterations,
                                      warnings=self.state.warnings, sft_review=self.state.sft_review)  # [tracking hook] one tracker run for the run

    # -- the steps of Algorithm 1 -------------------------------------------------------------

    def bootstrap(self, t: int) -> list[Example]:
        """Component 2: N samples per offline prompt from theta_{t-1}; best vs worst by the labeller."""
        prompts, too_long = self._bootstrap_prompts()
        params = SamplingParams(self.config.num_samples, self.config.temperature, self.config.top_p,
                                self.config.max_new_tokens)
        start = time.perf_counter()
        samples = self._generate([ids for _, _, ids in prompts], params, seed=self.config.seed + t,
                                 description=f"iteration {t}: sampling")
        self._current["seconds_generating"] = time.perf_counter() - start
        scoring_before = self.bank.seconds
        texts = [[c.text for c in s] for s in samples]
        result = make_pairs([(pid, p) for pid, p, _ in prompts], texts,
                            lambda ps, cs: self.labeller(t - 1, ps, cs), iteration=t)
        if self.labeller.name == "implicit" or self.labeller.name.startswith("blend:"):
            self._current["displacement_corr"] = self._displacement(t - 1, [p for _, p, _ in prompts], texts)
        self._current["seconds_scoring"] = self.bank.seconds - scoring_before
        write_jsonl(self.dir.generated(t), result.records)
        skipped = Counter(result.skipped)
        if too_long:
            skipped["prompt_too_long"] = too_long
        self._current.update(generated=len(result.pairs), bootstrap_prompts=len(prompts),
                             bootstrap_skipped=dict(skipped), labeller=self.labeller.name,
                             sample_tokens_mean=float(np.mean([c.num_tokens for s in samples for c in s])))
        return self._examples(result.pairs, Counter())

    def select(self, t: int, pool: list[Example]) -> list[Example]:
        """Components 1 + 3: rank the pool by the IRM of r_ens and keep the top K."""
        scoring_before = self.bank.seconds
        gamma = self.config.ensemble_gamma
        pool_margins = margins(self.reward.ensembled(t - 1, [e.chosen for e in pool], gamma),
                               self.reward.ensembled(t - 1, [e.rejected for e in pool], gamma))
        if self.config.selection_mode == "crossfit":
            pool_margins = self._with_crossfit_margins(pool, pool_margins)
        if not np.all(np.isfinite(pool_margins)):
            raise SeraRuntimeError(f"iteration {t}: implicit reward margins are not finite (NaN/inf log-probs)")
        keep = self._keep_mask(pool, pool_margins)
        self._current["seconds_scoring"] = self._current.get("seconds_scoring", 0.0) + (
            self.bank.seconds - scoring_before)
        write_jsonl(self.dir.selection(t), (
            {"id": e.pair.id, "source": e.pair.source, "margin": float(m), "selected": bool(k)}
            for e, m, k in zip(pool, pool_margins, keep)))
        self._current.update(pool_size=len(pool), selected=int(keep.sum()), dropped=int((~keep).sum()),
                             mean_margin_selected=_mean(pool_margins[keep]),
                             mean_margin_dropped=_mean(pool_margins[~keep]), **_kept_stats(pool, keep))
        return [e for e, k in zip(pool, keep) if k]

    def train_iteration(self, t: int, examples: list[Example]) -> None:
        """theta_t = one epoch of the DAA's loss from theta_{t-1} on `examples`."""
        self._current.setdefault("pool_size", len(examples))
        self._current.setdefault("selected", len(examples))
        result = self._train(self.policy, examples, epochs=1, iteration=t,
                             reference=self.reward.reference_index(t), schedule=self._run_schedule(t, len(examples)),
                             optimizer=self._run_optimizer())
        self.state.lr_steps_done += result.steps
        save_model(self.policy, self.tokenizer, self.dir.model(t))
        if self.optimizer is not None:  # before state.json names iteration t as completed
            save_optimizer_state(self.dir.optimizer, self.optimizer.state_dict())
        distributed.barrier()
        self._end_iteration(t, result)

    def train_plain_daa(self, epochs: int, budget: Budget | None = None) -> None:
        """The baseline: the DAA on every offline pair for `epochs` epochs (one trainer, one schedule), or, with
        `budget` (--match-budget), for exactly its optimiser steps: as many epochs as they take, the last partial."""
        max_steps = None
        if budget is not None:
            max_steps = budget.optimizer_steps
            epochs = math.ceil(max_steps / optimiser_steps(self.config, 1, len(self.offline)))
        self._current.update(pool_size=len(self.offline), selected=len(self.offline), epochs=epochs)
        result = self._train(self.policy, self.offline, epochs=epochs, iteration=1, reference=0,
                             callbacks=[_SaveEachEpoch(self)], max_steps=max_steps)
        per_step = self.config.batch_size * self.config.grad_accum * distributed.world_size()
        self._current["pair_passes"] = plain_pair_passes(result.steps, len(self.offline), per_step)
        self._end_iteration(epochs, result)

    def finish(self) -> dict:
        final_iterate = self._final_iterate()
        last = self.state.iterations[-1]["iteration"]
        save_model(self.policy if final_iterate == last else self._load(final_iterate), self.tokenizer,
                   self.dir.final_model, merge=self.config.merge)
        summary = {
            "method": self.config.method, "daa": self.config.daa,
            "data": {**self.data_report, "skipped": dict(self.data_report["skipped"])},
            "sft_review": self.state.sft_review,
            "iterations": self.state.iterations,
            "budget": {**budget_of(self.state.iterations).to_dict(),
                       **({"matched_to": {"run": self.config.match_budget, **self.budget_to_match.to_dict()}}
                          if self.budget_to_match else {})},
            "guard": self.config.guard, "final_iterate": final_iterate,
            "final_model": str(self.dir.final_model),
            "warnings": self.state.warnings,
            "seconds_total": self.state.seconds + time.perf_counter() - self._state_clock,
        }
        write_json(self.dir.summary, summary)
        model_card.write_model_card(self.dir.final_model / "README.md", summary, self.config.to_dict())  # [model card hook]
        self.tracker.close(summary)  # [tracking hook]
        if self._vllm is not None:
            self._vllm.close()
        return summary

    # -- training -----------------------------------------------------------------------------

    def _run_optimizer(self):
        """With --carry-optimizer: the run's one optimizer (built at the first iteration), which every iteration's
        trainer goes on with, as one T-epoch run would; without it each pass starts a fresh one."""
        if self.config.carry_optimizer and self.optimizer is None:
            self.optimizer = build_optimizer(self.policy, dpo_config(self.config, self.daa, 1, str(self.dir.root)))
        return self.optimizer

    def _run_schedule(self, t: int, num_pairs: int) -> RunSchedule | None:
        """With --lr-schedule run: where iteration t sits on the run's one schedule. The total is re-planned at
        each iteration's start (steps so far + this iteration's steps for each one left), so it ends at zero."""
        cfg = self.config
        if cfg.lr_schedule != "run":
            return None
        steps = optimiser_steps(cfg, 1, num_pairs)
        done = self.state.lr_steps_done
        if self.state.lr_warmup_steps is None:  # fixed at the first iteration, from the first plan
            self.state.lr_warmup_steps = int(cfg.warmup_ratio * steps * cfg.iterations)
        return RunSchedule(cfg.lr_scheduler_type, self.state.lr_warmup_steps,
                           done + steps * (cfg.iterations - t + 1), offset=done)

    def _train(self, model, examples: list[Example], *, epochs: int, iteration, reference: int, callbacks=(),
               schedule: RunSchedule | None = None, optimizer=None, max_steps: int | None = None):
        scoring_before = self.bank.seconds
        rows = self._training_rows(examples, reference)
        self._current["seconds_scoring"] = self._current.get("seconds_scoring", 0.0) + (
            self.bank.seconds - scoring_before)
        return train_pass(model, self.tokenizer, rows, self.config, self.daa, epochs=epochs, iteration=iteration,
                          metrics_path=self.dir.metrics, schedule=schedule,
                          callbacks=[*callbacks, *self.tracker.callbacks(iteration)],  # [tracking hook]
                          optimizer=optimizer, max_steps=max_steps)

    def _training_rows(self, examples: list[Example], reference: int) -> list[dict]:
        """Token ids plus the reference log-probs the trainer would otherwise recompute."""
        chosen_tokens = np.array([len(e.tokens.chosen_ids) for e in examples])
        rejected_tokens = np.array([len(e.tokens.rejected_ids) for e in examples])
        ref_chosen = ref_rejected = None
        if not self.daa.reference_free:
            ref_chosen = self.bank.logps(reference, [e.chosen for e in examples])
            ref_rejected = self.bank.logps(reference, [e.rejected for e in examples])
        cfg = self.config
        ref_chosen = self.daa.training_reference_logps(ref_chosen, chosen_tokens, cfg.beta, cfg.simpo_margin, False)
        ref_rejected = self.daa.training_reference_logps(ref_rejected, rejected_tokens, cfg.beta,
                                                         cfg.simpo_margin, True)
        rows = [{"prompt_ids": e.tokens.prompt_ids, "chosen_ids": e.tokens.chosen_ids,
                 "rejected_ids": e.tokens.rejected_ids, "ref_chosen_logps": float(rc),
                 "ref_rejected_logps": float(rr)} for e, rc, rr in zip(examples, ref_chosen, ref_rejected)]
        if any(e.label_smoothing is not None for e in examples):  # SPA: the per-pair label-smoothed DPO loss
            for row, example in zip(rows, examples):
                row["label_smoothing"] = example.label_smoothing or 0.0
        return rows

    # -- selection options --------------------------------------------------------------------

    def _keep_mask(self, pool: list[Example], pool_margins: np.ndarray) -> np.ndarray:
        cfg = self.config
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
            top = select_top_k([pool[i].pair.id for i in index], pool_margins[index],
                               selection_size(len(index), ratio, count))
            keep[index] = top
        return keep

    def _with_crossfit_margins(self, pool: list[Example], pool_margins: np.ndarray) -> np.ndarray:
        """Offline pairs are ranked by out-of-fold IRM: each scored by a warm-up model that never saw it."""
        if self.state.crossfit is None:
            self.state.crossfit = self._crossfit_margins()
        result = pool_margins.copy()
        for index, example in enumerate(pool):
            if example.pair.id in self.state.crossfit:
                result[index] = self.state.crossfit[example.pair.id]
        return result

    def _crossfit_margins(self) -> dict[str, float]:
        start, folds = time.perf_counter(), self.config.crossfit_folds
        order = sorted(self.offline, key=lambda e: e.pair.id)
        random.Random(self.config.seed).shuffle(order)
        result: dict[str, float] = {}
        for fold in range(folds):
            held = order[fold::folds]
            held_ids = {e.pair.id for e in held}
            model = self._load(0)
            self._train(model, [e for e in order if e.pair.id not in held_ids], epochs=1,
                        iteration=f"crossfit-{fold + 1}/{folds}", reference=0)
            result.update(zip([e.pair.id for e in held], self._margins_under(model, held)))
            del model
        self._current["seconds_crossfit"] = time.perf_counter() - start
        return result

    def _margins_under(self, model, examples: list[Example]) -> np.ndarray:
        """IRM of pairs under a model outside the bank (a cross-fitting fold model), reference = SFT."""
        def reward(sequences):
            num_tokens = np.array([len(c) for _, c in sequences])
            reference = None if self.daa.reference_free else self.bank.logps(0, sequences)
            policy = sequence_logps(model, sequences, batch_size=self.config.scoring_batch_size)
            return self.daa.implicit_reward(self.config.beta, policy, reference, num_tokens)
        return reward([e.chosen for e in examples]) - reward([e.rejected for e in examples])

    # -- self-review ----------------------------------------------------------------------------

    def _review_iterate(self, t: int) -> dict:
        """Held-out diagnostics of iterate t (t = 0: the SFT model) and its guard score."""
        review: dict = {}
        if not self.validation:
            return review
        chosen = self.reward.of_iterate(t, [e.chosen for e in self.validation])
        rejected = self.reward.of_iterate(t, [e.rejected for e in self.validation])
        review["val_irm_accuracy"] = preference_accuracy(margins(chosen, rejected))
        if self._bootstraps:  # how the labeller of the next bootstrapping would order held-out pairs
            labels = self.labeller(t, [e.pair.prompt for e in self.validation],
                                   [[e.pair.chosen, e.pair.rejected] for e in self.validation])
            review["labeller_accuracy"] = preference_accuracy(np.array([r[0] - r[1] for r in labels]))
        responses = self._validation_responses()
        review["val_response_tokens"] = float(np.mean([c.num_tokens for c in responses]))
        if t > 0 and self.state.sft_review.get("val_response_tokens"):
            review["length_drift"] = review["val_response_tokens"] / self.state.sft_review["val_response_tokens"]
        score = self._guard_score(t, responses, review)
        if score is not None:
            review["guard_score"] = self.state.guard_scores[t] = score
        return review

    def _validation_responses(self):
        prompts = _distinct_prompts(self.validation)
        ids = [self.pair_tokenizer.prompt_ids(p) for p in prompts]
        params = SamplingParams(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=self.config.max_new_tokens)
        completions = self._generate(ids, params, seed=self.config.seed, description="reviewing")
        self._validation_texts = (prompts, [c[0].text for c in completions])
        return [c[0] for c in completions]

    def _generate(self, prompt_ids: list[list[int]], params: SamplingParams, *, seed: int, description: str):
        """Sample from the policy; in a multi-process run each rank samples its share of the prompts."""
        mine = distributed.shard(len(prompt_ids))
        seed = seed + 7919 * distributed.rank()
        if self.config.generation_backend == "vllm":
            samples = self._vllm_engine().generate([prompt_ids[i] for i in mine], params, seed=seed)
        else:
            samples = generate_completions(self.policy, self.tokenizer, [prompt_ids[i] for i in mine], params,
                                           batch_size=self.config.generation_batch_size, seed=seed,
                                           description=description)
        return distributed.gather(mine, samples, len(prompt_ids))

    def _vllm_engine(self):
        """The vLLM engine, started once; it samples from the policy's current weights, pushed in each time."""
        if self._vllm is None:
            from sera.generation_vllm import VLLMGenerator

            self._vllm = VLLMGenerator(self.policy, self.tokenizer, seed=self.config.seed,
                                       gpu_memory_utilization=self.config.vllm_gpu_memory_utilization)
        else:
            self._vllm.refresh(self.policy)
        return self._vllm

    def _guard_score(self, t: int, responses, review: dict) -> float | None:
        guard = self.config.guard
        if guard == "irm":
            return review["val_irm_accuracy"]
        if guard.startswith("judge:"):
            if not hasattr(self, "_guard_judge"):
                from sera.eval.judges import build_judge

                self._guard_judge = build_judge(guard.split(":", 1)[1])
            prompts, texts = self._validation_texts
            if self._guard_judge.pointwise:
                return float(np.mean(self._guard_judge.score([prompt_text(p) for p in prompts], texts)))
            if t == 0:
                self.state.sft_responses = texts
                return 0.5
            outcomes = self._guard_judge.compare([prompt_text(p) for p in prompts], texts, self.state.sft_responses)
            return float(np.mean([(o + 1) / 2 for o in outcomes]))
        return None

    def _displacement(self, iterate: int, prompts: list, texts: list[list[str]]) -> float | None:
        """Within-prompt rank correlation of implicit reward vs reference likelihood of the samples."""
        groups = [(p, [as_response(p, x) for x in ts]) for p, ts in zip(prompts, texts) if len(set(ts)) > 1]
        if not groups:
            return None
        sequences, owners = candidate_sequences(self.pair_tokenizer, [p for p, _ in groups], [c for _, c in groups])
        implicit = self.reward.of_iterate(iterate, sequences)
        reference = self.bank.logps(0 if self.daa.reference_free else self.reward.reference_index(iterate),
                                    sequences)
        return mean_within_group_spearman([implicit[owners == g] for g in range(len(groups))],
                                          [reference[owners == g] for g in range(len(groups))])

    def _final_iterate(self) -> int:
        last = self.state.iterations[-1]["iteration"]
        if self.config.guard == "none" or not self.state.guard_scores:
            return last
        scores = self.state.guard_scores
        best = max(sorted(scores), key=lambda t: scores[t])  # the earliest of equally good iterates
        if scores[best] <= scores.get(last, float("-inf")):
            return last  # the last iterate (the paper's output) unless another is strictly better
        if best != last:
            self.state.warnings.append(f"guard: iterate {best} scored best ({scores[best]:.3f} vs "
                                       f"{scores[last]:.3f} for the last); final/ holds iterate {best}")
        return best

    # -- data and bookkeeping -------------------------------------------------------------------

    def _hold_out(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """Split off validation pairs by prompt, so no held-out prompt is trained on or sampled from."""
        ratio = self.config.validation_ratio
        if ratio == 0:
            return examples, []
        prompts = sorted({json.dumps(e.pair.prompt, sort_keys=True) for e in examples})
        random.Random(self.config.seed).shuffle(prompts)
        wanted = min(self.config.max_validation_pairs, max(1, round(ratio * len(examples))))
        held, count = set(), 0
        for prompt in prompts:
            if count >= wanted:
                break
            held.add(prompt)
            count += sum(json.dumps(e.pair.prompt, sort_keys=True) == prompt for e in examples)
        split = [json.dumps(e.pair.prompt, sort_keys=True) in held for e in examples]
        train = [e for e, h in zip(examples, split) if not h]
        if not train:
            raise SeraInputError(f"{self.config.dataset}: too few pairs to hold out a validation slice; "
                                 "set --validation-ratio 0")
        return train, [e for e, h in zip(examples, split) if h]

    def _bootstrap_prompts(self) -> tuple[list[tuple[str, object, list[int]]], int]:
        """Distinct offline prompts (id of their first pair), optionally a seeded subset."""
        seen, prompts, too_long = set(), [], 0
        for example in self.offline:
            key = json.dumps(example.pair.prompt, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            ids = self.pair_tokenizer.prompt_ids(example.pair.prompt)
            if len(ids) >= self.config.max_length:
                too_long += 1
                continue
            prompts.append((example.pair.id, example.pair.prompt, ids))
        limit = self.config.max_bootstrap_prompts
        if limit is not None and limit < len(prompts):
            prompts = sorted(random.Random(self.config.seed).sample(prompts, limit), key=lambda p: p[0])
        return prompts, too_long

    def _examples(self, pairs: list[PreferencePair], skipped: Counter) -> list[Example]:
        examples = []
        for pair in pairs:
            tokens = self.pair_tokenizer.pair(pair)
            if tokens is None:
                skipped["prompt_too_long"] += 1
                continue
            examples.append(Example(pair, tokens))
        return examples

    def _load(self, index: int):
        if self.config.lora_r:  # views of the one in-memory model: base (adapter off) or base + iterate's adapter
            return iterate_view(self.policy, None if index == 0 else self.dir.model(index), f"iter_{index}")
        path = self.model_path if index == 0 else str(self.dir.model(index))
        model = load_model(path, dtype=self.config.dtype, trust_remote_code=self.config.trust_remote_code,
                           gguf_file=self.config.gguf_file if index == 0 else None)
        model.eval()
        return model

    def _load_base(self, adapter=None):
        """The SFT model; with --lora-r wrapped in a fresh adapter, or in `adapter` (a saved iterate's, to resume)."""
        cfg = self.config
        model = load_model(self.model_path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                           gguf_file=cfg.gguf_file)
        base = {"model": cfg.model, "gguf_file": cfg.gguf_file}
        if cfg.lora_r and adapter is not None:
            model = load_lora_policy(model, adapter, base)
        elif cfg.lora_r:
            model = add_lora(model, lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules),
                             base)
        model.eval()
        return model

    def _end_iteration(self, t: int, result) -> None:
        self.bank.hold(t, self.policy)
        needed = {0, t, t - 1} if self.config.reference == "sft" or self.daa.reference_free else {t, t - 1}
        for index in list(range(t + 1)):
            if index not in needed:
                self.bank.forget(index)
        entry = {"iteration": t, **self._current, "seconds_training": result.seconds,
                 "train_steps": result.steps, "final_loss": result.final_loss}
        review_start = time.perf_counter()
        entry.update(self._review_iterate(t))
        entry["seconds_reviewing"] = time.perf_counter() - review_start
        for key in ("seconds_scoring", "seconds_generating"):
            entry.setdefault(key, 0.0)
        for warning in warnings_for(entry, labeller=self.config.bootstrap_labeller):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
            self.state.warnings.append(warning)
        self.state.iterations.append(entry)
        self.tracker.log_iteration(entry, self.state.warnings)  # [tracking hook] at the run-wide step where t ended
        append_jsonl(self.dir.metrics, {"event": "iteration_end", **entry})
        self._current = {}
        self.state.completed = t
        self._save_state()

    # -- resume ---------------------------------------------------------------------------------

    def _save_state(self) -> None:
        """Everything a resumed run needs beyond the saved iterate (written last, atomically)."""
        self.state.seconds += time.perf_counter() - self._state_clock
        self._state_clock = time.perf_counter()
        self.state.save(self.dir.state)

    def _restore(self, state: RunState) -> None:
        self.state = state
        completed = state.completed
        if completed and self.config.method != "daa":
            self.policy = self._load_base(adapter=self.dir.model(completed)) if self.config.lora_r \
                else self._load(completed)
            self.bank.hold(completed, self.policy)
            if self.config.carry_optimizer:
                self.optimizer = build_optimizer(self.policy, dpo_config(self.config, self.daa, 1, str(self.dir.root)))
                self.optimizer.load_state_dict(load_optimizer_state(self.dir.optimizer))
        append_jsonl(self.dir.metrics, {"event": "resumed", "after_iteration": completed})
        console.print(f"resuming {self.dir.root} after iteration {completed}", highlight=False)

    def _prepare_output_dir(self, resume: bool) -> None:
        root = self.dir.root
        if resume:
            if self.dir.summary.exists():
                raise SeraInputError(f"--resume {root}: the run already finished (summary.json)")
            return
        if root.exists() and not root.is_dir():
            raise SeraInputError(f"--output-dir {root}: exists and is not a directory")
        if self.dir.summary.exists():
            raise SeraInputError(f"--output-dir {root}: already holds a finished run (summary.json); "
                                 "choose a new directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
            if distributed.is_main():
                self.dir.metrics.unlink(missing_ok=True)
            write_yaml(self.dir.config, self.config.to_dict())
        except OSError as exc:
            raise SeraInputError(f"--output-dir {root}: cannot write ({exc.strerror})") from exc


class _SaveEachEpoch(TrainerCallback):
    """Plain-DAA runs keep each epoch's model as iter_<epoch>/model, to compare with SeRA's iterates."""

    def __init__(self, run: SeraRun) -> None:
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


def _check_vllm_can_run() -> None:
    """Fail before any work is done when --generation-backend vllm cannot run here."""
    from sera.generation_vllm import vllm_available

    reason = vllm_available()
    if reason is None and distributed.world_size() > 1:
        reason = "it runs in one process; launch without accelerate/torchrun, or use the hf backend"
    if reason:
        raise SeraInputError(f"--generation-backend vllm: {reason}")


def _distinct_prompts(examples: list[Example]) -> list:
    seen, prompts = set(), []
    for e in examples:
        key = json.dumps(e.pair.prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(e.pair.prompt)
    return prompts


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None

"""The SeRA loop: Algorithm 1 of the paper, as `sera-method.md` specifies it.

    theta_1 = train(theta_0, D_offline)                      warm-up, 1 epoch
    for t = 2..T:
        D_gen = bootstrap(theta_{t-1})                       component 2, labelled by r_ens
        pool  = D_offline + D_gen
        D_sel = top-K(pool) by IRM of r_ens                  components 1 and 3
        theta_t = train(theta_{t-1}, D_sel)                  1 epoch of the DAA's own loss

`run()` below is that loop; `SeraRun` holds the state it needs (models, caches, the run directory)
and implements each step.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback, set_seed

from sera.bootstrap import make_pairs
from sera.config import TrainConfig
from sera.daa import get_daa
from sera.data import PreferencePair, load_pairs
from sera.errors import SeraInputError, SeraRuntimeError
from sera.generation import SamplingParams, generate_completions
from sera.io import append_jsonl, write_json, write_jsonl, write_yaml
from sera.models import load_model, load_tokenizer, save_model
from sera.rewards import ImplicitReward, margins
from sera.run_dir import RunDirectory
from sera.scoring import LogProbBank
from sera.selection import select_top_k, selection_size
from sera.tokenization import PairTokenizer, TokenizedPair
from sera.training import train_pass


def run(config: TrainConfig) -> dict:
    """Run SeRA (or, with method="daa", the plain DAA) and return the summary it writes."""
    run = SeraRun(config)
    if config.method == "daa":
        run.train_plain_daa(epochs=config.iterations)
        return run.finish()
    for t in range(1, config.iterations + 1):
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

    @property
    def chosen(self) -> tuple[list[int], list[int]]:
        return self.tokens.prompt_ids, self.tokens.chosen_ids

    @property
    def rejected(self) -> tuple[list[int], list[int]]:
        return self.tokens.prompt_ids, self.tokens.rejected_ids


class SeraRun:
    """State of one run and the steps of Algorithm 1."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.started = time.perf_counter()
        self.dir = RunDirectory(config.output_dir)
        self._prepare_output_dir()
        set_seed(config.seed)
        self.daa = get_daa(config.daa)
        self.tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        self.pair_tokenizer = PairTokenizer(self.tokenizer, config.max_length)
        loaded = load_pairs(config.dataset, split=config.dataset_split, skip_invalid=config.skip_invalid)
        self.data_report = {"rows_read": loaded.rows_read, "skipped": Counter(loaded.skipped)}
        self.offline = self._examples(loaded.pairs, self.data_report["skipped"])
        if not self.offline:
            raise SeraInputError(f"{config.dataset}: every pair's prompt is longer than --max-length "
                                 f"{config.max_length}")
        self.data_report["offline_pairs"] = len(self.offline)
        self.policy = self._load(0)
        self.bank = LogProbBank(self._load, config.scoring_batch_size)
        self.bank.hold(0, self.policy)
        self.reward = ImplicitReward(self.daa, config.beta, self.bank, config.reference)
        self.iterations: list[dict] = []
        self._current: dict = {}

    # -- the steps of Algorithm 1 -------------------------------------------------------------

    def bootstrap(self, t: int) -> list[Example]:
        """Component 2: N samples per offline prompt from theta_{t-1}; best vs worst by r_ens."""
        prompts, too_long = self._bootstrap_prompts()
        params = SamplingParams(self.config.num_samples, self.config.temperature, self.config.top_p,
                                self.config.max_new_tokens)
        start = time.perf_counter()
        samples = generate_completions(self.policy, self.tokenizer, [ids for _, _, ids in prompts], params,
                                       batch_size=self.config.generation_batch_size, seed=self.config.seed + t,
                                       description=f"iteration {t}: sampling")
        self._current["seconds_generating"] = time.perf_counter() - start
        scoring_before = self.bank.seconds
        result = make_pairs([(pid, p) for pid, p, _ in prompts], [[c.text for c in s] for s in samples],
                            self._implicit_labeller(t - 1), iteration=t)
        self._current["seconds_scoring"] = self.bank.seconds - scoring_before
        write_jsonl(self.dir.generated(t), result.records)
        skipped = Counter(result.skipped)
        if too_long:
            skipped["prompt_too_long"] = too_long
        self._current.update(generated=len(result.pairs), bootstrap_prompts=len(prompts),
                             bootstrap_skipped=dict(skipped))
        return self._examples(result.pairs, Counter())

    def select(self, t: int, pool: list[Example]) -> list[Example]:
        """Components 1 + 3: rank the pool by the IRM of r_ens and keep the top K."""
        scoring_before = self.bank.seconds
        gamma = self.config.ensemble_gamma
        pool_margins = margins(self.reward.ensembled(t - 1, [e.chosen for e in pool], gamma),
                               self.reward.ensembled(t - 1, [e.rejected for e in pool], gamma))
        if not np.all(np.isfinite(pool_margins)):
            raise SeraRuntimeError(f"iteration {t}: implicit reward margins are not finite (NaN/inf log-probs)")
        keep = self._keep_mask(pool, pool_margins)
        self._current["seconds_scoring"] = self._current.get("seconds_scoring", 0.0) + (
            self.bank.seconds - scoring_before)
        write_jsonl(self.dir.selection(t), (
            {"id": e.pair.id, "source": e.pair.source, "margin": float(m), "selected": bool(k)}
            for e, m, k in zip(pool, pool_margins, keep)))
        generated = np.array([e.pair.source == "generated" for e in pool])
        self._current.update(
            pool_size=len(pool), selected=int(keep.sum()), dropped=int((~keep).sum()),
            selected_generated=int((keep & generated).sum()),
            mean_margin_selected=_mean(pool_margins[keep]), mean_margin_dropped=_mean(pool_margins[~keep]))
        return [e for e, k in zip(pool, keep) if k]

    def train_iteration(self, t: int, examples: list[Example]) -> None:
        """theta_t = one epoch of the DAA's loss from theta_{t-1} on `examples`."""
        self._current.setdefault("pool_size", len(examples))
        self._current.setdefault("selected", len(examples))
        result = self._train(examples, epochs=1, iteration=t, reference=self.reward.reference_index(t))
        save_model(self.policy, self.tokenizer, self.dir.model(t))
        self._end_iteration(t, result)

    def train_plain_daa(self, epochs: int) -> None:
        """The baseline: the DAA on every offline pair for `epochs` epochs (one trainer, one schedule)."""
        self._current.update(pool_size=len(self.offline), selected=len(self.offline), epochs=epochs)
        result = self._train(self.offline, epochs=epochs, iteration=1, reference=0, save_each_epoch=True)
        self._end_iteration(epochs, result)

    def finish(self) -> dict:
        save_model(self.policy, self.tokenizer, self.dir.final_model)
        summary = {
            "method": self.config.method, "daa": self.config.daa,
            "data": {**self.data_report, "skipped": dict(self.data_report["skipped"])},
            "iterations": self.iterations,
            "final_model": str(self.dir.final_model),
            "seconds_total": time.perf_counter() - self.started,
        }
        write_json(self.dir.summary, summary)
        return summary

    # -- helpers ------------------------------------------------------------------------------

    def _train(self, examples: list[Example], *, epochs: int, iteration: int, reference: int,
               save_each_epoch: bool = False):
        scoring_before = self.bank.seconds
        rows = self._training_rows(examples, reference)
        self._current["seconds_scoring"] = self._current.get("seconds_scoring", 0.0) + (
            self.bank.seconds - scoring_before)
        callbacks = [_SaveEachEpoch(self)] if save_each_epoch else []
        return train_pass(self.policy, self.tokenizer, rows, self.config, self.daa, epochs=epochs,
                          iteration=iteration, metrics_path=self.dir.metrics, callbacks=callbacks)

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
        return [{"prompt_ids": e.tokens.prompt_ids, "chosen_ids": e.tokens.chosen_ids,
                 "rejected_ids": e.tokens.rejected_ids, "ref_chosen_logps": float(rc),
                 "ref_rejected_logps": float(rr)} for e, rc, rr in zip(examples, ref_chosen, ref_rejected)]

    def _keep_mask(self, pool: list[Example], pool_margins: np.ndarray) -> np.ndarray:
        if not self.config.selection:
            return np.ones(len(pool), dtype=bool)
        ranked = np.array([self.config.selection_pool == "pool" or e.pair.source == "offline" for e in pool])
        k = selection_size(int(ranked.sum()), self.config.selection_ratio, self.config.selection_count)
        keep = ~ranked  # pairs outside the ranking (generated ones under `offline`) are all kept
        ranked_index = np.flatnonzero(ranked)
        top = select_top_k([pool[i].pair.id for i in ranked_index], pool_margins[ranked_index], k)
        keep[ranked_index[top]] = True
        return keep

    def _implicit_labeller(self, iterate: int):
        """The paper's labeller: the ensembled implicit reward of the current iterate."""
        def label(prompts, candidates):
            sequences, owners = [], []
            for index, (prompt, responses) in enumerate(zip(prompts, candidates)):
                for response in responses:
                    tokens = self.pair_tokenizer.pair(PreferencePair("", prompt, response, response))
                    sequences.append((tokens.prompt_ids, tokens.chosen_ids))
                    owners.append(index)
            rewards = self.reward.ensembled(iterate, sequences, self.config.ensemble_gamma)
            owners = np.array(owners)
            return [rewards[owners == i] for i in range(len(prompts))]
        return label

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
        path = self.config.model if index == 0 else str(self.dir.model(index))
        model = load_model(path, dtype=self.config.dtype, trust_remote_code=self.config.trust_remote_code)
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
        for key in ("seconds_scoring", "seconds_generating"):
            entry.setdefault(key, 0.0)
        self.iterations.append(entry)
        append_jsonl(self.dir.metrics, {"event": "iteration_end", **entry})
        self._current = {}

    def _prepare_output_dir(self) -> None:
        root = self.dir.root
        if root.exists() and not root.is_dir():
            raise SeraInputError(f"--output-dir {root}: exists and is not a directory")
        if self.dir.summary.exists():
            raise SeraInputError(f"--output-dir {root}: already holds a finished run (summary.json); "
                                 "choose a new directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.dir.metrics.unlink(missing_ok=True)
            write_yaml(self.dir.config, self.config.to_dict())
        except OSError as exc:
            raise SeraInputError(f"--output-dir {root}: cannot write ({exc.strerror})") from exc


class _SaveEachEpoch(TrainerCallback):
    """Plain-DAA runs keep each epoch's model as iter_<epoch>/model, to compare with SeRA's iterates."""

    def __init__(self, run: SeraRun) -> None:
        self.run = run

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        if epoch >= 1:
            save_model(self.run.policy, self.run.tokenizer, self.run.dir.model(epoch))


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None

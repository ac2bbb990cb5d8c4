"""The baselines' steps on a running :class:`sera.session.RunSession`: its data, sampler, implicit reward and run
directory, so that a baseline and SeRA differ only in the decisions of :mod:`.curri_dpo` and :mod:`.spa`.

    curriculum(run)              Curri-DPO's stages of the run's offline pairs (iter_<t>/curriculum.jsonl)
    curriculum_stage(run, s, t)  stage t, and its rating gaps for the iteration's record  -> CurriculumStage
    spa_split(run)               SPA's seed pairs and each later iteration's share of prompts
    spa_pairs(run, t, share)     SPA's self-labelled pairs for iteration t (iter_<t>/generated.jsonl) -> SpaLabelled
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sera.baselines import curri_dpo, spa
from sera.bootstrap import make_pairs
from sera.errors import SeraRuntimeError
from sera.examples import Example
from sera.generation import SamplingParams
from sera.io import write_jsonl
from sera.labellers import candidate_sequences

if TYPE_CHECKING:  # pragma: no cover
    from sera.session import RunSession


@dataclass
class CurriculumStage:
    """Curri-DPO's stage t: its pairs and their rating gaps."""

    examples: list[Example]
    gaps: list[float]
    seconds_scoring: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"curriculum_gap_mean": float(np.mean(self.gaps)), "curriculum_gap_min": float(np.min(self.gaps)),
                "curriculum_gap_max": float(np.max(self.gaps))}


@dataclass
class SpaLabelled:
    """SPA's iteration t: the policy's samples labelled by its DPO implicit reward, low-confidence ones smoothed."""

    examples: list[Example]
    prompts: int
    skipped: dict[str, int]
    smoothed: int
    confidence_mean: float | None
    seconds_generating: float
    seconds_scoring: float

    def summary(self) -> dict[str, Any]:
        return {"spa_prompts": self.prompts, "generated": len(self.examples), "bootstrap_skipped": self.skipped,
                "spa_smoothed": self.smoothed, "spa_confidence_mean": self.confidence_mean,
                "seconds_generating": self.seconds_generating}


def curriculum(run: "RunSession") -> list[list[Example]]:
    """Best-vs-each-other pairs of the offline (not held-out) data, cut into one stage per iteration."""
    by_id = {e.pair.id: e for e in run.offline}
    rated = curri_dpo.best_vs_each_other(curri_dpo.rated_pairs([e.pair for e in run.offline], run.pair_meta))
    stages = curri_dpo.curriculum_stages(rated, run.config.iterations, run.config.curri_order)
    for t, stage in enumerate(stages, start=1):
        write_jsonl(run.dir.iteration(t) / "curriculum.jsonl",
                    ({"id": c.pair.id, "rank": c.rank, "stage": t, "rating_gap": c.pair.gap} for c in stage))
    run.data_report["curriculum_pairs"] = len(rated)
    return [[by_id[c.pair.id] for c in stage] for stage in stages]


def curriculum_stage(run: "RunSession", stages: list[list[Example]], t: int) -> CurriculumStage:
    """Stage t, with its rating gaps."""
    stage = stages[t - 1]
    return CurriculumStage(stage, [g.gap for g in curri_dpo.rated_pairs([e.pair for e in stage], run.pair_meta)])


def spa_split(run: "RunSession") -> tuple[list[Example], list[set[str]]]:
    """The seed (every labelled pair of the seed prompts) and each later iteration's share of the other prompts."""
    cfg = run.config
    seed_keys, shares = spa.split_prompts([e.pair.prompt for e in run.offline], cfg.spa_seed_ratio, cfg.iterations,
                                          cfg.seed)
    seed = [e for e in run.offline if spa.prompt_key(e.pair.prompt) in seed_keys]
    run.data_report.update(spa_seed_pairs=len(seed), spa_seed_prompts=len(seed_keys),
                           spa_unlabelled_prompts=sum(len(s) for s in shares))
    return seed, shares


def spa_pairs(run: "RunSession", t: int, share: set[str]) -> SpaLabelled:
    """Sample N responses per prompt of `share` (at most `max_bootstrap_prompts` of them, a seeded subset, as SeRA
    samples) from theta_{t-1}; label best vs worst by its DPO implicit reward against theta_{t-2} (the run's
    reference is the previous iterate); smooth the low-confidence labels."""
    cfg = run.config
    prompts = _share_prompts(run, share)
    if cfg.max_bootstrap_prompts is not None and cfg.max_bootstrap_prompts < len(prompts):  # SeRA's sampling budget
        prompts = sorted(random.Random(cfg.seed + t).sample(prompts, cfg.max_bootstrap_prompts), key=lambda p: p[0])
    params = SamplingParams(cfg.num_samples, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    start = time.perf_counter()
    samples = run.generate([ids for _, _, ids in prompts], params, seed=cfg.seed + t,
                           description=f"iteration {t}: sampling (spa)")
    seconds_generating = time.perf_counter() - start
    scoring_before = run.bank.seconds
    result = make_pairs([(pid, p) for pid, p, _ in prompts], [[c.text for c in s] for s in samples],
                        _ImplicitRewardOf(run, t - 1), iteration=t)
    seconds_scoring = run.bank.seconds - scoring_before
    confidences = spa.confidence(np.array([r["chosen_reward"] - r["rejected_reward"] for r in result.records]))
    eps = spa.smoothing(confidences, cfg.spa_label_smoothing, lowest=cfg.spa_smooth_lowest,
                        threshold=cfg.spa_confidence_threshold)
    for record, c, e in zip(result.records, confidences, eps):
        record.update(confidence=float(c), label_smoothing=float(e))
    write_jsonl(run.dir.generated(t), result.records)
    smoothing_by_id = {r["id"]: r["label_smoothing"] for r in result.records}
    examples = [dataclasses.replace(e, label_smoothing=smoothing_by_id[e.pair.id]) for e in run.examples(result.pairs)]
    if not examples:
        raise SeraRuntimeError(f"iteration {t}: SPA labelled no pair (every prompt's samples were identical or "
                               "tied); raise --num-samples or --temperature")
    return SpaLabelled(examples, prompts=len(prompts), skipped=dict(result.skipped), smoothed=int((eps > 0).sum()),
                       confidence_mean=float(confidences.mean()) if len(confidences) else None,
                       seconds_generating=seconds_generating, seconds_scoring=seconds_scoring)


def _share_prompts(run: "RunSession", share: set[str]) -> list[tuple[str, Any, list[int]]]:
    prompts, seen = [], set()
    for example in run.offline:
        key = spa.prompt_key(example.pair.prompt)
        if key in share and key not in seen:
            seen.add(key)
            ids = run.pair_tokenizer.prompt_ids(example.pair.prompt)
            if len(ids) < run.config.max_length:
                prompts.append((example.pair.id, example.pair.prompt, ids))
    return prompts


class _ImplicitRewardOf:
    """Labeller: the run's implicit reward of iterate `iterate` (reference: the iterate before it), no ensemble."""

    def __init__(self, run: "RunSession", iterate: int) -> None:
        self.run, self.iterate = run, iterate

    def __call__(self, prompts, candidates):
        sequences, owners = candidate_sequences(self.run.pair_tokenizer, prompts, candidates)
        rewards = self.run.reward.of_iterate(self.iterate, sequences)
        return [rewards[owners == i] for i in range(len(prompts))]

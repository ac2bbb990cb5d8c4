"""Self-review: how each iterate does on held-out pairs, the iteration guard, and which iterate the run returns.

After every iteration (and once for the SFT model, iterate 0) the run measures, on validation pairs it
never trains on or samples from: the implicit reward's preference accuracy, how the next bootstrapping's
labeller would order them, the length of greedy responses, and with `--guard` a score to keep the best
iterate. :mod:`sera.diagnostics` turns these into warnings.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from sera.bootstrap import as_response
from sera.diagnostics import mean_within_group_spearman, preference_accuracy
from sera.examples import distinct_prompts
from sera.generation import SamplingParams
from sera.labellers import candidate_sequences, prompt_text
from sera.records import Review
from sera.rewards import margins

if TYPE_CHECKING:  # pragma: no cover
    from sera.session import RunSession


def review_iterate(session: "RunSession", t: int) -> Review:
    """Held-out diagnostics of iterate t (t = 0: the SFT model) and its guard score."""
    start = time.perf_counter()
    validation, values = session.validation, {}
    if not validation:
        return Review(values)
    chosen = session.reward.of_iterate(t, [e.chosen for e in validation])
    rejected = session.reward.of_iterate(t, [e.rejected for e in validation])
    values["val_irm_accuracy"] = preference_accuracy(margins(chosen, rejected))
    if session.bootstraps:  # how the labeller of the next bootstrapping would order held-out pairs
        labels = session.labeller(t, [e.pair.prompt for e in validation],
                                  [[e.pair.chosen, e.pair.rejected] for e in validation])
        values["labeller_accuracy"] = preference_accuracy(np.array([r[0] - r[1] for r in labels]))
    prompts, responses = _greedy_responses(session)
    values["val_response_tokens"] = float(np.mean([c.num_tokens for c in responses]))
    if t > 0 and session.state.sft_review.get("val_response_tokens"):
        values["length_drift"] = values["val_response_tokens"] / session.state.sft_review["val_response_tokens"]
    score = guard_score(session, t, prompts, [c.text for c in responses], values)
    if score is not None:
        values["guard_score"] = session.state.guard_scores[t] = score
    return Review(values, seconds_reviewing=time.perf_counter() - start)


def _greedy_responses(session: "RunSession"):
    prompts = distinct_prompts(session.validation)
    ids = [session.pair_tokenizer.prompt_ids(p) for p in prompts]
    params = SamplingParams(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=session.config.max_new_tokens)
    completions = session.generate(ids, params, seed=session.config.seed, description="reviewing")
    return prompts, [c[0] for c in completions]


def guard_score(session: "RunSession", t: int, prompts: list, texts: list[str], values: dict) -> float | None:
    """`--guard irm`: the held-out IRM accuracy; `--guard judge:SPEC`: the judge's mean score of the greedy
    responses (a pairwise judge: their win rate against the SFT model's, kept in the run state for resume)."""
    guard = session.config.guard
    if guard == "irm":
        return values["val_irm_accuracy"]
    if not guard.startswith("judge:"):
        return None
    if session.guard_judge is None:  # built at its first use, once per run
        from sera.eval.judges import build_judge

        session.guard_judge = build_judge(guard.split(":", 1)[1])
    judge, questions = session.guard_judge, [prompt_text(p) for p in prompts]
    if judge.pointwise:
        return float(np.mean(judge.score(questions, texts)))
    if t == 0:
        session.state.sft_responses = texts
        return 0.5
    outcomes = judge.compare(questions, texts, session.state.sft_responses)
    return float(np.mean([(o + 1) / 2 for o in outcomes]))


def displacement(session: "RunSession", iterate: int, prompts: list, texts: list[list[str]]) -> float | None:
    """Within-prompt rank correlation of implicit reward vs reference likelihood of the samples (likelihood
    displacement: a labeller that prefers what the reference finds unlikely is not judging quality)."""
    groups = [(p, [as_response(p, x) for x in ts]) for p, ts in zip(prompts, texts) if len(set(ts)) > 1]
    if not groups:
        return None
    sequences, owners = candidate_sequences(session.pair_tokenizer, [p for p, _ in groups], [c for _, c in groups])
    implicit = session.reward.of_iterate(iterate, sequences)
    reference_index = 0 if session.daa.reference_free else session.reward.reference_index(iterate)
    reference = session.bank.logps(reference_index, sequences)
    return mean_within_group_spearman([implicit[owners == g] for g in range(len(groups))],
                                      [reference[owners == g] for g in range(len(groups))])


def final_iterate(session: "RunSession") -> int:
    """The iterate the run returns: the last (the paper's output) unless the guard scored another strictly better
    (the earliest of equally good ones; the SFT model included)."""
    last = session.state.iterations[-1]["iteration"]
    scores = session.state.guard_scores
    if session.config.guard == "none" or not scores:
        return last
    best = max(sorted(scores), key=lambda t: scores[t])
    if scores[best] <= scores.get(last, float("-inf")):
        return last
    session.state.warnings.append(f"guard: iterate {best} scored best ({scores[best]:.3f} vs "
                                  f"{scores[last]:.3f} for the last); final/ holds iterate {best}")
    return best

"""The SeRA loop: Algorithm 1 of the paper, as `sera-method.md` specifies it.

    theta_1 = train(theta_0, D_offline)                      warm-up, 1 epoch
    for t = 2..T:
        D_gen = bootstrap(theta_{t-1})                       component 2, labelled by r_ens
        pool  = D_offline + D_gen
        D_sel = top-K(pool) by IRM of r_ens                  components 1 and 3
        theta_t = train(theta_{t-1}, D_sel)                  1 epoch of the DAA's own loss

`run()` below is that loop. The run's resources and progress live in a :class:`RunSession`; each step
(:mod:`sera.steps`) returns what it decided, and the iteration's record is built from those results.
After every iteration the run reviews itself on held-out pairs (:mod:`sera.review`) and, with
`--guard`, remembers the best iterate. The baselines (docs/baselines.md) run through the same steps.
"""

from __future__ import annotations

import dataclasses

from sera import run_lock
from sera.baselines import BASELINES_ON_PREVIOUS_REFERENCE
from sera.baselines import steps as baseline
from sera.config import SeraConfig
from sera.records import IterationRecord
from sera.review import final_iterate, review_iterate
from sera.session import RunInputs, RunSession
from sera.steps import bootstrap, run_schedule, select, train, train_plain

__all__ = ["RunInputs", "run"]


def run(config: SeraConfig, resume: bool = False, inputs: RunInputs = RunInputs()) -> dict:
    """Run SeRA (or a baseline: `daa`, `curri-dpo`, `spa`; docs/baselines.md) and return the summary it writes.

    With `resume`, continue a run in `config.output_dir` after its last completed iteration. The output
    directory is locked for the run's whole life (sera.run_lock)."""
    with run_lock.hold(config.output_dir, "--resume" if resume else "--output-dir"):
        if config.method in BASELINES_ON_PREVIOUS_REFERENCE:
            config = dataclasses.replace(config, reference="previous")
        session = RunSession(config, resume=resume, inputs=inputs)
        if not session.state.completed:  # the SFT model's held-out review, which every iterate is compared with
            session.state.sft_review = review_iterate(session, 0).values
        session.open_tracker()
        if config.method == "sera":
            sera(session)
        else:
            BASELINES[config.method](session)
        return session.finish(final_iterate(session))


def sera(run: RunSession) -> None:
    """Algorithm 1, from the iteration after the last completed one."""
    cfg = run.config
    for t in range(run.state.completed + 1, cfg.iterations + 1):
        if t == 1 and cfg.warmup:                                          # warm-up on all offline pairs
            end_iteration(run, t, [], run.offline)
            continue
        generated = bootstrap(run, t) if cfg.bootstrap else None          # component 2
        pool = run.offline + (generated.examples if generated else [])
        selection = select(run, t, pool)                                  # components 1 + 3
        end_iteration(run, t, [s for s in (generated, selection) if s], selection.kept)


def end_iteration(run: RunSession, t: int, steps: list, examples: list) -> None:
    """theta_t = one epoch on `examples` from theta_{t-1}; then review it and record the iteration."""
    trained = train(run, t, examples, run_schedule(run, t, len(examples)))
    run.hold_iterate(t)
    run.end_iteration(IterationRecord(t, steps=steps, trained=trained, review=review_iterate(run, t)))


def plain_daa(run: RunSession) -> None:
    """The DAA for `iterations` epochs on every offline pair, or for the budget of the run it is matched to."""
    if run.state.completed:
        return
    trained = train_plain(run, run.config.iterations, budget=run.budget_to_match)
    run.hold_iterate(trained.epochs)
    run.end_iteration(IterationRecord(trained.epochs, trained=trained, review=review_iterate(run, trained.epochs)))


def curri_dpo(run: RunSession) -> None:
    """Curri-DPO: one curriculum stage per iteration, easiest (largest rating gap) first."""
    stages = baseline.curriculum(run)
    for t in range(run.state.completed + 1, run.config.iterations + 1):
        stage = baseline.curriculum_stage(run, stages, t)
        end_iteration(run, t, [stage], stage.examples)


def spa(run: RunSession) -> None:
    """SPA: a labelled seed, then the policy's own samples labelled by its implicit reward."""
    seed, shares = baseline.spa_split(run)
    for t in range(run.state.completed + 1, run.config.iterations + 1):
        if t == 1:
            end_iteration(run, t, [], seed)
        else:
            labelled = baseline.spa_pairs(run, t, shares[t - 2])
            end_iteration(run, t, [labelled], labelled.examples)


BASELINES = {"daa": plain_daa, "curri-dpo": curri_dpo, "spa": spa}
"""The baselines' drivers, by `--method` (docs/baselines.md)."""

"""`sera demo`: does SeRA work? Measured in a world whose truth is known, on a CPU, in minutes.

The world (:mod:`sera.worlds`): sort a short string of letters, graded by a programmatic gold
reward; a tiny Llama-style SFT policy trained from scratch on imperfect demonstrations; offline
preference pairs that are partly off-policy and labelled by an annotator with label noise and a
preference for longer responses. On the same pairs the demo runs

    plain DAA   T epochs on all offline pairs          sera.loop.run(method="daa")
    SeRA-DAA    T iterations of Algorithm 1            sera.loop.run(method="sera")
    recommended --preset recommended                   sera.loop.run(method="sera", ...the preset's options)
    DAA, equal budget  the plain DAA for the optimiser steps of the recommended run on the same world, seed
                and beta                               sera.loop.run(method="daa", match_budget=that run)

through `sera.loop.run`, the code path of `sera train`, and grades held-out prompts with the gold
reward: mean gold reward, win rate against the SFT policy (ties count half), response length, and
for SeRA, per iteration, what selection kept and dropped (flipped and length-driven labels) and
how often its bootstrapped labels agree with the gold reward.

beta is chosen per (DAA, method) on held-out validation prompts of the first seed's world, from
the same grid and by the same rule (highest mean validation gold reward) for every method, then
reused for every seed and noise level. Everything else is fixed and the same for both methods.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from sera import run_lock
from sera.errors import SeraInputError
from sera.io import append_jsonl, read_jsonl, write_json
from sera.presets import preset_values
from sera.worlds import World, WorldConfig, build_world
from sera.worlds.sorting import gold_reward

DAAS = ("dpo", "ipo", "slic", "simpo")
METHODS = ("daa", "sera")
VARIANTS = {
    "selection-only": {"bootstrap": False},           # component 1 alone (the paper's ablation)
    "bootstrap-only": {"selection": False},           # component 2 alone (the paper's ablation)
    "likelihood-labeller": {"bootstrap_labeller": "likelihood"},  # bootstrapped pairs labelled by log pi
    "offline-pool": {"selection_pool": "offline"},    # rank offline pairs only, keep every bootstrapped pair
    "no-ensemble": {"ensemble_gamma": 0.0},           # component 3 off (the paper's ablation)
    # both off: SeRA's T one-epoch passes (a fresh schedule each) on every pair -- the control that tells
    # what the iteration schedule alone costs or gains against the DAA's one T-epoch schedule
    "no-review": {"selection": False, "bootstrap": False},
    # --preset recommended (docs/self-review.md), whatever it holds now
    "recommended": {k: v for k, v in preset_values("recommended").items() if k not in ("method", "validation_ratio")},
}
"""SeRA variants (`--variants`), each a `sera train` option set; run as method `sera/<name>`."""
MATCHED = "daa-matched"
"""`--variants daa-matched`: the plain DAA at the budget of the `recommended` run on the same world, seed, DAA and
beta (`sera train --method daa --match-budget RUN`: as many optimiser steps); needs the `recommended` variant."""
QUICK_VARIANTS = ("recommended", MATCHED)
"""What the quick demo runs beside the DAA and the paper's SeRA unless `--variants` says otherwise ("" for none)."""
FULL_VARIANTS = ("recommended", MATCHED)
"""What the full demo runs beside them unless `--variants` says otherwise."""
BASELINES = {"spa": {"spa_seed_ratio": 0.1}}
"""Opt-in baselines (`--variants spa`; docs/baselines.md), run as method `<name>` with these options; DPO only.
SPA's seed is 10% of the prompts (its paper: 3.3%) so that it spans several optimiser steps in the world."""
BETA_GRID = (0.05, 0.2, 1.0)  # the paper's search grid
NOISE_SWEEP = (0.0, 0.2, 0.4)  # full mode, DPO only
EVAL_SEED = 1234
EVAL_TEMPERATURE = 1.0  # the policy as it is: one sample per prompt at temperature 1, fixed seed
EXTRA_TEMPERATURES = {"test_t0.7": 0.7, "test_greedy": 0.0}
"""Final models are also graded at these sampling temperatures (issue 18: does an edge hold when the policy is
sampled more sharply?). The models are the same; only the grading differs."""
TIE = 0.005  # a paired difference below this (gold) counts as a tie in wins/ties/losses
MAX_NEW_TOKENS = 28

TRAIN_SETTINGS = dict(
    iterations=3, selection_ratio=0.7, ensemble_gamma=0.3, num_samples=4, temperature=0.7, top_p=0.95,
    learning_rate=1e-4, batch_size=16, grad_accum=1, max_new_tokens=MAX_NEW_TOKENS, max_length=64,
    logging_steps=20, scoring_batch_size=256, generation_batch_size=256,
)
"""What every demo run shares (the rest are `sera train`'s defaults). The paper's T, K, N, gamma and
sampling; the learning rate is sized for a 47k-parameter model trained from scratch (the paper's
3e-6 is for pretrained 1B+ models) and is the same for every method. It was fixed before any SeRA
run, on plain DPO alone: 5e-4 degraded the policy even on noise-free labels, 1e-4 improved it."""


@dataclass
class DemoOptions:
    output_dir: str
    quick: bool = False
    daa: str | None = None  # dpo | ipo | slic | simpo | all; default: dpo (quick), all (full)
    seeds: str | list[int] | None = None  # default: 1 (quick), 1,2,3 (full)
    noise: float = 0.3
    length_bias: float = 0.2
    off_policy: float = 0.5
    betas: str | list[float] | None = None  # default: the paper's grid 0.05,0.2,1.0
    noise_sweep: str | list[float] | None = None  # default: none (quick), 0,0.2,0.4 for DPO (full)
    jobs: int = 1  # runs in parallel processes (each single-threaded)
    variants: str | list[str] | None = None  # extra SeRA variants (see VARIANTS), run like the other methods
    world: dict = field(default_factory=dict)  # overrides of WorldConfig sizes (tests use tiny worlds)
    train: dict = field(default_factory=dict)  # overrides of TRAIN_SETTINGS (tests)

    def resolve(self) -> DemoOptions:
        daas = parse_daas(self.daa if self.daa is not None else ("dpo" if self.quick else "all"))
        seeds = parse_numbers(self.seeds if self.seeds is not None else ("1" if self.quick else "1,2,3"),
                              int, "--seeds")
        betas = parse_numbers(self.betas if self.betas is not None else ",".join(map(str, BETA_GRID)),
                              float, "--betas")
        if any(b <= 0 for b in betas):
            raise SeraInputError("--betas: every beta must be positive")
        sweep = self.noise_sweep
        if sweep is None:
            sweep = [] if self.quick or "dpo" not in daas else list(NOISE_SWEEP)
        sweep = [n for n in parse_numbers(sweep, float, "--noise-sweep") if not math.isclose(n, self.noise)]
        for name in ("noise", "length_bias", "off_policy"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SeraInputError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if any(not 0.0 <= n <= 1.0 for n in sweep):
            raise SeraInputError("--noise-sweep: every noise rate must be in [0, 1]")
        asked = self.variants if self.variants is not None else list(QUICK_VARIANTS if self.quick else FULL_VARIANTS)
        variants = [v.strip() for v in (asked.split(",") if isinstance(asked, str) else asked) if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS and v not in BASELINES and v != MATCHED]
        if unknown:
            raise SeraInputError(f"--variants: {', '.join(unknown)} not one of "
                                 f"{', '.join([*VARIANTS, *BASELINES, MATCHED])}")
        if MATCHED in variants and "recommended" not in variants:
            raise SeraInputError(f"--variants: {MATCHED} matches the budget of the recommended runs; "
                                 "add recommended")
        if self.jobs < 1:
            raise SeraInputError("--jobs must be at least 1")
        if not self.output_dir:
            raise SeraInputError("--output-dir is required")
        return replace(self, daa=",".join(daas), seeds=seeds, betas=betas, noise_sweep=sweep,
                       variants=list(dict.fromkeys(variants)))

    @property
    def methods(self) -> list[str]:
        return [*METHODS, *(v if v in BASELINES or v == MATCHED else f"sera/{v}" for v in self.variants or [])]


def _runs(method: str, daa: str) -> bool:
    """SPA is a DPO method; every other method runs with every DAA."""
    return method != "spa" or daa == "dpo"


def parse_daas(text: str) -> list[str]:
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if names == ["all"]:
        return list(DAAS)
    bad = [n for n in names if n not in DAAS]
    if not names or bad:
        raise SeraInputError(f"--daa: {text!r} is not one of {', '.join(DAAS)}, all (or a comma-separated list)")
    return list(dict.fromkeys(names))


def parse_numbers(value, kind: type, flag: str) -> list:
    items = value if isinstance(value, (list, tuple)) else [t for t in str(value).split(",") if t.strip()]
    try:
        numbers = [kind(str(v).strip()) if isinstance(v, str) else kind(v) for v in items]
    except ValueError:
        raise SeraInputError(f"{flag}: expected comma-separated {kind.__name__}s, got {value!r}") from None
    if flag != "--noise-sweep" and not numbers:
        raise SeraInputError(f"{flag}: give at least one value")
    if kind is int and any(n < 0 for n in numbers):
        raise SeraInputError(f"{flag}: seeds must be non-negative")
    return list(dict.fromkeys(numbers))


# ------------------------------------------------------------------------------------------- evaluation

def sample_responses(model, tokenizer, prompts: list[str], *, temperature: float = EVAL_TEMPERATURE,
                     seed: int = EVAL_SEED) -> list[str]:
    """One response per prompt (temperature 0 = greedy), reproducible for a given seed."""
    from sera.generation import SamplingParams, generate_completions
    from sera.worlds.sft import prompt_ids

    params = SamplingParams(1, temperature, 1.0, MAX_NEW_TOKENS)
    out = generate_completions(model, tokenizer, [prompt_ids(tokenizer, p) for p in prompts], params,
                               batch_size=512, seed=seed, description="evaluating")
    return [c[0].text for c in out]


def grade(prompts: list[str], responses: list[str], baseline: list[str] | None = None) -> dict:
    """Mean gold reward, exact-answer share, mean length and (with `baseline`) win rate, ties half."""
    from sera.eval.winrate import win_rate

    gold = np.array([gold_reward(p, r) for p, r in zip(prompts, responses)])
    result = {"gold": float(gold.mean()), "exact": float((gold == 1.0).mean()),
              "length": float(np.mean([len(r) for r in responses]))}
    if baseline is not None:
        base = np.array([gold_reward(p, r) for p, r in zip(prompts, baseline)])
        result["win_rate_vs_sft"] = win_rate(np.sign(gold - base).astype(int).tolist())
    return result


class Evaluator:
    """Grades models of one world on its validation and test prompts against its SFT policy.

    The SFT policy's own grades and test responses are computed once and kept in WORLD/sft_eval.json."""

    def __init__(self, world: World):
        from sera.models import load_model, load_tokenizer

        self.world = world
        self.tokenizer = load_tokenizer(str(world.sft_dir))
        cache = world.root / "sft_eval.json"
        if cache.exists():
            saved = json.loads(cache.read_text(encoding="utf-8"))
            self.sft, self.sft_test = saved["grades"], saved["test_responses"]
            return
        sft = load_model(str(world.sft_dir))
        self.sft_test = sample_responses(sft, self.tokenizer, world.test_prompts)
        self.sft = {"test": grade(world.test_prompts, self.sft_test, self.sft_test),
                    "validation": grade(world.validation_prompts,
                                        sample_responses(sft, self.tokenizer, world.validation_prompts)),
                    **{key: grade(world.test_prompts, sample_responses(sft, self.tokenizer, world.test_prompts,
                                                                       temperature=t))
                       for key, t in EXTRA_TEMPERATURES.items()}}
        write_json(cache, {"grades": self.sft, "test_responses": self.sft_test})

    def model(self, path: Path, *, validation: bool = False, greedy: bool = False) -> dict:
        from sera.models import load_model

        model = load_model(str(path))
        result = {"test": grade(self.world.test_prompts,
                                sample_responses(model, self.tokenizer, self.world.test_prompts), self.sft_test)}
        if validation:
            result["validation"] = grade(self.world.validation_prompts,
                                         sample_responses(model, self.tokenizer, self.world.validation_prompts))
        if greedy:  # the final model: also at the other sampling temperatures
            for key, temperature in EXTRA_TEMPERATURES.items():
                result[key] = grade(self.world.test_prompts, sample_responses(
                    model, self.tokenizer, self.world.test_prompts, temperature=temperature), self.sft_test)
        return result


# ------------------------------------------------------------------------------------------- one run

def train_run(world: World, run_dir: Path, *, method: str, daa: str, beta: float, seed: int,
              overrides: dict) -> dict:
    """`sera train` on the world's pairs (its output goes to run_dir/train.log); returns its summary."""
    from sera.config import TrainConfig
    from sera.loop import run

    config = TrainConfig(model=str(world.sft_dir), dataset=str(world.pairs_path), output_dir=str(run_dir),
                         method=method, daa=daa, beta=beta, seed=seed,
                         **{**TRAIN_SETTINGS, **overrides}).validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return run(config)


def review_selection(run_dir: Path, meta: dict[str, dict], iterations: int) -> list[dict]:
    """Per SeRA iteration: flipped / length-driven shares among kept vs dropped offline pairs, the margins,
    and how often bootstrapped labels agree with the gold reward."""
    rows = []
    for t in range(2, iterations + 1):
        path = run_dir / f"iter_{t}" / "selection.jsonl"
        if not path.exists():
            continue
        selection = read_jsonl(path)
        offline = [r for r in selection if r["source"] == "offline" and r["id"] in meta]
        row: dict = {"iteration": t, "pool": len(selection), "offline_in_pool": len(offline)}
        for name, keep in (("selected", True), ("dropped", False)):
            group = [meta[r["id"]] for r in offline if r["selected"] == keep]
            row[name] = {"offline": len(group),
                         "generated": sum(r["source"] == "generated" and r["selected"] == keep for r in selection),
                         "flipped": _share(group, "flipped"), "length_driven": _share(group, "length_driven")}
        row["pool_flipped"] = _share([meta[r["id"]] for r in offline], "flipped")
        row["pool_length_driven"] = _share([meta[r["id"]] for r in offline], "length_driven")
        generated = read_jsonl(run_dir / f"iter_{t}" / "generated.jsonl") if (
            run_dir / f"iter_{t}" / "generated.jsonl").exists() else []
        agree = [gold_reward(g["prompt"], g["chosen"]) > gold_reward(g["prompt"], g["rejected"]) for g in generated
                 if gold_reward(g["prompt"], g["chosen"]) != gold_reward(g["prompt"], g["rejected"])]
        row["generated_pairs"] = len(generated)
        row["generated_label_agrees_with_gold"] = float(np.mean(agree)) if agree else None
        row["generated_chosen_longer"] = float(np.mean([len(g["chosen"]) > len(g["rejected"]) for g in generated])
                                               ) if generated else None
        rows.append(row)
    return rows


def _share(rows: list[dict], key: str) -> float | None:
    return float(np.mean([r[key] for r in rows])) if rows else None


# ------------------------------------------------------------------------------------------- jobs

def _single_thread() -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # a 47k-parameter model gains nothing from intra-op threads; they spin on a busy CPU


def world_job(config: dict, root: str, reuse_sft: str | None = None) -> dict:
    """Build one world (SFT from scratch, or copied from `reuse_sft`; pairs) and grade its SFT policy;
    output goes to WORLD.log."""
    _single_thread()
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with open(root.parent / f"{root.name}.log", "w", encoding="utf-8") as handle, \
            contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        world = build_world(WorldConfig(**config), root, reuse_sft=reuse_sft, log=lines.append)
        evaluator = Evaluator(world)
    return {"root": str(root), "lines": lines, "sft": evaluator.sft}


def run_job(spec: dict) -> dict:
    """One `sera train` run on a world, graded: test gold per iterate, final model on test (and validation)."""
    _single_thread()
    start = time.perf_counter()
    out, world = Path(spec["out"]), World.load(spec["world"])
    run_dir = out / spec["run_dir"]
    method, _, variant = spec["method"].partition("/")
    extra = {}
    if method == MATCHED:  # the plain DAA at the recommended run's budget (sera train --method daa --match-budget)
        method, extra = "daa", {"match_budget": str(out / spec["match_dir"])}
    summary = train_run(world, run_dir, method=method, daa=spec["daa"], beta=spec["beta"], seed=spec["seed"],
                        overrides={**spec["overrides"], **VARIANTS.get(variant, {}), **BASELINES.get(method, {}),
                                   **extra})
    iterations = {**TRAIN_SETTINGS, **spec["overrides"]}["iterations"]
    evaluator = Evaluator(world)
    per_iteration = [{"iteration": t, **evaluator.model(run_dir / f"iter_{t}" / "model")["test"]}
                     for t in range(1, iterations)]
    final = evaluator.model(run_dir / "final", validation=spec["validation"], greedy=True)
    per_iteration.append({"iteration": iterations, **final["test"]})
    record = {key: spec[key] for key in ("noise", "seed", "daa", "method", "beta", "run_dir")}
    if spec.get("budget_donor"):
        record["budget_donor"] = True  # run only so that a matched run has a budget at this beta
    record.update(final, per_iteration=per_iteration, train_seconds=summary.get("seconds_total"),
                  warnings=summary.get("warnings", []), budget=summary.get("budget"))
    if method == "sera":
        record["selection"] = review_selection(run_dir, world.meta(), iterations)
    record["wall_seconds"] = time.perf_counter() - start
    return record


def _map(fn, items: list, jobs: int, done) -> list:
    """fn over items, in `jobs` processes (1 = here); `done(result)` as each finishes; results in order."""
    if jobs <= 1 or len(items) <= 1:
        results = []
        for item in items:
            results.append(fn(*item) if isinstance(item, tuple) else fn(item))
            done(results[-1])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(min(jobs, len(items)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {(pool.submit(fn, *item) if isinstance(item, tuple) else pool.submit(fn, item)): index
                   for index, item in enumerate(items)}
        results: list = [None] * len(items)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            done(results[futures[future]])
    return results


# ------------------------------------------------------------------------------------------- the demo

def run_demo(options: DemoOptions, *, log=print) -> dict:
    """Build the worlds, pick beta on validation, run DAA and SeRA, grade, write results.json and plots."""
    import torch

    options = options.resolve()
    out = Path(options.output_dir)
    with run_lock.hold(out):
        (out / "runs.jsonl").unlink(missing_ok=True)
        threads = torch.get_num_threads()
        _single_thread()
        try:
            return _run_demo(options, out, log)
        finally:
            torch.set_num_threads(threads)


def _run_demo(options: DemoOptions, out: Path, log) -> dict:
    start = time.perf_counter()
    daas = options.daa.split(",")
    jobs = options.jobs

    # 0. the worlds: one per (noise, seed); a noise-sweep world shares its seed's SFT policy (copied, not retrained)
    def world_args(noise: float, seed: int, reuse: bool) -> tuple:
        config = WorldConfig(seed=seed, noise=noise, length_bias=options.length_bias, off_policy=options.off_policy,
                             **options.world).validate()
        donor = str(out / "worlds" / _world_name(options.noise, seed)) if reuse else None
        return asdict(config), str(out / "worlds" / _world_name(noise, seed)), donor

    def world_done(result: dict) -> None:
        for line in result["lines"]:
            log(line)
        sft = result["sft"]
        log(f"{Path(result['root']).name}: SFT policy gold {sft['test']['gold']:.3f} sampled, "
            f"{sft['test_greedy']['gold']:.3f} greedy, on {options_test_prompts(options)} test prompts")

    keys = [(options.noise, seed) for seed in options.seeds]
    built = _map(world_job, [world_args(*key, reuse=False) for key in keys], jobs, world_done)
    sweep = [(noise, seed) for noise in options.noise_sweep for seed in options.seeds]
    built += _map(world_job, [world_args(*key, reuse=True) for key in sweep], jobs, world_done)
    sft = {key: result["sft"] for key, result in zip(keys + sweep, built)}

    def run_dir(noise, seed, daa, method, beta) -> str:
        return f"runs/{_world_name(noise, seed)}/{method.replace('/', '+')}-{daa}-beta{beta:g}"

    def spec(noise, seed, daa, method, beta, validation):
        return {"out": str(out), "world": str(out / "worlds" / _world_name(noise, seed)), "noise": noise,
                "seed": seed, "daa": daa, "method": method, "beta": beta, "validation": validation,
                "overrides": options.train, "run_dir": run_dir(noise, seed, daa, method, beta),
                "match_dir": run_dir(noise, seed, daa, "sera/recommended", beta)}

    def in_order(specs: list[dict]) -> list[dict]:
        """Run the specs: budget-matched runs after the others, since each matches one of them. A matched run
        whose recommended run is not among them (the two rows chose different betas) gets one, a budget donor:
        run, recorded and kept out of the table (its beta is not the recommended row's)."""
        first_wave = [s for s in specs if s["method"] != MATCHED]
        have = {s["run_dir"] for s in first_wave}
        for s in [s for s in specs if s["method"] == MATCHED and s["match_dir"] not in have]:
            donor = {**spec(s["noise"], s["seed"], s["daa"], "sera/recommended", s["beta"], False),
                     "budget_donor": True}
            first_wave.append(donor)
            have.add(donor["run_dir"])
        done = _map(run_job, first_wave, jobs, run_done)
        return done + _map(run_job, [s for s in specs if s["method"] == MATCHED], jobs, run_done)

    def run_done(record: dict) -> None:
        append_jsonl(out / "runs.jsonl", record)  # progress so far, readable while the demo runs
        val = f", validation gold {record['validation']['gold']:.3f}" if "validation" in record else ""
        log(f"  {record['method']:4s} {record['daa']:5s} beta={record['beta']:<4g} noise={record['noise']:g} "
            f"seed={record['seed']}: test gold {record['test']['gold']:.3f}, win vs SFT "
            f"{record['test']['win_rate_vs_sft']:.3f}, length {record['test']['length']:.1f}{val} "
            f"({record['wall_seconds']:.0f}s)")

    # 1. beta per (DAA, method) on the validation prompts of the first seed's world, same grid and rule for all
    first = options.seeds[0]
    grid = [(daa, method, beta) for daa in daas for method in options.methods for beta in options.betas
            if _runs(method, daa)]
    runs = in_order([spec(options.noise, first, d, m, b, True) for d, m, b in grid])
    chosen_beta: dict[str, dict] = {}
    for daa in daas:
        for method in [m for m in options.methods if _runs(m, daa)]:
            scores = {r["beta"]: r["validation"]["gold"] for r in runs if r["daa"] == daa and r["method"] == method
                      and "validation" in r}
            best = max(options.betas, key=lambda b: (scores[b], -options.betas.index(b)))
            chosen_beta[f"{method}-{daa}"] = {"chosen": best,
                                              "validation_gold": {f"{b:g}": s for b, s in scores.items()}}
            if len(options.betas) > 1:
                log(f"beta for {method}-{daa}: {best:g} (validation gold " +
                    ", ".join(f"{b:g}: {s:.3f}" for b, s in scores.items()) + ")")

    # 2. the remaining seeds, and the noise sweep (DPO), with the chosen betas
    rest = [spec(options.noise, seed, daa, method, chosen_beta[f"{method}-{daa}"]["chosen"], False)
            for seed in options.seeds[1:] for daa in daas for method in options.methods if _runs(method, daa)]
    rest += [spec(noise, seed, "dpo", method, chosen_beta[f"{method}-dpo"]["chosen"], False)
             for noise in options.noise_sweep for seed in options.seeds for method in options.methods]
    runs += in_order(rest)

    results = _results(options, runs, chosen_beta, sft, out, time.perf_counter() - start)
    results["plots"] = [p.name for p in write_plots(results, out)]
    write_json(out / "results.json", results)
    log("")
    log(format_table(results))
    log(f"\nresults: {out / 'results.json'}; plots: {', '.join(str(out / p) for p in results['plots'])} "
        f"({results['wall_seconds']:.0f}s)")
    return results


def _world_name(noise: float, seed: int) -> str:
    return f"noise{noise:g}-seed{seed}"


def options_test_prompts(options: DemoOptions) -> int:
    return options.world.get("test_prompts", WorldConfig.test_prompts)


def _results(options: DemoOptions, runs: list[dict], chosen_beta: dict, sft: dict, out: Path,
             seconds: float) -> dict:
    chosen = [r for r in runs if r["beta"] == chosen_beta[f"{r['method']}-{r['daa']}"]["chosen"]
              and not r.get("budget_donor")]
    table = []
    for noise in [options.noise, *options.noise_sweep]:
        base = [grades for (n, _), grades in sorted(sft.items()) if n == noise]
        table.append({"noise": noise, "daa": "-", "method": "sft", "beta": None, "seeds": len(base),
                      **_stats(base)})
        for daa in options.daa.split(","):
            for method in options.methods:
                group = [r for r in chosen if r["noise"] == noise and r["daa"] == daa and r["method"] == method]
                if group:
                    table.append({"noise": noise, "daa": daa, "method": method, "beta": group[0]["beta"],
                                  "seeds": len(group), **_stats(group)})
        for daa in options.daa.split(","):
            by_seed: dict[int, dict[str, dict]] = {}
            for r in chosen:
                if r["noise"] == noise and r["daa"] == daa:
                    by_seed.setdefault(r["seed"], {})[r["method"]] = r
            for method in options.methods[1:]:
                row = next((t for t in table if t["noise"] == noise and t["daa"] == daa and t["method"] == method),
                           None)
                if row is None:
                    continue
                diffs = [p[method]["test"]["gold"] - p["daa"]["test"]["gold"] for p in by_seed.values()
                         if method in p and "daa" in p]
                if diffs:
                    row["gold_minus_daa"] = _mean_std(diffs)
                # paired by seed, against each plain-DAA row, at each sampling temperature; wins/ties/losses
                row["paired"] = {}
                for base in ("daa", MATCHED):
                    for key in ("test", *EXTRA_TEMPERATURES):
                        values = [p[method][key]["gold"] - p[base][key]["gold"] for p in by_seed.values()
                                  if method != base and method in p and base in p
                                  and key in p[method] and key in p[base]]
                        if values:
                            row["paired"][f"{base}/{key}"] = {**_mean_std(values), **_wtl(values)}
    world_info = {}
    for (noise, seed), grades in sorted(sft.items()):
        info = json.loads((out / "worlds" / _world_name(noise, seed) / "world.json").read_text(encoding="utf-8"))
        world_info[_world_name(noise, seed)] = {
            "sft": grades, "pairs": info["pairs"], "pairs_truth": info["pairs_summary"],
            "demonstration_gold": info["demonstration_gold"], "sft_seconds": info["sft_seconds"]}
    any_world = World.load(out / "worlds" / _world_name(options.noise, options.seeds[0]))
    return {
        "command": " ".join(["sera", *map(shlex.quote, sys.argv[1:])]) if Path(sys.argv[0]).name == "sera" else None,
        "mode": "quick" if options.quick else "full",
        "options": {**{k: v for k, v in asdict(options).items() if k not in ("output_dir",)},
                    "methods": options.methods},
        "variants": {v: VARIANTS[v] if v in VARIANTS else {"method": v, **BASELINES[v]} if v in BASELINES else
                     {"method": "daa", "match_budget": "the recommended run at the same world, seed, DAA and beta"}
                     for v in options.variants},
        "world": asdict(replace(any_world.config, seed=None, noise=None)),
        "train_settings": {**TRAIN_SETTINGS, **options.train, "other": "sera train defaults (paper's Algorithm 1)"},
        "evaluation": {"test_prompts": len(any_world.test_prompts),
                       "validation_prompts": len(any_world.validation_prompts),
                       "sampling": f"1 sample per prompt, temperature {EVAL_TEMPERATURE}, seed {EVAL_SEED}; the "
                                   "final models also at temperature 0.7 (test_t0.7) and greedy (test_greedy)",
                       "statistics": f"mean ± standard error over seeds ('se'; 'std' is the SD); differences "
                                     f"paired by seed, wins/ties/losses with a tie at |difference| < {TIE}",
                       "win_rate": "gold reward of the method's response vs the SFT policy's, ties count half",
                       "beta_selection": "per (DAA, method): highest mean validation gold reward over the grid, "
                                         "on the first seed's world at the main noise level; reused for all seeds "
                                         "and noise levels"},
        "beta": chosen_beta,
        "table": table,
        "worlds": world_info,
        "runs": runs,
        "wall_seconds": seconds,
    }


def _mean_std(values: list[float]) -> dict | None:
    """Mean, sample SD ('std') and standard error ('se', what the tables show) over seeds."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "se": None if std is None else std / math.sqrt(len(values)),
            "n": len(values)}


def _wtl(diffs: list[float]) -> dict:
    """Wins / ties / losses of paired differences (a tie: |difference| < TIE)."""
    return {"wins": sum(d >= TIE for d in diffs), "ties": sum(abs(d) < TIE for d in diffs),
            "losses": sum(d <= -TIE for d in diffs)}


def _stats(records: list[dict]) -> dict:
    tests = [r["test"] for r in records]
    out = {"gold": _mean_std([t["gold"] for t in tests]),
           "win_rate_vs_sft": _mean_std([t.get("win_rate_vs_sft") for t in tests]),
           "length": _mean_std([t["length"] for t in tests]),
           "exact": _mean_std([t["exact"] for t in tests]),
           "greedy_gold": _mean_std([r["test_greedy"]["gold"] for r in records if "test_greedy" in r]),
           "gold_t0.7": _mean_std([r["test_t0.7"]["gold"] for r in records if "test_t0.7" in r])}
    passes = [(r.get("budget") or {}).get("pair_passes") for r in records]
    if any(p is not None for p in passes):
        out["pair_passes"] = _mean_std(passes)
    return out


def _fmt(stat: dict | None, digits: int = 3) -> str:
    """'mean ± SE' (SE over seeds)."""
    if not stat:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    se = stat.get("se", None if stat.get("std") is None else stat["std"] / math.sqrt(stat.get("n") or 1))
    return text + (f" ± {se:.{digits}f}" if se is not None else "")


def format_table(results: dict, markdown: bool = False) -> str:
    """The results table: one row per (noise, DAA, method), mean ± standard error over seeds; then the paired
    differences to each plain-DAA row (3 epochs, and at the recommended run's budget) at each temperature."""
    header = ["noise", "DAA", "method", "beta", "seeds", "gold reward", "gold T=0.7", "greedy gold",
              "win rate vs SFT", "length", "pair passes", "minus DAA (T=1)"]
    rows = [[f"{r['noise']:g}", r["daa"], r["method"], "-" if r["beta"] is None else f"{r['beta']:g}",
             str(r["seeds"]), _fmt(r["gold"]), _fmt(r.get("gold_t0.7")), _fmt(r["greedy_gold"]),
             _fmt(r["win_rate_vs_sft"]), _fmt(r["length"], 2), _fmt(r.get("pair_passes"), 0),
             _signed(r.get("gold_minus_daa"))] for r in results["table"]]
    paired = [[f"{r['noise']:g}", r["daa"], r["method"], "DAA, 3 epochs" if base == "daa" else "DAA, equal budget",
               *(_signed(r["paired"].get(f"{base}/{key}"), wtl=True) for key in ("test", *EXTRA_TEMPERATURES))]
              for r in results["table"] for base in ("daa", MATCHED) if f"{base}/test" in r.get("paired", {})]
    paired_header = ["noise", "DAA", "method", "minus", "T=1", "T=0.7", "greedy"]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if paired:
            lines += ["", "| " + " | ".join(paired_header) + " |", "|" + "---|" * len(paired_header)]
            lines += ["| " + " | ".join(row) + " |" for row in paired]
        return "\n".join(lines)
    lines = _columns(header, rows)
    if paired:
        lines += ["", f"paired by seed: mean ± SE, wins/ties/losses (tie: |difference| < {TIE})"]
        lines += _columns(paired_header, paired)
    return "\n".join(lines + _selection_lines(results))


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return ["  ".join(h.ljust(w) for h, w in zip(header, widths))] + [
        "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]


def _signed(stat: dict | None, wtl: bool = False) -> str:
    if not stat:
        return ""
    text = f"{stat['mean']:+.3f}"
    se = stat.get("se", None if stat.get("std") is None else stat["std"] / math.sqrt(stat.get("n") or 1))
    text += f" ± {se:.3f}" if se is not None else ""
    return text + (f" {stat['wins']}/{stat['ties']}/{stat['losses']}" if wtl and "wins" in stat else "")


def _selection_lines(results: dict) -> list[str]:
    """Mean over seeds of SeRA's selection review at the main noise level."""
    lines = []
    main_noise = results["options"]["noise"]
    beta = results["beta"]
    methods = results["options"].get("methods", METHODS)
    pairs = [(m, d) for d in results["options"]["daa"].split(",") for m in methods if m.startswith("sera")]
    for method, daa in pairs:
        group = [r for r in results["runs"] if r["method"] == method and r["daa"] == daa and r["noise"] == main_noise
                 and r["beta"] == beta[f"{method}-{daa}"]["chosen"]]
        if not group or not group[0].get("selection"):
            continue
        name = f"SeRA{method[4:]}-{daa}"
        lines.append(f"\n{name} selection (offline pairs; mean over {len(group)} seed(s)):")
        for index, row in enumerate(group[0]["selection"]):
            rows = [g["selection"][index] for g in group if len(g["selection"]) > index]

            def avg(get, rows=rows):
                values = [v for v in (get(r) for r in rows) if v is not None]
                return f"{np.mean(values):.2f}" if values else "-"
            lines.append(
                f"  iteration {row['iteration']}: flipped {avg(lambda r: r['selected']['flipped'])} kept vs "
                f"{avg(lambda r: r['dropped']['flipped'])} dropped (pool {avg(lambda r: r['pool_flipped'])}); "
                f"length-driven {avg(lambda r: r['selected']['length_driven'])} kept vs "
                f"{avg(lambda r: r['dropped']['length_driven'])} dropped (pool "
                f"{avg(lambda r: r['pool_length_driven'])}); bootstrapped labels agree with gold "
                f"{avg(lambda r: r['generated_label_agrees_with_gold'])}")
    return lines


# ------------------------------------------------------------------------------------------- plots

def write_plots(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    main_noise = results["options"]["noise"]
    daas = results["options"]["daa"].split(",")
    beta = results["beta"]

    # gold reward per iteration, DAA vs SeRA (iteration 0 = SFT), mean ± std over seeds
    fig, axes = plt.subplots(1, len(daas), figsize=(4.2 * len(daas), 3.4), squeeze=False)
    sft_gold = np.mean([w["sft"]["test"]["gold"] for k, w in results["worlds"].items()
                        if k.startswith(f"noise{main_noise:g}-")])
    for ax, daa in zip(axes[0], daas):
        colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
        for method, colour in zip(results["options"].get("methods", METHODS), colours):
            group = [r for r in results["runs"] if r["daa"] == daa and r["method"] == method
                     and r["noise"] == main_noise and r["beta"] == beta[f"{method}-{daa}"]["chosen"]]
            if not group:
                continue
            curves = np.array([[sft_gold] + [p["gold"] for p in r["per_iteration"]] for r in group])
            x = np.arange(curves.shape[1])
            label = (f"{daa.upper()} epochs" if method == "daa" else f"{daa.upper()}, equal budget"
                     if method == MATCHED else f"SeRA{method[4:]}-{daa.upper()}")
            label += f", beta {group[0]['beta']:g}"
            ax.errorbar(x, curves.mean(0), yerr=curves.std(0) if len(group) > 1 else None, color=colour,
                        marker="o", capsize=3, label=label)
        ax.axhline(sft_gold, color="grey", linestyle=":", label="SFT")
        ax.set_xlabel("iteration / epoch")
        ax.set_ylabel("gold reward (test)")
        ax.set_title(f"{daa.upper()}: noise {main_noise:g}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "gold_per_iteration.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # IRM histogram at the first selection, offline pairs split by clean / flipped label, cut marked
    sera_runs = [r for r in results["runs"] if r["method"] == "sera" and r["noise"] == main_noise
                 and r["beta"] == beta[f"sera-{r['daa']}"]["chosen"] and r["seed"] == results["options"]["seeds"][0]]
    sera_runs = [r for r in sera_runs if (out / r["run_dir"] / "iter_2" / "selection.jsonl").exists()]
    if sera_runs:
        fig, axes = plt.subplots(1, len(sera_runs), figsize=(4.2 * len(sera_runs), 3.4), squeeze=False)
        for ax, run in zip(axes[0], sera_runs):
            run_dir = out / run["run_dir"]
            world_dir = out / "worlds" / f"noise{run['noise']:g}-seed{run['seed']}"
            meta = {m["id"]: m for m in read_jsonl(world_dir / "pairs_meta.jsonl")}
            selection = read_jsonl(run_dir / "iter_2" / "selection.jsonl")
            kept = [r["margin"] for r in selection if r["selected"]]
            clean = [r["margin"] for r in selection if r["source"] == "offline" and not meta[r["id"]]["flipped"]]
            flipped = [r["margin"] for r in selection if r["source"] == "offline" and meta[r["id"]]["flipped"]]
            generated = [r["margin"] for r in selection if r["source"] == "generated"]
            values = clean + flipped + generated
            bins = np.linspace(np.percentile(values, 1), np.percentile(values, 99), 40)
            ax.hist(clean, bins=bins, alpha=0.55, color="tab:green", label=f"offline, clean ({len(clean)})")
            ax.hist(flipped, bins=bins, alpha=0.55, color="tab:red", label=f"offline, flipped ({len(flipped)})")
            if generated:
                ax.hist(generated, bins=bins, histtype="step", color="black", label=f"bootstrapped ({len(generated)})")
            if kept and len(kept) < len(selection):
                ax.axvline(min(kept), color="black", linestyle="--", label="selection cut (keep right)")
            ax.set_xlabel("implicit reward margin (r_ens), iteration 2")
            ax.set_ylabel("pairs")
            ax.set_title(f"SeRA-{run['daa'].upper()}, beta {run['beta']:g}, seed {run['seed']}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "irm_histogram.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths

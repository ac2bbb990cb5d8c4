"""Self-review that helps (issue 9): every self-review option of `sera train`, alone and combined, measured in
two gold-reward worlds against plain DPO and an oracle labeller.

Worlds (both built from scratch here, one per seed; the truth of every pair is known):
  A  `sorting` -- the demo's world (`sera.worlds.build_world`): the SFT policy's most likely (greedy) answer is
     usually right, a typical sample is not.
  B  `filler`  -- `sera.worlds.filler`: 60% of demonstrations end with a filler character the gold reward
     penalises, so greedy decoding reproduces the filler and the policy's most likely answer is WORSE than a
     typical sample. The harness measures and reports this property (greedy vs sampled SFT gold).

Rows (every one is `sera.loop.run`, the code path of `sera train`; DPO, T = 3, K = 0.7, N = 4, gamma = 0.3):
  dpo                plain DPO for T epochs                                   --method daa
  sera               the paper's algorithm                                     --method sera
  likelihood         --bootstrap-labeller likelihood
  blend0.5           --bootstrap-labeller blend:0.5
  quota              --selection-mode quota (offline 0.7, generated 0.5)
  crossfit           --selection-mode crossfit --no-bootstrap (as in measured-facts)
  irm-guard          --guard irm
  oracle             --bootstrap-labeller judge:gold:<the world's gold reward>  (a reference, not a method)
  combinations       candidates for the recommended mode (see COMBINATIONS)

beta: every row is run at every beta of --betas on every seed; per (world, row) the beta with the highest
mean VALIDATION gold reward over seeds is used (same grid, same rule for all rows). The recommended mode is
the SeRA variant (not dpo, not oracle) with the highest world-A validation gold reward at its chosen beta;
world-A test and world B are then reported for it as held-out numbers.

Reported per (world, row): test gold reward (one sample per prompt at temperature 1, mean +- std over seeds),
win rate vs SFT, greedy gold, length, the paired-by-seed difference to plain DPO, and the share of the oracle
gap closed ((row - DPO) / (oracle - DPO)); per run: the iteration diagnostics (val_irm_accuracy,
labeller_accuracy, displacement_corr, generated_share_kept, length_drift), warnings, the guard's
final_iterate, the gold agreement of the bootstrapped labels, and the test gold after every iteration, so one
can check whether the diagnostics flagged the runs that went wrong.

    python benchmarks/self_review.py --quick --workers 2             # a smoke run, a minute or two on 2 cores
    python benchmarks/self_review.py --workers 16 --output OUT/self-review.json --work-dir /tmp/sr
Partial results are written after every finished run (a cut-off run still leaves numbers).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:  # this checkout's sera, installed or not (spawned workers run this too)
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT / "benchmarks") not in sys.path:  # benchmarks/stats.py: SE, paired differences, wins/ties/losses
    sys.path.insert(0, str(ROOT / "benchmarks"))
import stats as bstats  # noqa: E402

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "self-review.json"

WORLDS = ("sorting", "filler", "carry")  # A, B, C (C: the preregistered world, docs/preregistration.md)
DEFAULT_WORLDS = ("sorting", "filler")
GOLD_SPECS = {"sorting": "gold:sera.worlds.sorting:gold_reward", "filler": "gold:sera.worlds.filler:gold_reward",
              "carry": "gold:sera.worlds.carry:gold_reward"}
MATCHED = "<the recommended run at the same world, seed and beta>"
"""A row's `match_budget`: train the plain DAA for the optimiser steps of the `recommended` row's run in the same
world, seed and beta (`sera train --method daa --match-budget RUN`); such a run starts once that run has finished."""
ORACLE = "judge:{gold}"

def _preset(name: str) -> dict:
    from sera.presets import preset_values

    return preset_values(name)


ROWS: dict[str, dict] = {
    "dpo": {"method": "daa"},
    "sera": {},
    "likelihood": {"bootstrap_labeller": "likelihood"},
    "blend0.5": {"bootstrap_labeller": "blend:0.5"},
    "quota": {"selection_mode": "quota"},
    "crossfit": {"selection_mode": "crossfit", "bootstrap": False},
    "irm-guard": {"guard": "irm"},
    "oracle": {"bootstrap_labeller": ORACLE},
}
COMBINATIONS: dict[str, dict] = {
    "likelihood+quota": {"bootstrap_labeller": "likelihood", "selection_mode": "quota"},
    "likelihood+crossfit": {"bootstrap_labeller": "likelihood", "selection_mode": "crossfit"},
    "likelihood+irm-guard": {"bootstrap_labeller": "likelihood", "guard": "irm"},
    "crossfit+irm-guard": {"selection_mode": "crossfit", "bootstrap": False, "guard": "irm"},
}
PROBES: dict[str, dict] = {
    # both components off: SeRA's T one-epoch passes on every pair -- what the iteration schedule alone does
    "no-review": {"selection": False, "bootstrap": False},
    # gentler selection: drop the 10% of offline pairs with the lowest (in-sample / out-of-fold) IRM
    "selection-k0.9": {"bootstrap": False, "selection_ratio": 0.9},
    "crossfit-k0.9": {"selection_mode": "crossfit", "bootstrap": False, "selection_ratio": 0.9},
    # the same with one learning-rate schedule across the T iterations (--lr-schedule run)
    "no-review-run": {"selection": False, "bootstrap": False, "lr_schedule": "run"},
    "crossfit-k0.9-run": {"selection_mode": "crossfit", "bootstrap": False, "selection_ratio": 0.9,
                          "lr_schedule": "run"},
    "crossfit+irm-guard-run": {"selection_mode": "crossfit", "bootstrap": False, "guard": "irm", "lr_schedule": "run"},
    # and with the optimizer state carried from iteration to iteration (--carry-optimizer)
    "no-review-run-carry": {"selection": False, "bootstrap": False, "lr_schedule": "run", "carry_optimizer": True},
    "crossfit+irm-guard-run-carry": {"selection_mode": "crossfit", "bootstrap": False, "guard": "irm",
                                     "lr_schedule": "run", "carry_optimizer": True},
    # once the iterations are one optimiser run: the paper's loop, each labeller, gentle selection
    "sera-run-carry": {"lr_schedule": "run", "carry_optimizer": True},
    "likelihood-run-carry": {"bootstrap_labeller": "likelihood", "lr_schedule": "run", "carry_optimizer": True},
    "oracle-run-carry": {"bootstrap_labeller": ORACLE, "lr_schedule": "run", "carry_optimizer": True},
    "crossfit-k0.9-run-carry": {"selection_mode": "crossfit", "bootstrap": False, "selection_ratio": 0.9,
                                "lr_schedule": "run", "carry_optimizer": True},
    # bootstrapped pairs added to every offline pair, no selection: is selection what costs the labellers?
    "oracle-no-selection-run-carry": {"bootstrap_labeller": ORACLE, "selection": False, "lr_schedule": "run",
                                      "carry_optimizer": True},
    "likelihood-no-selection-run-carry": {"bootstrap_labeller": "likelihood", "selection": False,
                                          "lr_schedule": "run", "carry_optimizer": True},
    "sera-no-selection-run-carry": {"selection": False, "lr_schedule": "run", "carry_optimizer": True},
    "likelihood-no-selection-irm-guard-run-carry": {"bootstrap_labeller": "likelihood", "selection": False,
                                                    "guard": "irm", "lr_schedule": "run", "carry_optimizer": True},
    # issue 18: --preset recommended as it stands, and plain DPO at its budget (same optimiser steps)
    "recommended": {k: v for k, v in _preset("recommended").items() if k not in ("method", "validation_ratio")},
    "dpo-matched": {"method": "daa", "match_budget": MATCHED},
}
"""Rows outside the default grid, run only when named in --rows (they never enter a full run's recommendation)."""
GRID = {**ROWS, **COMBINATIONS}  # what a run without --rows runs, and where the recommended mode comes from
NOT_CANDIDATES = ("dpo", "oracle")  # the recommended mode is a SeRA variant a user can run without gold

FULL_WORLD = {"pair_prompts": 600, "validation_prompts": 200, "test_prompts": 400, "sft_demonstrations": 2000,
                  "sft_steps": 400}
QUICK_WORLD = {"pair_prompts": 48, "validation_prompts": 24, "test_prompts": 32, "sft_demonstrations": 200, "sft_steps": 40,
                   "sft_batch_size": 32}
TRAIN = {
    "iterations": 3, "selection_ratio": 0.7, "ensemble_gamma": 0.3, "num_samples": 4, "temperature": 0.7, "top_p": 0.95,
    "learning_rate": 1e-4, "batch_size": 16, "grad_accum": 1, "max_new_tokens": 28, "max_length": 64,
    "logging_steps": 20, "scoring_batch_size": 256, "generation_batch_size": 256,
}
"""Shared by every run; pinned here so the evidence does not move with the demo's settings. The paper's T, K, N,
gamma and sampling; the learning rate is the demo's (fixed on plain DPO alone: 5e-4 degraded the policy even on
noise-free labels, 1e-4 improved it)."""
QUICK_TRAIN = {"iterations": 2}
BETAS = (0.1, 0.5)
MIN_ORACLE_GAP = 0.01  # the oracle must beat DPO by this much for "share of the oracle gap closed" to be reported
DIAGNOSTICS = ("val_irm_accuracy", "labeller_accuracy", "displacement_corr", "generated_share_kept", "length_drift")


# ------------------------------------------------------------------------------------------- worker side

def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # a 47k-parameter model gains nothing from intra-op threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def world_config(kind: str, seed: int, sizes: dict):
    from sera.worlds import WorldConfig
    from sera.worlds.carry import CarryWorldConfig
    from sera.worlds.filler import FillerWorldConfig

    cls = {"filler": FillerWorldConfig, "carry": CarryWorldConfig}.get(kind, WorldConfig)
    return cls(seed=seed, **sizes).validate()


def gold_function(kind: str):
    if kind == "filler":
        from sera.worlds.filler import gold_reward
    elif kind == "carry":
        from sera.worlds.carry import gold_reward
    else:
        from sera.worlds.sorting import gold_reward
    return gold_reward


def grade(kind: str, prompts: list[str], responses: list[str], baseline: list[str] | None = None) -> dict:
    """As `sera.demo.grade`, with the world's own gold reward (plus the filler share in world B)."""
    from sera.eval.winrate import win_rate

    gold_fn = gold_function(kind)
    gold = np.array([gold_fn(p, r) for p, r in zip(prompts, responses)])
    result = {"gold": float(gold.mean()), "exact": float((gold == 1.0).mean()),
              "length": float(np.mean([len(r) for r in responses]))}
    if kind == "filler":
        from sera.worlds.filler import has_filler

        result["filler"] = float(np.mean([has_filler(r) for r in responses]))
    if baseline is not None:
        base = np.array([gold_fn(p, r) for p, r in zip(prompts, baseline)])
        result["win_rate_vs_sft"] = win_rate(np.sign(gold - base).astype(int).tolist())
    return result


def load_world(kind: str, seed: int, sizes: dict, root: Path):
    from sera.worlds import World

    prompts = json.loads((root / "prompts.json").read_text(encoding="utf-8"))
    return World(root, world_config(kind, seed, sizes), prompts["validation"], prompts["test"])


def build_world_task(kind: str, seed: int, sizes: dict, root: str) -> dict:
    """Build one world and grade its SFT policy (sampled and greedy) on validation and test prompts."""
    _init_worker()
    from sera.demo import sample_responses
    from sera.models import load_model, load_tokenizer

    start, cpu = time.perf_counter(), time.process_time()
    root = Path(root)
    config = world_config(kind, seed, sizes)
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if kind == "filler":
            from sera.worlds.filler import build_filler_world

            world = build_filler_world(config, root)
        elif kind == "carry":
            from sera.worlds.carry import build_carry_world

            world = build_carry_world(config, root)
        else:
            from sera.worlds import build_world

            world = build_world(config, root)
        tokenizer, sft = load_tokenizer(str(world.sft_dir)), load_model(str(world.sft_dir))
        sampled = sample_responses(sft, tokenizer, world.test_prompts)
        sft_review = {
            "test": grade(kind, world.test_prompts, sampled, sampled),
            "test_greedy": grade(kind, world.test_prompts,
                                 sample_responses(sft, tokenizer, world.test_prompts, temperature=0)),
            "validation": grade(kind, world.validation_prompts,
                                sample_responses(sft, tokenizer, world.validation_prompts)),
            "validation_greedy": grade(kind, world.validation_prompts,
                                       sample_responses(sft, tokenizer, world.validation_prompts, temperature=0)),
        }
    info = json.loads((root / "world.json").read_text(encoding="utf-8"))
    return {"world": kind, "seed": seed, "root": str(root), "sft": sft_review,
            "greedy_worse_than_sample": sft_review["test_greedy"]["gold"] < sft_review["test"]["gold"],
            "pairs": info["pairs"], "pairs_truth": info["pairs_summary"],
            "demonstration_gold": info["demonstration_gold"],
            **{k: info[k] for k in ("demonstration_filler", "pairs_filler_chosen", "pairs_filler_rejected")
               if k in info},
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


_SFT_CACHE: dict[str, list[str]] = {}


def run_task(task: dict) -> dict:
    """One `sera.loop.run` in a built world, graded on validation and test prompts (per iteration on test)."""
    _init_worker()
    from sera.demo import sample_responses, train_run
    from sera.io import read_jsonl
    from sera.models import load_model, load_tokenizer

    start, cpu = time.perf_counter(), time.process_time()
    kind, seed, beta, row = task["world"], task["seed"], task["beta"], task["row"]
    world = load_world(kind, seed, task["sizes"], Path(task["world_root"]))
    run_dir = Path(task["run_dir"])
    overrides = dict(task["overrides"])
    method = overrides.pop("method", "sera")
    if overrides.get("bootstrap_labeller") == ORACLE:
        overrides["bootstrap_labeller"] = ORACLE.format(gold=GOLD_SPECS[kind])
    if overrides.get("match_budget") == MATCHED:
        overrides["match_budget"] = task["match_dir"]
    record = {"world": kind, "seed": seed, "row": row, "beta": beta, "method": method, "options": overrides,
              "run_dir": task["run_dir_rel"]}
    if run_dir.exists():  # a leftover of an earlier grid in the same --work-dir: start afresh
        shutil.rmtree(run_dir)
    try:
        summary = train_run(world, run_dir, method=method, daa="dpo", beta=beta, seed=seed,
                            overrides={**task["train"], **overrides})
    except Exception as exc:  # noqa: BLE001 -- one failed run must not take the grid down: it is recorded
        record.update(error=f"{type(exc).__name__}: {exc}", wall_seconds=time.perf_counter() - start)
        return record
    tokenizer = load_tokenizer(str(world.sft_dir))
    key = str(world.root)
    if key not in _SFT_CACHE:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
            _SFT_CACHE[key] = sample_responses(load_model(str(world.sft_dir)), tokenizer, world.test_prompts)
    sft_test = _SFT_CACHE[key]

    def evaluate(path: Path, validation: bool = False, greedy: bool = False) -> dict:
        model = load_model(str(path))
        out = {"test": grade(kind, world.test_prompts, sample_responses(model, tokenizer, world.test_prompts),
                             sft_test)}
        if validation:
            out["validation"] = grade(kind, world.validation_prompts,
                                      sample_responses(model, tokenizer, world.validation_prompts))
        if greedy:
            out["test_greedy"] = grade(kind, world.test_prompts,
                                       sample_responses(model, tokenizer, world.test_prompts, temperature=0))
            out["test_t0.7"] = grade(kind, world.test_prompts,
                                     sample_responses(model, tokenizer, world.test_prompts, temperature=0.7),
                                     sft_test)
        return out

    iterations = task["train"]["iterations"]
    with open(run_dir.parent / f"{run_dir.name}.eval.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        final = evaluate(run_dir / "final", validation=True, greedy=True)
        per_iteration = []
        for t in range(1, iterations + 1):
            path = run_dir / f"iter_{t}" / "model"
            if path.exists():
                per_iteration.append({"iteration": t, "test_gold": evaluate(path)["test"]["gold"]})
    gold_fn = gold_function(kind)
    diagnostics = []
    for entry in summary.get("iterations", []):
        item = {"iteration": entry["iteration"], **{k: entry.get(k) for k in DIAGNOSTICS}}
        generated_path = run_dir / f"iter_{entry['iteration']}" / "generated.jsonl"
        if generated_path.exists():
            generated = read_jsonl(generated_path)
            decided = [(gold_fn(g["prompt"], g["chosen"]), gold_fn(g["prompt"], g["rejected"])) for g in generated]
            decided = [c > r for c, r in decided if c != r]
            item["generated_pairs"] = len(generated)
            item["generated_label_agrees_with_gold"] = float(np.mean(decided)) if decided else None
        diagnostics.append(item)
    record.update(**final, per_iteration=per_iteration, diagnostics=diagnostics,
                  sft_review={k: summary.get("sft_review", {}).get(k) for k in ("val_irm_accuracy",
                                                                                 "labeller_accuracy")},
                  warnings=summary.get("warnings", []), final_iterate=summary.get("final_iterate"),
                  budget=summary.get("budget"),
                  train_seconds=summary.get("seconds_total"), wall_seconds=time.perf_counter() - start,
                  cpu_seconds=time.process_time() - cpu)
    return record


# ------------------------------------------------------------------------------------------- aggregation

def _mean_std(values: list[float]) -> dict | None:
    """mean, sample SD ("std", as in earlier result files) and standard error ("se", what the tables show)."""
    stat = bstats.mean_se(values)
    if stat is None:
        return None
    return {"mean": stat["mean"], "std": stat["sd"], "se": stat["se"], "n": stat["n"]}


def choose_betas(runs: list[dict]) -> dict:
    """Per (world, row): the beta with the highest mean validation gold over seeds (ties: the smaller beta)."""
    chosen: dict[str, dict] = {}
    groups: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in runs:
        if "validation" in r:
            groups.setdefault((r["world"], r["row"]), {}).setdefault(r["beta"], []).append(r["validation"]["gold"])
    for (world, row), by_beta in sorted(groups.items()):
        scores = {b: float(np.mean(v)) for b, v in by_beta.items()}
        best = max(sorted(scores), key=lambda b: scores[b])
        chosen[f"{world}/{row}"] = {"beta": best, "validation_gold": {str(b): s for b, s in sorted(scores.items())},
                                    "seeds": {str(b): len(by_beta[b]) for b in sorted(by_beta)}}
    return chosen


def choose_recommended(betas: dict, candidates: list[str]) -> dict | None:
    """The SeRA variant with the best world-A (sorting) validation gold at its chosen beta."""
    def score(row: str) -> float:
        return betas[f"sorting/{row}"]["validation_gold"][str(betas[f"sorting/{row}"]["beta"])]

    scores = {row: score(row) for row in candidates if f"sorting/{row}" in betas}
    if not scores:
        return None
    best = max(sorted(scores), key=lambda r: scores[r])
    dpo = score("dpo") if "sorting/dpo" in betas else None
    return {"row": best, "rule": "highest world-A (sorting) validation gold reward at the row's chosen beta, "
                                 "among SeRA variants (not dpo, not oracle)",
            "validation_gold": scores, "dpo_validation_gold": dpo,
            "beats_dpo_on_validation": None if dpo is None else scores[best] > dpo}


def table(runs: list[dict], betas: dict, worlds: list[dict], rows: list[str]) -> list[dict]:
    out = []
    for kind in WORLDS:
        sft = [w["sft"] for w in worlds if w["world"] == kind]
        if not sft:
            continue
        out.append({"world": kind, "row": "sft", "beta": None, "seeds": len(sft),
                    "gold": _mean_std([s["test"]["gold"] for s in sft]),
                    "greedy_gold": _mean_std([s["test_greedy"]["gold"] for s in sft]),
                    "length": _mean_std([s["test"]["length"] for s in sft]),
                    "win_rate_vs_sft": None})
        at_beta = {}
        for row in rows:
            choice = betas.get(f"{kind}/{row}")
            if choice is None:
                continue
            group = [r for r in runs if r["world"] == kind and r["row"] == row and r["beta"] == choice["beta"]
                     and "test" in r]
            at_beta[row] = {r["seed"]: r for r in group}
        for row, by_seed in at_beta.items():
            group = list(by_seed.values())
            if not group:
                continue
            entry = {"world": kind, "row": row, "beta": betas[f"{kind}/{row}"]["beta"], "seeds": len(group),
                     "gold": _mean_std([r["test"]["gold"] for r in group]),
                     "win_rate_vs_sft": _mean_std([r["test"]["win_rate_vs_sft"] for r in group]),
                     "greedy_gold": _mean_std([r["test_greedy"]["gold"] for r in group]),
                     "length": _mean_std([r["test"]["length"] for r in group]),
                     "validation_gold": _mean_std([r["validation"]["gold"] for r in group]),
                     "runs_with_warnings": sum(bool(r["warnings"]) for r in group),
                     "final_iterates": [r.get("final_iterate") for r in sorted(group, key=lambda r: r["seed"])]}
            if kind == "filler":
                entry["filler"] = _mean_std([r["test"].get("filler") for r in group])
            dpo = at_beta.get("dpo", {})
            diffs = [r["test"]["gold"] - dpo[s]["test"]["gold"] for s, r in by_seed.items() if s in dpo]
            entry["minus_dpo"] = _mean_std(diffs) if row != "dpo" else None
            if any("test_t0.7" in r for r in group):
                entry["gold_t0.7"] = _mean_std([r.get("test_t0.7", {}).get("gold") for r in group])
            if any(r.get("budget") for r in group):
                entry["pair_passes"] = _mean_std([(r.get("budget") or {}).get("pair_passes") for r in group])
                entry["optimizer_steps"] = _mean_std([(r.get("budget") or {}).get("optimizer_steps") for r in group])
            # paired differences with a 95% CI and wins/ties/losses, against each plain-DPO row, at each temperature
            entry["paired"] = {}
            for base in ("dpo", "dpo-matched"):
                if base == row or base not in at_beta:
                    continue
                for key in ("test", "test_t0.7", "test_greedy"):
                    diff = bstats.paired({s: r[key]["gold"] for s, r in by_seed.items() if key in r},
                                         {s: r[key]["gold"] for s, r in at_beta[base].items() if key in r})
                    if diff:
                        entry["paired"][f"{base}/{key}"] = {**diff, "decision": bstats.decide(diff)}
            oracle = at_beta.get("oracle", {})
            gaps = [(r["test"]["gold"] - dpo[s]["test"]["gold"]) / (oracle[s]["test"]["gold"] - dpo[s]["test"]["gold"])
                    for s, r in by_seed.items() if s in dpo and s in oracle
                    and oracle[s]["test"]["gold"] - dpo[s]["test"]["gold"] >= MIN_ORACLE_GAP]
            # the share of the oracle gap closed: from the means over seeds, and averaged per seed
            d = _mean_std([dpo[s]["test"]["gold"] for s in by_seed if s in dpo])
            o = _mean_std([oracle[s]["test"]["gold"] for s in by_seed if s in oracle])
            if d and o and o["mean"] - d["mean"] >= MIN_ORACLE_GAP and row not in ("dpo", "oracle"):
                entry["oracle_gap_closed"] = (entry["gold"]["mean"] - d["mean"]) / (o["mean"] - d["mean"])
            entry["oracle_gap_closed_by_seed"] = _mean_std(gaps) if row not in ("dpo", "oracle") else None
            out.append(entry)
    return out


WARNING_KINDS = {  # sera.diagnostics.warnings_for's messages, by the phrase that identifies each
    "val_irm": "of held-out pairs like their labels",
    "labeller": "bootstrap labeller agrees with only",
    "displacement": "likelihood displacement",
    "generated_share": "of kept pairs are bootstrapped",
    "length_drift": "the SFT model's length",
    "guard": "guard:",
}
WRONG_BY = 0.03  # a run "went wrong" when its test gold is below plain DPO's (same world and seed) by more


def warning_kinds(warnings: list[str]) -> list[str]:
    return [kind for kind, phrase in WARNING_KINDS.items() if any(phrase in w for w in warnings)]


def flag_summary(review: list[dict]) -> list[dict]:
    """Per (world, row): how many runs went wrong, and how often each warning fired in those vs the others."""
    out = []
    for key in sorted({(r["world"], r["row"]) for r in review}):
        group = [r for r in review if (r["world"], r["row"]) == key and r["worse_than_dpo"] is not None]
        wrong = [r for r in group if r["worse_than_dpo"]]
        fine = [r for r in group if not r["worse_than_dpo"]]
        out.append({"world": key[0], "row": key[1], "runs": len(group), "went_wrong": len(wrong),
                    "flags": {kind: {"in_wrong": sum(kind in r["warning_kinds"] for r in wrong),
                                     "in_fine": sum(kind in r["warning_kinds"] for r in fine)}
                              for kind in WARNING_KINDS}})
    return out


def diagnostics_review(runs: list[dict], betas: dict) -> list[dict]:
    """Per run at the chosen beta: did it go wrong (test gold below plain DPO's on the same seed, or below SFT),
    and did its diagnostics warn? The basis for 'did the diagnostics flag the runs that went wrong'."""
    out = []
    dpo = {(r["world"], r["seed"]): r["test"]["gold"] for r in runs if r["row"] == "dpo" and "test" in r
           and r["beta"] == betas.get(f"{r['world']}/dpo", {}).get("beta")}
    for r in runs:
        if "test" not in r or r["row"] == "dpo" or r["beta"] != betas.get(f"{r['world']}/{r['row']}", {}).get("beta"):
            continue
        base = dpo.get((r["world"], r["seed"]))
        out.append({"world": r["world"], "seed": r["seed"], "row": r["row"], "beta": r["beta"],
                    "test_gold": r["test"]["gold"], "minus_dpo": None if base is None else r["test"]["gold"] - base,
                    "worse_than_dpo": None if base is None else r["test"]["gold"] < base - WRONG_BY,
                    "warned": bool(r["warnings"]), "warnings": len(r["warnings"]),
                    "warning_kinds": warning_kinds(r["warnings"]),
                    "final_iterate": r.get("final_iterate"),
                    "labeller_accuracy": [d.get("labeller_accuracy") for d in r["diagnostics"]],
                    "displacement_corr": [d.get("displacement_corr") for d in r["diagnostics"]],
                    "generated_label_agrees_with_gold": [d.get("generated_label_agrees_with_gold")
                                                         for d in r["diagnostics"]]})
    return out


def _fmt(stat: dict | None, signed: bool = False, digits: int = 3) -> str:
    if not stat:
        return "-"
    text = f"{stat['mean']:+.{digits}f}" if signed else f"{stat['mean']:.{digits}f}"
    se = stat["se"] if "se" in stat else (stat["std"] / stat["n"] ** 0.5 if stat.get("std") is not None else None)
    return text + (f" ± {se:.{digits}f}" if se is not None else "")


WORLD_LABELS = {"sorting": "A (sorting)", "filler": "B (filler: greedy answer worse than a typical sample)",
                "carry": "C (carry: column addition, the preregistered world)"}


def markdown(results: dict) -> str:
    lines = [f"# Self-review benchmark ({results['mode']})", "",
             f"command: `{results['command']}`  ", f"device: {results['device']}  ",
             f"wall time: {results['wall_seconds']:.0f} s; runs finished: {results['runs_finished']} of "
             f"{results['runs_planned']}" + (" (PARTIAL)" if results["partial"] else ""), ""]
    rec = results.get("recommended")
    if rec:
        versus = "" if rec.get("dpo_validation_gold") is None else (
            f" (world-A validation gold {rec['validation_gold'][rec['row']]:.3f} vs plain DPO "
            f"{rec['dpo_validation_gold']:.3f}: {'above' if rec['beats_dpo_on_validation'] else 'NOT above'} DPO)")
        lines += [f"Recommended mode (chosen on world A validation only): **{rec['row']}**{versus}", ""]
    for kind in WORLDS:
        rows = [t for t in results["table"] if t["world"] == kind]
        if not rows:
            continue
        lines += [f"## World {WORLD_LABELS[kind]}", "", "mean ± standard error over seeds; differences paired by seed", "",
                  ("| row | beta | seeds | test gold | win vs SFT | − DPO (paired) | oracle gap closed | greedy gold "
                   "| length | runs warned |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for t in rows:
            name = t["row"] + (" (recommended)" if rec and t["row"] == rec["row"] else "")
            gap = t.get("oracle_gap_closed")
            lines.append(f"| {name} | {'-' if t['beta'] is None else t['beta']} | {t['seeds']} | {_fmt(t['gold'])} | "
                         f"{_fmt(t['win_rate_vs_sft'])} | {_fmt(t.get('minus_dpo'), signed=True)} | "
                         f"{'-' if gap is None else f'{gap:+.2f}'} | {_fmt(t['greedy_gold'])} | "
                         f"{_fmt(t['length'], digits=2)} | {t.get('runs_with_warnings', '-')} |")
        lines.append("")
        paired_rows = [t for t in rows if t.get("paired")]
        if paired_rows:
            lines += [f"Paired differences (± SE) [95% CI] wins/ties/losses (tie: |Δ| < {bstats.TIE}); test gold at "
                      "sampling temperature 1, 0.7 and greedy; decision rule of docs/preregistration.md at T = 1", "",
                      "| row | pair passes | − | T = 1 | T = 0.7 | greedy | decision |", "|---|---|---|---|---|---|---|"]
            for t in paired_rows:
                for base in ("dpo", "dpo-matched"):
                    if f"{base}/test" not in t["paired"]:
                        continue
                    cells = [bstats.fmt_diff(t["paired"].get(f"{base}/{key}"))
                             for key in ("test", "test_t0.7", "test_greedy")]
                    lines.append(f"| {t['row']} | {_fmt(t.get('pair_passes'), digits=0)} | {base} | "
                                 + " | ".join(cells) + f" | {t['paired'][f'{base}/test']['decision']} |")
            lines.append("")
    if results.get("flag_summary"):
        kinds = list(WARNING_KINDS)
        lines += ["## Did the diagnostics flag the runs that went wrong?", "",
                  (f"A run went wrong when its test gold is below plain DPO's on the same seed by more than {WRONG_BY}. "
                   "Each cell: runs that went wrong and raised the warning / other runs that raised it."), "",
                  "| world | row | runs | went wrong | " + " | ".join(kinds) + " |",
                  "|---|---|---|---|" + "---|" * len(kinds)]
        for f in results["flag_summary"]:
            lines.append(f"| {f['world']} | {f['row']} | {f['runs']} | {f['went_wrong']} | " + " | ".join(
                f"{f['flags'][k]['in_wrong']}/{f['flags'][k]['in_fine']}" for k in kinds) + " |")
        lines.append("")
    lines += ["## Worlds (SFT policy, test prompts)", "",
              "| world | seed | sampled gold | greedy gold | greedy worse than sample | pairs | labels agree with gold |",
              "|---|---|---|---|---|---|---|"]
    for w in results["worlds"]:
        lines.append(f"| {w['world']} | {w['seed']} | {w['sft']['test']['gold']:.3f} | "
                     f"{w['sft']['test_greedy']['gold']:.3f} | {w['greedy_worse_than_sample']} | {w['pairs']} | "
                     f"{w['pairs_truth'].get('label_agrees_with_gold', 0):.2f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- driver

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny worlds, T = 2, one seed: a smoke run")
    p.add_argument("--workers", type=int, default=1, help="process pool size (1 = run in this process)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2,3,4,5; quick: 1)")
    p.add_argument("--betas", default=None, help="beta grid, the same for every row (default 0.1,0.5)")
    p.add_argument("--worlds", default=",".join(DEFAULT_WORLDS), help="sorting,filler (default) and/or carry")
    p.add_argument("--rows", default=None, help="subset of rows (default: all rows and combinations)")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="results JSON (markdown next to it, .md)")
    p.add_argument("--work-dir", default=None, help="worlds and runs (default: <output dir>/self-review-work)")
    p.add_argument("--world-sizes", default=None, help="JSON overrides of the world sizes")
    p.add_argument("--iterations", type=int, default=None, help="T (default 3; quick: 2)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds after which unfinished runs are abandoned and partial results written (pool only)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    # a CPU benchmark: tiny models, one thread per worker; on a machine with a GPU, 16 workers must not share it
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    seeds = [int(s) for s in (args.seeds or ("1" if args.quick else "1,2,3,4,5")).split(",") if s.strip()]
    betas = [float(b) for b in (args.betas or ",".join(map(str, BETAS))).split(",") if b.strip()]
    worlds = [w.strip() for w in args.worlds.split(",") if w.strip()]
    if any(w not in WORLDS for w in worlds):
        raise SystemExit(f"--worlds: choose from {', '.join(WORLDS)}")
    all_rows = {**GRID, **PROBES}
    rows = list(GRID) if not args.rows else [r.strip() for r in args.rows.split(",") if r.strip()]
    if any(r not in all_rows for r in rows):
        raise SystemExit(f"--rows: choose from {', '.join(all_rows)}")
    sizes = {**(QUICK_WORLD if args.quick else FULL_WORLD), **json.loads(args.world_sizes or "{}")}
    train = {**TRAIN, **(QUICK_TRAIN if args.quick else {})}
    if args.iterations:
        train["iterations"] = args.iterations
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else output.parent / "self-review-work"
    work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - start:5.0f}s] {message}", flush=True)

    def cost(row: str) -> int:  # longest first, for packing
        o = all_rows[row]
        return (3 if o.get("selection_mode") == "crossfit" else 0) + (0 if o.get("method") == "daa" else 2)

    tasks_for: dict[tuple[str, int], list[dict]] = {}
    for kind in worlds:
        for seed in seeds:
            root = work / "worlds" / f"{kind}-seed{seed}"
            tasks_for[(kind, seed)] = [
                {"world": kind, "seed": seed, "row": row, "beta": beta, "overrides": all_rows[row], "train": train,
                 "sizes": sizes, "world_root": str(root),
                 "run_dir": str(work / "runs" / f"{kind}-seed{seed}" / f"{row}-beta{beta:g}"),
                 "run_dir_rel": f"runs/{kind}-seed{seed}/{row}-beta{beta:g}",
                 "match_dir": str(work / "runs" / f"{kind}-seed{seed}" / f"recommended-beta{beta:g}")}
                for row in sorted(rows, key=lambda r: -cost(r)) for beta in betas]
    if any(all_rows[r].get("match_budget") == MATCHED for r in rows) and "recommended" not in rows:
        raise SystemExit("--rows: dpo-matched needs the recommended row (it matches that run's budget)")
    planned = sum(len(v) for v in tasks_for.values())
    log(f"self-review grid: worlds {worlds}, seeds {seeds}, betas {betas}, {len(rows)} rows, {planned} runs, "
        f"{args.workers} worker(s), T = {train['iterations']}, world sizes {sizes}")

    state = {"worlds": [], "runs": []}
    command = " ".join(["python", "benchmarks/self_review.py", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                     else argv)])

    def write(partial: bool) -> dict:
        runs = [r for r in state["runs"] if "test" in r]
        chosen = choose_betas(runs)
        candidates = [r for r in GRID if r not in NOT_CANDIDATES]
        # a recommendation needs the whole grid: a run of a subset (or of probes) recommends nothing
        recommended = choose_recommended(chosen, candidates) if set(candidates) <= set(rows) else None
        results = {
            "command": command, "mode": "quick" if args.quick else "full", "partial": partial,
            "device": f"{platform.platform()}, {os.cpu_count()} CPU cores, {args.workers} worker(s), "
                      f"Python {platform.python_version()}",
            "wall_seconds": time.perf_counter() - start, "runs_planned": planned, "runs_finished": len(state["runs"]),
            "runs_failed": [{k: r[k] for k in ("world", "seed", "row", "beta", "error")} for r in state["runs"]
                            if "error" in r],
            "settings": {"seeds": seeds, "betas": betas, "worlds": worlds, "rows": {r: all_rows[r] for r in rows},
                         "world_sizes": sizes, "train": train, "oracle": {k: ORACLE.format(gold=v)
                                                                         for k, v in GOLD_SPECS.items()},
                         "evaluation": "one sample per prompt at temperature 1 (seed 1234) on the test prompts; "
                                       "beta per (world, row) by mean validation gold over seeds"},
            "beta": chosen, "recommended": recommended,
            "table": table(runs, chosen, state["worlds"], rows),
            "diagnostics_review": (review := diagnostics_review(runs, chosen)),
            "flag_summary": flag_summary(review),
            "worlds": sorted(state["worlds"], key=lambda w: (w["world"], w["seed"])),
            "runs": sorted(state["runs"], key=lambda r: (r["world"], r["seed"], r["row"], r["beta"])),
        }
        tmp = output.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        tmp.replace(output)
        output.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
        return results

    def on_world(info: dict) -> None:
        state["worlds"].append(info)
        s = info["sft"]
        log(f"world {info['world']} seed {info['seed']} built in {info['seconds']:.0f}s (cpu {info['cpu_seconds']:.0f}s): SFT test gold sampled "
            f"{s['test']['gold']:.3f}, greedy {s['test_greedy']['gold']:.3f} (greedy worse than a sample: "
            f"{info['greedy_worse_than_sample']}), {info['pairs']} pairs")

    def on_run(record: dict) -> None:
        state["runs"].append(record)
        done = len(state["runs"])
        if "error" in record:
            log(f"[{done}/{planned}] {record['world']} seed {record['seed']} {record['row']} beta {record['beta']:g}: "
                f"FAILED {record['error']}")
        else:
            log(f"[{done}/{planned}] {record['world']} seed {record['seed']} {record['row']:<22s} beta "
                f"{record['beta']:<4g}: test gold {record['test']['gold']:.3f}, val {record['validation']['gold']:.3f}, "
                f"win vs SFT {record['test']['win_rate_vs_sft']:.3f}, warnings {len(record['warnings'])} "
                f"({record['wall_seconds']:.0f}s, cpu {record['cpu_seconds']:.0f}s)")
        write(partial=True)

    stopped = False
    def waits(task: dict) -> bool:  # a budget-matched run starts after the run whose budget it matches
        return task["overrides"].get("match_budget") == MATCHED

    if args.workers <= 1:
        _init_worker()
        for (kind, seed), tasks in tasks_for.items():
            on_world(build_world_task(kind, seed, sizes, tasks[0]["world_root"]))
            for task in [t for t in tasks if not waits(t)] + [t for t in tasks if waits(t)]:
                on_run(run_task(task))
    else:
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=context, initializer=_init_worker) as pool:
            # worlds first (in parallel); then every run, seed by seed and the longest rows first, so that a
            # cut-off loses whole late seeds rather than a scattering of rows
            builds = {pool.submit(build_world_task, kind, seed, sizes, tasks[0]["world_root"]): (kind, seed)
                      for (kind, seed), tasks in tasks_for.items()}
            ready = []
            for future in cf.as_completed(builds):
                try:
                    on_world(future.result())
                    ready += tasks_for[builds[future]]
                except Exception as exc:  # noqa: BLE001 -- a failed world is logged, the others go on
                    log(f"world {builds[future]} FAILED: {type(exc).__name__}: {exc}")
            ready.sort(key=lambda t: (seeds.index(t["seed"]), -cost(t["row"]), worlds.index(t["world"]),
                                      t["row"], t["beta"]))
            later = {t["match_dir"]: t for t in ready if waits(t)}  # started when the run they match is done
            runs = {pool.submit(run_task, task): task for task in ready if not waits(task)}
            pending = set(runs)
            while pending:
                finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    task = runs[future]
                    try:
                        on_run(future.result())
                    except Exception as exc:  # noqa: BLE001 -- a worker died (run_task records ordinary failures)
                        on_run({"world": task["world"], "seed": task["seed"], "row": task["row"],
                                "beta": task["beta"], "error": f"{type(exc).__name__}: {exc}"})
                    follower = later.pop(task["run_dir"], None)
                    if follower is not None:
                        submitted = pool.submit(run_task, follower)
                        runs[submitted] = follower
                        pending.add(submitted)
                if args.time_limit and time.perf_counter() - start > args.time_limit:
                    log(f"--time-limit {args.time_limit:g}s reached: {sum(not f.done() for f in runs)} run(s) "
                        "left unfinished; writing the partial results")
                    stopped = True
                    for f in runs:
                        f.cancel()
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.terminate()
                    break
    results = write(partial=stopped)
    rec = results["recommended"]
    log(f"done in {results['wall_seconds']:.0f}s; recommended mode: {rec['row'] if rec else '-'}; "
        f"results: {output} and {output.with_suffix('.md')}")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()

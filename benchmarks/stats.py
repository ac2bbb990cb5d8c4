"""Honest statistics for the benchmarks: means +- standard error over seeds, paired differences with a 95% CI,
and wins / ties / losses (a tie is |difference| < TIE gold). The benchmarks import these helpers; run as a
script, it recomputes every number the README and docs cite from the committed JSON in benchmarks/results/:

    python benchmarks/stats.py                 # all tables, as markdown
    python benchmarks/stats.py --json OUT.json # the same numbers, machine-readable

Conventions (used everywhere in the docs): "m ± s" is mean ± SE over seeds (SE = sample SD / sqrt(n));
a paired difference is computed per seed, then summarised the same way, with its 95% t-interval;
W/T/L counts seeds where the difference is >= TIE, within (-TIE, TIE), or <= -TIE.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TIE = 0.005  # |difference| below this (gold reward) is a tie


# ------------------------------------------------------------------------------------------- helpers

def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided Student-t critical value."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mean_se(values) -> dict | None:
    """{mean, se, sd, n} over the non-None values (se/sd None for one value)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "se": sd / math.sqrt(n) if sd is not None else None, "sd": sd, "n": n}


def wtl(diffs, tie: float = TIE) -> dict:
    """Wins / ties / losses of paired differences (tie: |d| < tie)."""
    diffs = [d for d in diffs if d is not None]
    return {"wins": sum(d >= tie for d in diffs), "ties": sum(abs(d) < tie for d in diffs),
            "losses": sum(d <= -tie for d in diffs)}


def paired(a: dict, b: dict, tie: float = TIE) -> dict | None:
    """a - b per key present in both (keys: seeds): mean, SE, 95% t-CI, W/T/L, the differences."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    diffs = [a[k] - b[k] for k in keys]
    stat = mean_se(diffs)
    ci = None
    if stat["se"] is not None:
        half = t_critical(stat["n"] - 1) * stat["se"]
        ci = [stat["mean"] - half, stat["mean"] + half]
    return {**stat, "ci95": ci, **wtl(diffs, tie), "diffs": dict(zip(map(str, keys), diffs))}


def decide(diff: dict | None) -> str:
    """The preregistered decision rule: 'beats' if mean > 0 and the 95% CI excludes 0, 'loses' if mean < 0 and
    it excludes 0, otherwise 'not shown' (docs/preregistration.md)."""
    if not diff or diff.get("ci95") is None:
        return "not shown"
    low, high = diff["ci95"]
    if diff["mean"] > 0 and low > 0:
        return "beats"
    if diff["mean"] < 0 and high < 0:
        return "loses"
    return "not shown"


def fmt(stat: dict | None, signed: bool = False, digits: int = 3) -> str:
    """'m ± se' (signed for differences)."""
    if not stat:
        return "–"
    text = f"{stat['mean']:+.{digits}f}" if signed else f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['se']:.{digits}f}" if stat.get("se") is not None else "")


def fmt_diff(diff: dict | None, digits: int = 3) -> str:
    """'+m ± se [lo, hi] W/T/L'."""
    if not diff:
        return "–"
    ci = f" [{diff['ci95'][0]:+.{digits}f}, {diff['ci95'][1]:+.{digits}f}]" if diff.get("ci95") else ""
    return f"{fmt(diff, signed=True, digits=digits)}{ci} {diff['wins']}/{diff['ties']}/{diff['losses']}"


# ------------------------------------------------------------------------------------------- committed JSON

def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def self_review_gold(results: dict, world: str, row: str, beta: float | None = None,
                     key: str = "test") -> dict[int, float]:
    """seed -> test gold of one row of a self_review.py results file, at `beta` (default: the chosen beta)."""
    if beta is None:
        beta = results["beta"][f"{world}/{row}"]["beta"]
    return {r["seed"]: r[key]["gold"] for r in results["runs"]
            if r["world"] == world and r["row"] == row and r["beta"] == beta and key in r}


def demo_gold(results: dict, daa: str, method: str, noise: float | None = None,
              key: str = "test") -> dict[int, float]:
    """seed -> test gold of one (DAA, method) of a `sera demo` results.json, at its chosen beta."""
    noise = results["options"]["noise"] if noise is None else noise
    beta = results["beta"][f"{method}-{daa}"]["chosen"]
    return {r["seed"]: r[key]["gold"] for r in results["runs"]
            if r["daa"] == daa and r["method"] == method and r["beta"] == beta and r["noise"] == noise
            and key in r}


def pair_passes_self_review(results: dict, world: str, row: str, beta: float) -> dict[int, int]:
    """seed -> pair passes of a self_review.py run: every kept pair once per iteration (offline pairs less the
    held-out 10%, plus the generated ones), from the per-iteration records."""
    out = {}
    for r in results["runs"]:
        if r["world"] == world and r["row"] == row and r["beta"] == beta and r.get("budget"):
            out[r["seed"]] = r["budget"]["pair_passes"]
    return out


def section_self_review() -> tuple[list[str], dict]:
    """World A/B tables of docs/self-review.md, in SE, and the recommended mode's paired counts."""
    lines, data = [], {}
    main = load("self-review.json")
    for world, label in (("sorting", "A"), ("filler", "B")):
        lines += [f"### self-review.json, world {label} ({world}), 5 seeds: test gold mean ± SE; − DPO paired",
                  "", "| row | beta | test gold | − DPO (± SE) [95% CI] W/T/L |", "|---|---|---|---|"]
        dpo = self_review_gold(main, world, "dpo")
        for t in main["table"]:
            if t["world"] != world or t["row"] == "sft":
                continue
            gold = self_review_gold(main, world, t["row"])
            diff = paired(gold, dpo) if t["row"] != "dpo" else None
            data[f"self-review/{world}/{t['row']}"] = {"gold": mean_se(gold.values()), "minus_dpo": diff}
            lines.append(f"| {t['row']} | {t['beta']} | {fmt(mean_se(gold.values()))} | {fmt_diff(diff)} |")
        lines.append("")
    return lines, data


def section_recommended() -> tuple[list[str], dict]:
    """The recommended mode (likelihood labeller, no selection, one optimiser run) against plain DPO: seeds 1-5
    (self-review-probes-no-selection.json) and 6-10 (self-review-replication-seeds-6-10.json)."""
    row = "likelihood-no-selection-run-carry"
    lines = ["### The recommended mode − plain DPO, paired by seed (gold worlds A and B)", "",
             "| world | seeds | beta (rec / DPO) | recommended | DPO | − DPO (± SE) [95% CI] W/T/L | per seed |",
             "|---|---|---|---|---|---|---|"]
    data, all_diffs = {}, []
    for name, seeds in (("self-review-probes-no-selection.json", "1–5"),
                        ("self-review-replication-seeds-6-10.json", "6–10")):
        results = load(name)
        for world, label in (("sorting", "A"), ("filler", "B")):
            betas = [results["beta"][f"{world}/{row}"]["beta"]]
            if seeds == "1–5" and world == "filler":
                betas.append(0.5)  # the beta the published table implied (issue 18)
            dpo_beta = results["beta"][f"{world}/dpo"]["beta"]
            dpo = self_review_gold(results, world, "dpo")
            for beta in betas:
                rec = self_review_gold(results, world, row, beta)
                diff = paired(rec, dpo)
                chosen = beta == betas[0]
                if chosen:
                    all_diffs += list(diff["diffs"].values())
                data[f"{label}/{seeds}/beta{beta:g}"] = diff
                lines.append(f"| {label} | {seeds} | {beta:g}{'' if chosen else ' (not chosen)'} / {dpo_beta:g} | "
                             f"{fmt(mean_se(rec.values()))} | {fmt(mean_se(dpo.values()))} | {fmt_diff(diff)} | "
                             + ", ".join(f"{d:+.4f}" for d in diff["diffs"].values()) + " |")
    counts = wtl(all_diffs)
    data["all_20"] = {**counts, "n": len(all_diffs)}
    lines += ["", f"All 20 world-seeds at the chosen betas: {counts['wins']} wins, {counts['ties']} ties, "
                  f"{counts['losses']} losses (tie: |Δ| < {TIE}).", ""]
    return lines, data


PROBE_TABLES = {
    "probes: the schedule alone, and gentler selection (− DPO; − no-review)": [
        (row, "self-review-probes.json", row, [("self-review-probes.json", "dpo"),
                                               ("self-review-probes.json", "no-review")])
        for row in ("no-review", "crossfit", "selection-k0.9", "crossfit-k0.9")],
    "probes: one learning-rate schedule (− DPO; run − per-iteration)": [
        ("no-review-run", "self-review-probes-run-schedule.json", "no-review-run",
         [("self-review-probes-run-schedule.json", "dpo"), ("self-review-probes.json", "no-review")]),
        ("crossfit-k0.9-run", "self-review-probes-run-schedule.json", "crossfit-k0.9-run",
         [("self-review-probes-run-schedule.json", "dpo"), ("self-review-probes.json", "crossfit-k0.9")]),
        ("crossfit+irm-guard (2 cores)", "self-review-recommended-2core.json", "crossfit+irm-guard",
         [("self-review-recommended-2core.json", "dpo")]),
        ("crossfit+irm-guard-run", "self-review-probes-run-schedule.json", "crossfit+irm-guard-run",
         [("self-review-probes-run-schedule.json", "dpo"), ("self-review-recommended-2core.json",
                                                            "crossfit+irm-guard")])],
    "probes: the optimizer carried (− DPO; carry − run schedule alone)": [
        ("no-review-run-carry", "self-review-probes-carry.json", "no-review-run-carry",
         [("self-review-probes-carry.json", "dpo"), ("self-review-probes-run-schedule.json", "no-review-run")]),
        ("crossfit+irm-guard-run-carry", "self-review-probes-carry.json", "crossfit+irm-guard-run-carry",
         [("self-review-probes-carry.json", "dpo"),
          ("self-review-probes-run-schedule.json", "crossfit+irm-guard-run")])],
    "probes: the components as one optimiser run (− DPO)": [
        (row, "self-review-probes-one-run.json", row, [("self-review-probes-one-run.json", "dpo")])
        for row in ("sera-run-carry", "likelihood-run-carry", "oracle-run-carry", "crossfit-k0.9-run-carry")],
    "probes: every pair kept (− DPO; seeds 1–5, then 6–10)": [
        ("implicit labeller, no selection", "self-review-probes-no-selection-2.json", "sera-no-selection-run-carry",
         [("self-review-probes-no-selection-2.json", "dpo")]),
        ("likelihood, no selection (recommended)", "self-review-probes-no-selection.json",
         "likelihood-no-selection-run-carry", [("self-review-probes-no-selection.json", "dpo")]),
        ("likelihood, no selection, seeds 6–10", "self-review-replication-seeds-6-10.json",
         "likelihood-no-selection-run-carry", [("self-review-replication-seeds-6-10.json", "dpo")]),
        ("likelihood + IRM guard", "self-review-probes-no-selection-2.json",
         "likelihood-no-selection-irm-guard-run-carry", [("self-review-probes-no-selection-2.json", "dpo")]),
        ("gold labeller (oracle)", "self-review-probes-no-selection.json", "oracle-no-selection-run-carry",
         [("self-review-probes-no-selection.json", "dpo")]),
        ("previous preset, seeds 6–10", "self-review-replication-seeds-6-10.json", "crossfit+irm-guard-run-carry",
         [("self-review-replication-seeds-6-10.json", "dpo")])],
}
"""The probe tables of docs/self-review.md: (label, file, row, [(base file, base row), ...]); every difference is
paired by seed (the worlds of a seed are identical across files), each row at its own chosen beta."""


def section_probes() -> tuple[list[str], dict]:
    lines, data = [], {}
    for title, specs in PROBE_TABLES.items():
        lines += [f"### {title}", "", "| row | vs | A: Δ ± SE [95% CI] W/T/L | B: Δ ± SE [95% CI] W/T/L |",
                  "|---|---|---|---|"]
        for label, name, row, bases in specs:
            results = load(name)
            for base_name, base_row in bases:
                if (base_name, base_row) == (name, row):
                    continue
                base = load(base_name)
                cells = []
                for world in ("sorting", "filler"):
                    diff = paired(self_review_gold(results, world, row), self_review_gold(base, world, base_row))
                    data[f"{name}/{row}/{world}-{base_name}/{base_row}"] = diff
                    cells.append(fmt_diff(diff))
                lines.append(f"| {label} | {base_row} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return lines, data


def section_budget() -> tuple[list[str], dict]:
    """Pair passes of the recommended runs relative to plain DPO's 3 epochs, from the committed per-iteration
    records (runs before --match-budget existed did not record a budget): offline training pairs once per
    iteration, plus the bootstrapped pairs of iterations 2 and 3 (no selection: every pair is kept)."""
    lines = ["### Budget of the recommended mode: pair passes / plain DPO's 3 epochs (committed runs)", "",
             "| source | world | seeds | ratio (mean, range) |", "|---|---|---|---|"]
    data = {}
    row = "likelihood-no-selection-run-carry"
    for name, seeds in (("self-review-probes-no-selection.json", "1–5"),
                        ("self-review-replication-seeds-6-10.json", "6–10")):
        results = load(name)
        for world, label in (("sorting", "A"), ("filler", "B")):
            beta = results["beta"][f"{world}/{row}"]["beta"]
            ratios = []
            for r in results["runs"]:
                if r["world"] != world or r["row"] != row or r["beta"] != beta:
                    continue
                generated = [d for d in r["diagnostics"] if d.get("generated_pairs")]
                offline = generated[0]["generated_pairs"] / generated[0]["generated_share_kept"] - \
                    generated[0]["generated_pairs"]
                ratios.append(1 + sum(d["generated_pairs"] for d in generated) / (3 * round(offline)))
            data[f"{label}/{seeds}"] = ratios
            lines.append(f"| {name} | {label} | {seeds} | {sum(ratios) / len(ratios):.2f} "
                         f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    for name in ("demo-recommended.json", "demo-recommended-other-daas.json"):
        results = load(name)
        for daa in results["options"]["daa"].split(","):
            beta = results["beta"][f"sera/recommended-{daa}"]["chosen"]
            ratios = [1 + sum(x["generated_pairs"] for x in r["selection"]) / (3 * r["selection"][0]["offline_in_pool"])
                      for r in results["runs"] if r["method"] == "sera/recommended" and r["daa"] == daa
                      and r["beta"] == beta and r.get("selection")]
            data[f"demo/{daa}"] = ratios
            lines.append(f"| {name} | demo, {daa} | 1–3 | {sum(ratios) / len(ratios):.2f} "
                         f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    lines.append("")
    return lines, data


def section_demo() -> tuple[list[str], dict]:
    """The demo's tables (docs/demo.md, README) in SE, with paired differences and W/T/L."""
    lines, data = [], {}
    full = load("demo-full.json")
    lines += ["### demo-full.json (noise 0.3, 3 seeds): test gold mean ± SE; SeRA − DAA paired", "",
              "| DAA | plain DAA | SeRA-DAA | SeRA − DAA (± SE) [95% CI] W/T/L |", "|---|---|---|---|"]
    for daa in full["options"]["daa"].split(","):
        plain, sera = demo_gold(full, daa, "daa"), demo_gold(full, daa, "sera")
        diff = paired(sera, plain)
        data[f"demo-full/{daa}"] = {"daa": mean_se(plain.values()), "sera": mean_se(sera.values()), "diff": diff}
        lines.append(f"| {daa} | {fmt(mean_se(plain.values()))} | {fmt(mean_se(sera.values()))} | {fmt_diff(diff)} |")
    lines.append("")
    for name, title in (("demo-recommended.json", "DPO"), ("demo-recommended-other-daas.json", "IPO, SLiC-HF, SimPO")):
        results = load(name)
        lines += [f"### {name} ({title}, 3 seeds): recommended − plain DAA (3 epochs), paired", "",
                  "| DAA | plain DAA | the paper's SeRA | recommended | recommended − DAA (± SE) [95% CI] W/T/L |",
                  "|---|---|---|---|---|"]
        for daa in results["options"]["daa"].split(","):
            plain = demo_gold(results, daa, "daa")
            sera = demo_gold(results, daa, "sera")
            rec = demo_gold(results, daa, "sera/recommended")
            diff = paired(rec, plain)
            data[f"{name}/{daa}"] = {"daa": mean_se(plain.values()), "sera": mean_se(sera.values()),
                                     "recommended": mean_se(rec.values()), "diff": diff}
            lines.append(f"| {daa} | {fmt(mean_se(plain.values()))} | {fmt(mean_se(sera.values()))} | "
                         f"{fmt(mean_se(rec.values()))} | {fmt_diff(diff)} |")
        lines.append("")
    base = load("demo-baselines.json")
    lines += ["### demo-baselines.json (DPO, 3 seeds): row − DPO, paired", "", "| row | gold | − DPO |", "|---|---|---|"]
    dpo = demo_gold(base, "dpo", "daa")
    for method in base["options"]["methods"]:
        gold = demo_gold(base, "dpo", method)
        diff = paired(gold, dpo) if method != "daa" else None
        data[f"demo-baselines/{method}"] = {"gold": mean_se(gold.values()), "diff": diff}
        lines.append(f"| {method} | {fmt(mean_se(gold.values()))} | {fmt_diff(diff)} |")
    lines.append("")
    return lines, data


def _demo_runs(results: dict, daa: str, method: str, noise: float) -> list[dict]:
    beta = results["beta"][f"{method}-{daa}"]["chosen"]
    return [r for r in results["runs"] if r["daa"] == daa and r["method"] == method and r["beta"] == beta
            and r["noise"] == noise and not r.get("budget_donor")]


def demo_table(name: str, full: bool = False) -> list[str]:
    """A `sera demo` results file as the docs show it: every (noise, DAA, method), mean ± SE over seeds, and
    each method minus its DAA (3 epochs) paired by seed with wins/ties/losses."""
    results = load(name)
    if full:
        header = "| noise | DAA | method | beta | seeds | gold reward | win rate vs SFT | length | exact | greedy gold | minus DAA (gold) |"
    else:
        header = "| DAA | method | beta | gold reward | win rate vs SFT | length | greedy gold | minus DAA (gold), W/T/L |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    noises = [results["options"]["noise"], *results["options"].get("noise_sweep", [])]
    for noise in noises:
        worlds = [w for k, w in results["worlds"].items() if k.startswith(f"noise{noise:g}-")]
        sft = {key: mean_se([w["sft"][key]["gold"] for w in worlds]) for key in ("test", "test_greedy")}
        sft_len = mean_se([w["sft"]["test"]["length"] for w in worlds])
        if full:
            lines.append(f"| {noise:g} | - | sft | - | {len(worlds)} | {fmt(sft['test'])} | 0.500 | "
                         f"{fmt(sft_len, digits=2)} | {fmt(mean_se([w['sft']['test']['exact'] for w in worlds]))} | "
                         f"{fmt(sft['test_greedy'])} |  |")
        for daa in results["options"]["daa"].split(","):
            base = {r["seed"]: r["test"]["gold"] for r in _demo_runs(results, daa, "daa", noise)}
            for method in results["options"].get("methods", ["daa", "sera"]):
                runs = _demo_runs(results, daa, method, noise)
                if not runs:
                    continue
                gold = {r["seed"]: r["test"]["gold"] for r in runs}
                diff = paired(gold, base) if method != "daa" else None
                cells = [fmt(mean_se(gold.values())), fmt(mean_se([r["test"]["win_rate_vs_sft"] for r in runs])),
                         fmt(mean_se([r["test"]["length"] for r in runs]), digits=2)]
                greedy = fmt(mean_se([r["test_greedy"]["gold"] for r in runs]))
                minus = "" if diff is None else (f"{fmt(diff, signed=True)} ({diff['wins']}/{diff['ties']}/"
                                                 f"{diff['losses']})")
                beta = f"{runs[0]['beta']:g}"
                if full:
                    lines.append(f"| {noise:g} | {daa} | {method} | {beta} | {len(runs)} | {cells[0]} | {cells[1]} | "
                                 f"{cells[2]} | {fmt(mean_se([r['test']['exact'] for r in runs]))} | {greedy} | "
                                 f"{minus} |")
                else:
                    lines.append(f"| {daa} | {method} | {beta} | {' | '.join(cells)} | {greedy} | {minus} |")
    return lines + [""]


def section_demo_tables() -> tuple[list[str], dict]:
    lines = []
    for name, full in (("demo-full.json", True), ("demo-baselines.json", False), ("demo-no-review.json", False),
                       ("demo-recommended.json", False), ("demo-recommended-other-daas.json", False)):
        lines += [f"### {name} as the docs show it (mean ± SE; minus DAA paired, W/T/L)", ""] + demo_table(name, full)
    return lines, {}


DEMO_TEMPERATURE_FILES = ("demo-quick-matched.json", "demo-matched-seeds-2-3.json")
"""The demo (DPO, noise 0.3) with the equal-budget row and three temperatures: seed 1 from `sera demo --quick`
(beta chosen there on validation: 0.2 for DPO, the recommended mode and DPO at equal budget), seeds 2 and 3 from
`sera demo --seeds 2,3 --betas 0.2` (the full mode's protocol: seed 1's chosen betas reused)."""


def section_demo_temperature() -> tuple[list[str], dict]:
    files = [load(n) for n in DEMO_TEMPERATURE_FILES if (RESULTS / n).exists()]
    if not files:
        return [], {}
    keys = {"test": "T = 1", "test_t0.7": "T = 0.7", "test_greedy": "greedy"}
    gold: dict[tuple[str, str], dict[int, float]] = {}
    passes: dict[str, list[int]] = {}
    for results in files:
        for r in results["runs"]:
            if r["daa"] == "dpo" and r["beta"] == 0.2 and not r.get("budget_donor") and r["method"] != "sera":
                for key in keys:
                    gold.setdefault((r["method"], key), {})[r["seed"]] = r[key]["gold"]
                passes.setdefault(r["method"], []).append((r.get("budget") or {}).get("pair_passes"))
    names = {"daa": "DPO, 3 epochs", "daa-matched": "DPO, equal budget", "sera/recommended": "recommended"}
    lines = ["### The demo (DPO, noise 0.3, seeds 1–3, beta 0.2): test gold at three sampling temperatures", "",
             "| row | pair passes | " + " | ".join(keys.values()) + " |", "|---|---|---|---|---|"]
    data = {}
    for method, label in names.items():
        cells = [fmt(mean_se(gold.get((method, key), {}).values())) for key in keys]
        lines.append(f"| {label} | {fmt(mean_se(passes.get(method, [])), digits=0)} | " + " | ".join(cells) + " |")
    lines += ["", "| recommended − | " + " | ".join(keys.values()) + " |", "|---|---|---|---|"]
    for base in ("daa", "daa-matched"):
        diffs = {key: paired(gold[("sera/recommended", key)], gold[(base, key)]) for key in keys}
        data[f"demo/recommended-{base}"] = diffs
        lines.append(f"| {names[base]} | " + " | ".join(fmt_diff(d) for d in diffs.values()) + " |")
    diffs = {key: paired(gold[("daa-matched", key)], gold[("daa", key)]) for key in keys}
    lines.append("| (DPO equal budget − DPO 3 epochs) | " + " | ".join(fmt_diff(d) for d in diffs.values()) + " |")
    return lines + [""], data


def section_files(names: list[str]) -> tuple[list[str], dict]:
    """Tables of self_review.py result files that carry budget-matched and temperature rows (this issue's
    runs): per (world, row) test gold at T = 1, 0.7 and greedy, and every row − each DAA row, paired."""
    lines, data = [], {}
    for name in names:
        path = RESULTS / name
        if not path.exists():
            continue
        results = load(name)
        lines += [f"### {name}", ""]
        for world in results["settings"]["worlds"]:
            rows = [r for r in results["settings"]["rows"]]
            lines += [f"world {world}: test gold, mean ± SE over seeds, at each temperature", "",
                      "| row | beta | T = 1 | T = 0.7 | greedy |", "|---|---|---|---|---|"]
            for row in rows:
                if f"{world}/{row}" not in results["beta"]:
                    continue
                beta = results["beta"][f"{world}/{row}"]["beta"]
                cells = [fmt(mean_se(self_review_gold(results, world, row, beta, key).values()))
                         for key in ("test", "test_t0.7", "test_greedy")]
                lines.append(f"| {row} | {beta:g} | " + " | ".join(cells) + " |")
            lines.append("")
            bases = [r for r in ("dpo", "dpo-matched") if f"{world}/{r}" in results["beta"]]
            lines += ["paired differences (± SE) [95% CI] W/T/L", "",
                      "| row | vs | T = 1 | T = 0.7 | greedy | decision (T = 1) |", "|---|---|---|---|---|---|"]
            for row in rows:
                if row in bases or f"{world}/{row}" not in results["beta"]:
                    continue
                for base in bases:
                    diffs = {key: paired(self_review_gold(results, world, row, key=key),
                                         self_review_gold(results, world, base, key=key))
                             for key in ("test", "test_t0.7", "test_greedy")}
                    data[f"{name}/{world}/{row}-{base}"] = {**diffs, "decision": decide(diffs["test"])}
                    lines.append(f"| {row} | {base} | " + " | ".join(fmt_diff(d) for d in diffs.values())
                                 + f" | {decide(diffs['test'])} |")
            lines.append("")
    return lines, data


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--files", default="preregistered-carry.json,self-review-matched-temperature.json",
                   help="self_review.py result files with matched/temperature rows to tabulate")
    args = p.parse_args(argv)
    lines, data = ["# Numbers the docs cite, recomputed from benchmarks/results/ (mean ± SE; tie |Δ| < "
                   f"{TIE})", ""], {}
    for section in (section_self_review, section_recommended, section_probes, section_budget, section_demo,
                    section_demo_tables, section_demo_temperature):
        more, numbers = section()
        lines += more
        data.update(numbers)
    more, numbers = section_files([n for n in args.files.split(",") if n])
    lines += more
    data.update(numbers)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data


if __name__ == "__main__":
    sys.exit(main() and 0)

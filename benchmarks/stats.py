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
    for section in (section_self_review, section_recommended, section_demo):
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

"""What a run tells its user: the one-screen summary at the end, and `sera report OUT` (tables + plots)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from sera.errors import SeraInputError
from sera.progress import console

DIAGNOSTICS = [  # (summary key, column title)
    ("val_irm_accuracy", "held-out IRM acc"), ("labeller_accuracy", "labeller acc"),
    ("displacement_corr", "displacement"), ("generated_share_kept", "gen. share kept"),
    ("length_drift", "length drift"), ("guard_score", "guard"),
]


def print_summary(summary: dict) -> None:
    data = summary["data"]
    skipped = ", ".join(f"{k} {v}" for k, v in data["skipped"].items()) or "none"
    console.print(f"[bold]{summary['method'].upper()}-{summary['daa'].upper()}[/]: {data['offline_pairs']} training "
                  f"pairs, {data.get('validation_pairs', 0)} held out, from {data['rows_read']} rows "
                  f"(skipped: {skipped})", highlight=False)
    table = Table(title="iterations", title_justify="left")
    for column in ("it", "pool", "gen", "kept", "IRM kept", "IRM dropped", "score s", "sample s", "train s", "loss"):
        table.add_column(column, justify="right")
    for it in summary["iterations"]:
        table.add_row(str(it["iteration"]), str(it.get("pool_size", "")), str(it.get("generated", "-")),
                      str(it.get("selected", "")), _num(it.get("mean_margin_selected")),
                      _num(it.get("mean_margin_dropped")), f"{it['seconds_scoring']:.1f}",
                      f"{it['seconds_generating']:.1f}", f"{it['seconds_training']:.1f}", _num(it["final_loss"]))
    console.print(table)
    if any(key in it for it in summary["iterations"] for key, _ in DIAGNOSTICS):
        console.print(diagnostics_table(summary))
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    final = summary.get("final_iterate")
    console.print(f"final model: {summary['final_model']}" + (f" (iterate {final})" if final is not None else "")
                  + f"  ({summary['seconds_total']:.0f} s)", highlight=False)


def diagnostics_table(summary: dict) -> Table:
    table = Table(title="self-review diagnostics (held-out pairs; see docs/self-review.md)", title_justify="left")
    table.add_column("it", justify="right")
    for _, title in DIAGNOSTICS:
        table.add_column(title, justify="right")
    rows = [{"iteration": 0, **summary.get("sft_review", {})}] + summary["iterations"]
    for it in rows:
        table.add_row(str(it["iteration"]), *[_num(it.get(key), 3) for key, _ in DIAGNOSTICS])
    return table


def load_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeraInputError(f"{path}: not found (is {run_dir} a finished `sera train` run?)") from None
    except json.JSONDecodeError as exc:
        raise SeraInputError(f"{path}: not valid JSON ({exc.msg})") from exc


def report_run(run_dir: str | Path) -> Path:
    """Print a finished run's summary and diagnostics, and plot them to OUT/report.png."""
    summary = load_summary(run_dir)
    print_summary(summary)
    return plot_diagnostics(summary, Path(run_dir) / "report.png")


# -- two runs side by side: "is self-review better than just training longer, on my data?" ----------------

HELD_OUT_OPTIONS = ("dataset", "dataset_split", "dataset_format", "seed", "validation_ratio", "max_validation_pairs")
"""Options that fix the held-out pairs: two runs' held-out IRM accuracies compare only where these agree."""
SHOWN_OPTIONS = ("method", "daa", "beta", "iterations", "learning_rate", "batch_size", "grad_accum", "lr_schedule",
                 "bootstrap_labeller", "selection", "match_budget")


def _config(run_dir: Path) -> dict:
    from sera.config import read_recipe

    path = run_dir / "config.yaml"
    return read_recipe(path) if path.exists() else {}


def _final_record(summary: dict) -> dict:
    """The record of the iterate the run returned (the guard may pick an earlier one), else its last."""
    records = summary.get("iterations") or [{}]
    final = summary.get("final_iterate")
    if final == 0:
        return {"iteration": 0, **summary.get("sft_review", {})}
    return next((it for it in records if it.get("iteration") == final), records[-1])


def _budget(summary: dict) -> dict:
    budget = summary.get("budget")
    if budget:
        return budget
    from sera.budget import budget_of  # runs written before summary.json recorded it

    return budget_of(summary.get("iterations", [])).to_dict()


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """Two finished runs side by side: budget, held-out IRM accuracy per iteration and at the returned iterate,
    the other diagnostics there, warnings, and the options in which the runs differ."""
    runs = [Path(run_a), Path(run_b)]
    summaries = [load_summary(r) for r in runs]
    configs = [_config(r) for r in runs]
    finals = [_final_record(s) for s in summaries]
    iterations = sorted({it["iteration"] for s in summaries for it in s.get("iterations", [])} | {0})
    by_iteration = [{0: s.get("sft_review", {}), **{it["iteration"]: it for it in s.get("iterations", [])}}
                    for s in summaries]
    return {
        "runs": [str(r) for r in runs],
        "options": {k: [c.get(k) for c in configs] for k in SHOWN_OPTIONS if any(k in c for c in configs)},
        "budget": [_budget(s) for s in summaries],
        "data": [{k: s.get("data", {}).get(k) for k in ("offline_pairs", "validation_pairs")} for s in summaries],
        "held_out_irm_accuracy": [{"iteration": t, "values": [b.get(t, {}).get("val_irm_accuracy")
                                                             for b in by_iteration]} for t in iterations],
        "final": {"iterate": [s.get("final_iterate", f.get("iteration")) for s, f in zip(summaries, finals)],
                  **{key: [f.get(key) for f in finals] for key, _ in DIAGNOSTICS}},
        "warnings": [s.get("warnings", []) for s in summaries],
        "seconds": [s.get("seconds_total") for s in summaries],
        "held_out_differs": [k for k in HELD_OUT_OPTIONS if configs[0].get(k) != configs[1].get(k)],
    }


def print_comparison(comparison: dict) -> None:
    a, b = comparison["runs"]
    console.print(f"[bold]A[/] = {a}\n[bold]B[/] = {b}", highlight=False)
    table = Table(title="runs", title_justify="left")
    for column in ("", "A", "B"):
        table.add_column(column, justify="left" if not column else "right", overflow="fold")
    for key, values in comparison["options"].items():
        table.add_row(key, *[_text(v) for v in values])
    for key in ("optimizer_steps", "pair_passes"):
        table.add_row(f"budget: {key.replace('_', ' ')}", *[_text(bud.get(key)) for bud in comparison["budget"]])
    matched = [bud.get("matched_to", {}).get("run") for bud in comparison["budget"]]
    if any(matched):
        table.add_row("budget matched to", *[_text(m) for m in matched])
    for key in ("offline_pairs", "validation_pairs"):
        table.add_row(key.replace("_", " "), *[_text(d.get(key)) for d in comparison["data"]])
    table.add_row("seconds", *[_num(s, 0) for s in comparison["seconds"]])
    console.print(table)

    table = Table(title="held-out IRM accuracy per iteration", title_justify="left",
                  caption="0 = SFT; a plain DAA run records its last epoch", caption_justify="left")
    for column in ("it", "A", "B"):
        table.add_column(column, justify="right")
    for row in comparison["held_out_irm_accuracy"]:
        table.add_row(str(row["iteration"]), *[_num(v, 3) for v in row["values"]])
    console.print(table)

    final = comparison["final"]
    table = Table(title="at the iterate each run returned", title_justify="left")
    for column in ("", "A", "B", "B - A"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("iterate", *[_text(v) for v in final["iterate"]], "")
    for key, title in DIAGNOSTICS:
        values = final[key]
        if any(v is not None for v in values):
            diff = values[1] - values[0] if None not in values else None
            table.add_row(title, *[_num(v, 3) for v in values], "-" if diff is None else f"{diff:+.3f}")
    console.print(table)
    for name, warnings in zip("AB", comparison["warnings"]):
        for warning in warnings:
            console.print(f"[yellow]warning ({name}):[/] {warning}", highlight=False, soft_wrap=True)
    if comparison["held_out_differs"]:
        console.print(f"[yellow]note:[/] the runs differ in {', '.join(comparison['held_out_differs'])}: they hold "
                      "out different pairs, so their held-out accuracies do not compare", highlight=False)
    console.print("Held-out IRM accuracy is agreement with your own held-out labels (noisy labels cap it); on "
                  "a few hundred pairs its standard error is ~0.03-0.05. A gold or judged test set "
                  "(`sera generate` + `sera eval`) is the stronger comparison.", highlight=False)


def report_pair(run_a: str | Path, run_b: str | Path) -> dict:
    """`sera report A B`: print the comparison (nothing is written into either run) and return it."""
    comparison = compare_runs(run_a, run_b)
    print_comparison(comparison)
    return comparison


def plot_diagnostics(summary: dict, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"iteration": 0, **summary.get("sft_review", {})}] + summary["iterations"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("val_irm_accuracy", "held-out IRM accuracy"), ("labeller_accuracy", "labeller accuracy")):
        _line(axes[0], rows, key, label)
    axes[0].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[0].set_title("does the reviewer agree with held-out labels?")
    _line(axes[1], rows, "displacement_corr", "implicit reward vs ref. likelihood (Spearman)")
    _line(axes[1], rows, "generated_share_kept", "share of kept pairs bootstrapped")
    axes[1].axhline(0, color="grey", linestyle=":")
    axes[1].set_title("what the reviewer favours")
    _line(axes[2], rows, "length_drift", "held-out response length / SFT's")
    _line(axes[2], rows, "guard_score", "guard score")
    axes[2].set_title("drift and guard")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def _line(ax, rows: list[dict], key: str, label: str) -> None:
    points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
    if points:
        ax.plot(*zip(*points), marker="o", label=label)


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _text(value) -> str:
    return "-" if value is None else str(value)

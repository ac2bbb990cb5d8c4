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


def report_run(run_dir: str | Path) -> Path:
    """Print a finished run's summary and diagnostics, and plot them to OUT/report.png."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeraInputError(f"{path}: not found (is {run_dir} a finished `sera train` run?)") from None
    except json.JSONDecodeError as exc:
        raise SeraInputError(f"{path}: not valid JSON ({exc.msg})") from exc
    print_summary(summary)
    return plot_diagnostics(summary, Path(run_dir) / "report.png")


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

"""The one-screen summary printed at the end of a run."""

from __future__ import annotations

from rich.table import Table

from sera.progress import console


def print_summary(summary: dict) -> None:
    data = summary["data"]
    skipped = ", ".join(f"{k} {v}" for k, v in data["skipped"].items()) or "none"
    console.print(f"[bold]{summary['method'].upper()}-{summary['daa'].upper()}[/]: {data['offline_pairs']} offline "
                  f"pairs from {data['rows_read']} rows (skipped: {skipped})", highlight=False)
    table = Table(title="iterations", title_justify="left")
    for column in ("iter", "pool", "generated", "selected", "margin kept", "margin dropped",
                   "scoring s", "sampling s", "training s", "loss"):
        table.add_column(column, justify="right")
    for it in summary["iterations"]:
        table.add_row(str(it["iteration"]), str(it.get("pool_size", "")), str(it.get("generated", "-")),
                      str(it.get("selected", "")), _num(it.get("mean_margin_selected")),
                      _num(it.get("mean_margin_dropped")), f"{it['seconds_scoring']:.1f}",
                      f"{it['seconds_generating']:.1f}", f"{it['seconds_training']:.1f}", _num(it["final_loss"]))
    console.print(table)
    console.print(f"final model: {summary['final_model']}  ({summary['seconds_total']:.0f} s)", highlight=False)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"

"""`sera eval`: the win rate of a candidate's outputs against a baseline's, judged pairwise.

Both files come from `sera generate` (JSONL with ``id``, ``prompt``, ``output``; lines that also
carry ``sample`` are paired by ``(id, sample)``) or are AlpacaEval model-outputs JSON lists
(paired by ``instruction``). Ids present in only one file are counted in the report
(``unmatched_candidate``, ``unmatched_baseline``), never silently dropped; no overlap is an error,
and so is a shared id whose prompts differ (the files come from different prompt sets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sera.errors import SeraInputError
from sera.eval.judges import Judge, build_judge
from sera.eval.winrate import summarize
from sera.io import JSON_ERRORS, has_lone_surrogate, json_error, preview, read_utf8, undecodable_column, write_json


def load_outputs(path: str | Path) -> dict[Any, dict]:
    """{pairing key: {"id", "prompt", "output", ...}} from a `sera generate` JSONL or AlpacaEval JSON file."""
    path = Path(path)
    if not path.is_file():
        raise SeraInputError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return _load_alpaca_json(path)
    rows: dict[Any, dict] = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            column = undecodable_column(line)
            if column is not None:
                raise SeraInputError(f"{where}: not valid UTF-8 (a byte at column {column})")
            try:
                row = json.loads(line)
            except JSON_ERRORS as exc:
                raise SeraInputError(f"{where}: not valid JSON ({json_error(exc, one_line=True)})") from exc
            if not isinstance(row, dict):
                raise SeraInputError(f"{where}: expected a JSON object")
            for name in ("id", "prompt", "output"):
                if name not in row:
                    raise SeraInputError(f"{where}: missing field {name!r}")
            if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
                raise SeraInputError(f"{where}: field 'id' must be a string or an integer")
            for name in ("prompt", "output"):
                if not isinstance(row[name], str):
                    raise SeraInputError(f"{where}: field {name!r} must be a string")
            _check_text(row, ("id", "prompt", "output"), where)
            sample = row.get("sample", 0)
            if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
                raise SeraInputError(f"{where}: field 'sample' must be a non-negative integer")
            key = (str(row["id"]), sample) if sample else str(row["id"])
            if key in rows:
                raise SeraInputError(f"{where}: duplicate id {preview(row['id'])}"
                                     + (f" (sample {sample})" if sample else ""))
            rows[key] = {**row, "_where": where}
    if not rows:
        raise SeraInputError(f"{path}: no outputs")
    return rows


def _load_alpaca_json(path: Path) -> dict[Any, dict]:
    try:
        data = json.loads(read_utf8(path))
    except JSON_ERRORS as exc:
        raise SeraInputError(f"{path}: not valid JSON ({json_error(exc)})") from exc
    if not isinstance(data, list) or not data:
        raise SeraInputError(f"{path}: expected a non-empty JSON list of {{'instruction', 'output'}} objects")
    rows: dict[Any, dict] = {}
    for index, row in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(row, dict):
            raise SeraInputError(f"{where}: expected an object")
        for name in ("instruction", "output"):
            if not isinstance(row.get(name), str):
                raise SeraInputError(f"{where}: missing or non-string field {name!r}")
        _check_text(row, ("instruction", "output"), where)
        key = str(row.get("id", row["instruction"]))
        if key in rows:
            raise SeraInputError(f"{where}: duplicate instruction (pairing key) {key[:60]!r}")
        rows[key] = {"id": row.get("id", index), "prompt": row["instruction"], "output": row["output"],
                     "generator": row.get("generator"), "_where": where}
    return rows


def _check_text(row: dict, names: tuple[str, ...], where: str) -> None:
    """Refuse a lone surrogate (JSON's "\\ud800" escapes decode to one: no judge's tokenizer and no UTF-8 report
    takes it) and a `generator` that is not a string (the report names it)."""
    generator = row.get("generator")
    if generator is not None and not isinstance(generator, str):
        raise SeraInputError(f"{where}: field 'generator' must be a string")
    for name in (*names, "generator"):
        if isinstance(row.get(name), str) and has_lone_surrogate(row[name]):
            raise SeraInputError(f"{where}: field {name!r} holds a lone surrogate (an unpaired \\ud800-\\udfff "
                                 "escape), which is not valid Unicode")


def evaluate(candidate: str | Path, baseline: str | Path, judge: str | Judge, *, output: str | Path | None = None,
             bootstrap_samples: int = 2000, seed: int = 0, **judge_options) -> dict:
    """Judge every (candidate, baseline) pair sharing an id; return (and write to `output`) the report."""
    cand = load_outputs(candidate)
    base = load_outputs(baseline)
    keys = [key for key in cand if key in base]
    if not keys:
        raise SeraInputError(f"{candidate} and {baseline} share no id (first ids: "
                             f"{_preview(cand)} vs {_preview(base)}); generate both from the same prompts")
    for key in keys:
        if cand[key]["prompt"].strip() != base[key]["prompt"].strip():
            raise SeraInputError(f"id {preview(cand[key]['id'])}: the prompts differ between {cand[key]['_where']} and "
                                 f"{base[key]['_where']}; the files come from different prompt sets")
    if isinstance(judge, str):
        judge = build_judge(judge, **judge_options)

    prompts = [cand[k]["prompt"] for k in keys]
    outputs_c = [cand[k]["output"] for k in keys]
    outputs_b = [base[k]["output"] for k in keys]
    extra: dict[str, Any] = {}
    if judge.pointwise:
        scores = judge.score(prompts * 2, outputs_c + outputs_b)
        n = len(keys)
        scores_c, scores_b = scores[:n], scores[n:]
        outcomes = [0 if oc == ob else (a > b) - (a < b)
                    for a, b, oc, ob in zip(scores_c, scores_b, outputs_c, outputs_b)]
        extra = {"mean_score_candidate": sum(scores_c) / n, "mean_score_baseline": sum(scores_b) / n}
    else:
        outcomes = judge.compare(prompts, outputs_c, outputs_b)

    report = summarize(outcomes, [len(o) for o in outputs_c], [len(o) for o in outputs_b],
                       bootstrap_samples=bootstrap_samples, seed=seed)
    report.update({
        "judge": judge.spec,
        **extra,
        "candidate": str(candidate),
        "baseline": str(baseline),
        "candidate_generator": _generator(cand),
        "baseline_generator": _generator(base),
        "unmatched_candidate": len(cand) - len(keys),
        "unmatched_baseline": len(base) - len(keys),
        "length_unit": "characters",
        "bootstrap_samples": bootstrap_samples,
        "seed": seed,
    })
    if output is not None:
        write_json(Path(output), report)
    return report


def print_report(report: dict) -> None:
    """The report as a table on stderr (the rich console sera uses for everything it shows)."""
    from rich.table import Table

    from sera.progress import console

    table = Table(title=f"{report.get('candidate_generator') or report['candidate']} vs "
                        f"{report.get('baseline_generator') or report['baseline']}  (judge: {report['judge']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("pairs", str(report["n"]))
    table.add_row("wins / ties / losses", f"{report['wins']} / {report['ties']} / {report['losses']}")
    table.add_row("win rate (ties half)", f"{100 * report['win_rate']:.1f}%")
    table.add_row("95% bootstrap CI", f"{100 * report['ci_low']:.1f}% - {100 * report['ci_high']:.1f}%")
    table.add_row("length-controlled win rate", f"{100 * report['lc_win_rate']:.1f}%")
    table.add_row("mean length (chars) cand. / base.",
                  f"{report['mean_len_candidate']:.0f} / {report['mean_len_baseline']:.0f}")
    if "mean_score_candidate" in report:
        table.add_row("mean score cand. / base.",
                      f"{report['mean_score_candidate']:.4g} / {report['mean_score_baseline']:.4g}")
    if report.get("unmatched_candidate") or report.get("unmatched_baseline"):
        table.add_row("unmatched ids cand. / base.",
                      f"{report['unmatched_candidate']} / {report['unmatched_baseline']}")
    console.print(table)


def _generator(rows: dict) -> str | None:
    names = {row.get("generator") for row in rows.values() if row.get("generator")}
    return names.pop() if len(names) == 1 else None


def _preview(rows: dict) -> str:
    return ", ".join(preview(row["id"]) for row in list(rows.values())[:3])

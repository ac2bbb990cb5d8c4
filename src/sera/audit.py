"""`sera score`: audit a preference dataset by implicit reward margin (IRM).

Every pair of a dataset is scored with a policy's implicit reward margin under a DAA (`sera.daa`: the
reward the DAA's own loss uses, so the audit and training agree by construction):

    DPO, SLiC-HF:  m = beta * [(log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)]
    IPO:           the same per response token (TRL's IPO loss normalises by length)
    SimPO:         m = beta * [log pi(chosen) / |chosen| - log pi(rejected) / |rejected|]   (no reference)

log-probs summed over the response tokens, with the pair tokenized exactly as `sera train` tokenizes it
(:mod:`sera.tokenization`) and scored by the same batched engine (:mod:`sera.scoring`). A small or
negative margin marks a pair the policy finds ambiguous or contradicts -- a noisy label, or a pair
separable only by a spurious feature.

Two margins:

* plain: `--model POLICY --reference SFT` (a policy trained from SFT). If the policy trained on these very
  pairs, its margin mostly measures how well it memorised their labels, flipped labels included.
* out-of-fold: `--model SFT --crossfit K` trains K fold models from the SFT model, one epoch each on the
  other folds, and scores each pair with the fold model that never saw it (:mod:`sera.crossfit`, the
  margin of `sera train --selection-mode crossfit`). This is the margin to use for finding noisy labels
  before training on them.

Outputs (`--output scored.jsonl|.parquet`, each written atomically):

* the scored file: each scored pair's input row, unchanged, plus the columns of :data:`SCORE_COLUMNS`
  (rows not scored are left out and counted by reason in the summary);
* `<output stem>.summary.json`: counts read / scored / skipped by reason, margin quantiles and the share of
  negative margins, the correlation of the margin with the chosen-minus-rejected length in tokens, and with
  `--label-column` the AUC of a low margin for flagging rows whose label column is true;
* `<output stem>.histogram.png`: the margins' histogram (split by the label column when given);
* with `--keep-ratio R --filtered-output F`: the top R of pairs by margin, as a file `sera train --dataset F`
  reads unchanged (see :func:`filtered_row`).
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sera.daa import DAAS, get_daa
from sera.data import LoadedPairs, PreferencePair, load_pairs
from sera.errors import SeraInputError, SeraRuntimeError
from sera.tokenization import PairTokenizer, TokenizedPair

SCORE_COLUMNS = ("pair_id", "policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                 "reference_rejected_logps", "chosen_tokens", "rejected_tokens", "margin", "rank")
"""Columns `sera score` adds to each row (plus `fold` with --crossfit). log-probs are summed over the response
tokens as scored (after --max-length truncation); reference ones are null for SimPO without a reference;
`rank` 1 is the largest margin (ties broken by pair id, as selection breaks them)."""

OUTPUT_SUFFIXES = (".jsonl", ".parquet")
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
AUC_KEY = "auc_low_margin_flags_true"
AUC_DEFINITION = ("P(margin of a row whose label column is true < margin of a row whose label column is false), "
                  "ties counted half: the AUC of a low margin as a detector of label=true rows (0.5 = chance, "
                  "1 = every true row has a lower margin than every false row)")
TRAIN_OPTIONS = ("learning_rate", "batch_size", "grad_accum", "lr_scheduler_type", "warmup_ratio",
                 "gradient_checkpointing", "logging_steps")
"""`sera train` options that also drive the one-epoch training of each --crossfit fold model."""


@dataclass
class ScoreResult:
    rows: list[dict]
    """The scored rows, in input order: the input row plus :data:`SCORE_COLUMNS`."""
    summary: dict
    output: Path
    summary_path: Path
    histogram_path: Path
    filtered_output: Path | None = None
    margins: np.ndarray = field(default_factory=lambda: np.zeros(0))


def side_paths(output: str | Path) -> tuple[Path, Path, Path]:
    """(summary JSON, histogram PNG, crossfit trainer log) written beside `output`."""
    output = Path(output)
    return (output.with_suffix(".summary.json"), output.with_suffix(".histogram.png"),
            output.with_suffix(".crossfit-log.jsonl"))


def score_dataset(model: str, dataset: str, output: str | Path, *, reference: str | None = None, daa: str = "dpo",
                  beta: float = 0.1, simpo_margin: float = 0.0, crossfit: int | None = None,
                  keep_ratio: float | None = None, filtered_output: str | Path | None = None,
                  label_column: str | None = None, max_length: int = 1024, scoring_batch_size: int = 16,
                  dataset_format: str = "auto", dataset_split: str | None = None, skip_invalid: bool = False,
                  seed: int = 42, dtype: str = "auto", gguf_file: str | None = None, trust_remote_code: bool = False,
                  train_options: dict[str, Any] | None = None) -> ScoreResult:
    """Score every pair of `dataset` by `daa`'s implicit reward margin and write the audit (module docstring).

    `model` is the policy (`reference` its reference, the SFT model), or with `crossfit` K the SFT model that
    the K fold models start from (it is then also the reference; `reference` must be None). `gguf_file`
    names a GGUF file inside `model` (`model` and `reference` may also be .gguf paths themselves).
    `train_options` sets the fold models' training (:data:`TRAIN_OPTIONS`, `sera train`'s defaults otherwise).
    Bad options and bad input raise :class:`SeraInputError` before any model is loaded where they can."""
    started = time.perf_counter()
    output = Path(output)
    filtered_output = Path(filtered_output) if filtered_output is not None else None
    objective = _check_options(output, reference, daa, beta, crossfit, keep_ratio, filtered_output, max_length,
                               scoring_batch_size)
    fold_config = _fold_config(model, dataset, output, daa, beta, simpo_margin, max_length, scoring_batch_size,
                               seed, dtype, gguf_file, trust_remote_code, train_options) if crossfit else None

    from transformers import set_seed

    from sera.models import load_model, load_tokenizer
    from sera.scoring import LogProbBank

    set_seed(seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    loaded = load_pairs(dataset, split=dataset_split, skip_invalid=skip_invalid, dataset_format=dataset_format,
                        seed=seed)
    raw = _raw_rows(dataset, dataset_split, loaded, seed)
    labels = _labels(loaded.pairs, raw, label_column, dataset) if label_column else None
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    if reference is not None:
        _check_same_vocabulary(tokenizer, reference, trust_remote_code)
    pair_tokenizer = PairTokenizer(tokenizer, max_length)
    skipped = Counter(loaded.skipped)
    scored: list[tuple[PreferencePair, TokenizedPair]] = []
    for pair in loaded.pairs:
        tokens = pair_tokenizer.pair(pair)
        if tokens is None:
            skipped["prompt_too_long"] += 1
        else:
            scored.append((pair, tokens))
    if not scored:
        raise SeraInputError(f"{dataset}: every pair's prompt is longer than --max-length {max_length}")
    seconds["load_data"] = time.perf_counter() - start

    tokens = [t for _, t in scored]
    chosen = [(t.prompt_ids, t.chosen_ids) for t in tokens]
    rejected = [(t.prompt_ids, t.rejected_ids) for t in tokens]
    n = len(tokens)
    chosen_tokens = np.array([len(t.chosen_ids) for t in tokens])
    rejected_tokens = np.array([len(t.rejected_ids) for t in tokens])
    paths = {0: model if crossfit else reference, 1: model}
    gguf = {0: gguf_file if crossfit else None, 1: gguf_file}

    def load(index: int):
        loaded_model = load_model(paths[index], dtype=dtype, trust_remote_code=trust_remote_code,
                                  gguf_file=gguf[index])
        loaded_model.eval()
        return loaded_model

    bank = LogProbBank(load, scoring_batch_size)
    ref_c = ref_r = None
    if paths[0] is not None:
        start = time.perf_counter()
        logps = bank.logps(0, chosen + rejected)
        ref_c, ref_r = logps[:n], logps[n:]
        seconds["scoring_reference"] = time.perf_counter() - start
    folds = None
    if crossfit:
        from sera.crossfit import out_of_fold_margins
        from sera.progress import console

        log_path = side_paths(output)[2]
        log_path.unlink(missing_ok=True)
        oof = out_of_fold_margins(
            tokens, folds=crossfit, load_sft=lambda: load(0), tokenizer=tokenizer, config=fold_config,
            daa=objective, reference=None if objective.reference_free else bank, metrics_path=log_path,
            on_fold=lambda k, total: console.print(f"cross-fitting: fold {k + 1}/{total}, trained on the other "
                                                   f"{total - 1} fold{'s' if total > 2 else ''}", highlight=False))
        policy_c = np.array([oof.policy_chosen[t.id] for t in tokens])
        policy_r = np.array([oof.policy_rejected[t.id] for t in tokens])
        margins = np.array([oof.margins[t.id] for t in tokens])
        folds = [oof.fold[t.id] for t in tokens]
        seconds["crossfit_training"] = oof.seconds_training
        seconds["scoring_policy"] = oof.seconds_scoring
        fold_steps = [r.steps for r in oof.train_results]
        fold_losses = [r.final_loss for r in oof.train_results]
    else:
        start = time.perf_counter()
        logps = bank.logps(1, chosen + rejected)
        policy_c, policy_r = logps[:n], logps[n:]
        seconds["scoring_policy"] = time.perf_counter() - start
        margins = (objective.implicit_reward(beta, policy_c, ref_c, chosen_tokens)
                   - objective.implicit_reward(beta, policy_r, ref_r, rejected_tokens))

    ids = [t.id for t in tokens]
    order = sorted(range(n), key=lambda i: (-float(margins[i]), ids[i]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    rows, replaced = [], set()
    for i, (pair, _) in enumerate(scored):
        row = dict(raw[pair.id][1])
        for name in set(row) & {*SCORE_COLUMNS, "fold"}:  # a file `sera score` wrote before: columns renewed
            replaced.add(name)
            del row[name]
        row.update(pair_id=pair.id, policy_chosen_logps=float(policy_c[i]), policy_rejected_logps=float(policy_r[i]),
                   reference_chosen_logps=None if ref_c is None else float(ref_c[i]),
                   reference_rejected_logps=None if ref_r is None else float(ref_r[i]),
                   chosen_tokens=int(chosen_tokens[i]), rejected_tokens=int(rejected_tokens[i]),
                   margin=float(margins[i]), rank=int(rank[i]))
        if folds is not None:
            row["fold"] = folds[i]
        rows.append(row)

    summary_path, histogram_path, _ = side_paths(output)
    summary: dict[str, Any] = {
        "model": model, "reference": model if crossfit else reference, "gguf_file": gguf_file, "daa": daa,
        "beta": beta, **({"simpo_margin": simpo_margin} if daa == "simpo" else {}),
        "margin": f"out-of-fold ({crossfit} folds)" if crossfit else "plain",
        "margin_definition": _definition(objective),
        "max_length": max_length, "seed": seed,
        "data": {"source": dataset, "format": loaded.format, "rows_read": loaded.rows_read, "pairs_scored": n,
                 "skipped": dict(skipped), "skipped_total": sum(skipped.values())},
        "margins": margin_stats(margins),
        "length": length_stats(margins, chosen_tokens, rejected_tokens),
    }
    if crossfit:
        summary["crossfit"] = {"folds": crossfit, "fold_sizes": [folds.count(k) for k in range(crossfit)],
                               "train_steps": fold_steps, "final_losses": fold_losses,
                               "training": {k: getattr(fold_config, k) for k in TRAIN_OPTIONS},
                               "trainer_log": str(side_paths(output)[2])}
    if labels is not None:
        summary["label"] = label_stats(label_column, margins, [labels.get(pair.id) for pair, _ in scored])
    kept_mask = None
    if keep_ratio is not None:
        from sera.selection import select_top_k, selection_size

        kept_mask = select_top_k(ids, margins, selection_size(n, keep_ratio))
        summary["keep"] = keep_stats(keep_ratio, margins, kept_mask, filtered_output,
                                     [labels.get(pair.id) for pair, _ in scored] if labels is not None else None)
    if replaced:
        summary["replaced_columns"] = sorted(replaced)
    summary["outputs"] = {"scored": str(output), "summary": str(summary_path), "histogram": str(histogram_path),
                          **({"filtered": str(filtered_output)} if filtered_output else {})}

    write_rows(output, rows)
    if filtered_output is not None:
        write_rows(filtered_output, [filtered_row(pair, raw[pair.id][1], loaded.format, label_column)
                                     for (pair, _), keep in zip(scored, kept_mask) if keep])
    plot_histogram(histogram_path, margins, summary,
                   [labels.get(pair.id) for pair, _ in scored] if labels is not None else None,
                   threshold=float(margins[kept_mask].min()) if kept_mask is not None else None)
    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = seconds
    scoring = seconds.get("scoring_reference", 0.0) + seconds["scoring_policy"]
    summary["pairs_per_second_scoring"] = n / scoring if scoring > 0 else None
    from sera.io import write_json

    write_json(summary_path, summary)
    return ScoreResult(rows=rows, summary=summary, output=output, summary_path=summary_path,
                       histogram_path=histogram_path, filtered_output=filtered_output, margins=margins)


# -- options and input --------------------------------------------------------------------------------

def _check_options(output: Path, reference, daa: str, beta: float, crossfit, keep_ratio, filtered_output,
                   max_length: int, scoring_batch_size: int):
    if daa not in DAAS:
        raise SeraInputError(f"--daa: {daa!r} is not one of {', '.join(DAAS)}")
    objective = get_daa(daa)
    _check_suffix(output, "--output")
    if not beta > 0:
        raise SeraInputError("--beta must be positive")
    if max_length < 2 or scoring_batch_size < 1:
        raise SeraInputError("--max-length must be at least 2 and --scoring-batch-size at least 1")
    if crossfit is not None:
        if crossfit < 2:
            raise SeraInputError(f"--crossfit {crossfit}: cross-fitting needs at least 2 folds")
        if reference is not None:
            raise SeraInputError("--crossfit trains fold models from --model (the SFT model), which is also their "
                                 "reference; drop --reference")
    elif reference is None and not objective.reference_free:
        raise SeraInputError(f"--daa {daa} measures the policy against a reference: give --reference SFT_MODEL "
                             "(the policy's implicit reward against itself is 0), or --crossfit K with --model the "
                             "SFT model, or --daa simpo (reference-free)")
    if (keep_ratio is None) != (filtered_output is None):
        raise SeraInputError("--keep-ratio and --filtered-output go together (the top R of pairs by margin, "
                             "written to F)")
    if keep_ratio is not None:
        if not 0.0 < keep_ratio <= 1.0:
            raise SeraInputError("--keep-ratio must be in (0, 1]")
        _check_suffix(filtered_output, "--filtered-output")
        if filtered_output.resolve() == output.resolve():
            raise SeraInputError("--filtered-output must differ from --output")
    return objective


def _check_suffix(path: Path, flag: str) -> None:
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise SeraInputError(f"{flag} {path}: write a .jsonl or .parquet file (the suffix chooses the format)")
    if path.is_dir():
        raise SeraInputError(f"{flag} {path}: is a directory")


def _fold_config(model, dataset, output, daa, beta, simpo_margin, max_length, scoring_batch_size, seed, dtype,
                 gguf_file, trust_remote_code, train_options):
    """A TrainConfig for the fold models: `sera train`'s defaults, this command's DAA and engine options, and
    the training options given (validated as `sera train` validates them)."""
    from sera.config import TrainConfig

    options = {k: v for k, v in (train_options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise SeraInputError(f"unknown training option(s) for --crossfit: {', '.join(unknown)}")
    return TrainConfig(model=model, dataset=dataset, output_dir=str(Path(output).parent), daa=daa, beta=beta,
                       simpo_margin=simpo_margin, max_length=max_length, scoring_batch_size=scoring_batch_size,
                       seed=seed, dtype=dtype, gguf_file=gguf_file, trust_remote_code=trust_remote_code,
                       **options).validate()


def _raw_rows(source: str, split: str | None, loaded: LoadedPairs, seed: int) -> dict[str, tuple[int, Any]]:
    """Pair id -> (row number, the input row as read), for every loaded pair.

    `load_pairs` keeps only the converted pairs; the rows are read again here, in the same order, and each is
    matched to its pair by the id `load_pairs` gave it (its `id` field, else its 0-based row index) and by
    content, so that a malformed row skipped under --skip-invalid can never stand in for another."""
    from sera.data import _read_rows
    from sera.formats import converter

    convert = converter(loaded.format, seed=seed)
    wanted = {pair.id: pair for pair in loaded.pairs}
    found: dict[str, tuple[int, Any]] = {}
    for index, (line, row) in enumerate(_read_rows(source, split, loaded.format)):
        if not isinstance(row, dict):
            continue
        try:
            converted = convert(row, str(index), f"{source}, row {line}")
        except Exception:  # noqa: BLE001 - a row load_pairs skipped; its reason is counted there
            continue
        for candidate in converted:
            pair_id = str(candidate.get("id", index))
            pair = wanted.get(pair_id)
            if pair is not None and pair_id not in found and (candidate.get("prompt"), candidate.get("chosen"),
                                                              candidate.get("rejected")) == (
                    pair.prompt, pair.chosen, pair.rejected):
                found[pair_id] = (line, row)
    missing = [pair_id for pair_id in wanted if pair_id not in found]
    if missing:  # pragma: no cover - the two readings of one file always agree
        raise SeraRuntimeError(f"{source}: could not match {len(missing)} pair(s) to their input rows "
                               f"(first: {missing[0]!r})")
    return found


def _labels(pairs: list[PreferencePair], raw: dict[str, tuple[int, Any]], column: str, source: str
            ) -> dict[str, bool | None]:
    """The boolean `column` of each pair's input row (None where the row leaves it null)."""
    labels: dict[str, bool | None] = {}
    for pair in pairs:
        line, row = raw[pair.id]
        where = f"{source}, row {line}"
        if column not in row:
            raise SeraInputError(f"{where}: field {column!r} (--label-column) is missing")
        value = row[column]
        if value is None:
            labels[pair.id] = None
        elif isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            labels[pair.id] = bool(value)
        elif hasattr(value, "dtype") and value.dtype == bool:  # a numpy bool from a columnar reader
            labels[pair.id] = bool(value)
        else:
            raise SeraInputError(f"{where}: field {column!r} (--label-column) must be a boolean (true/false), "
                                 f"got {value!r}")
    return labels


def _check_same_vocabulary(tokenizer, reference: str, trust_remote_code: bool) -> None:
    """Log-prob differences across models mean something only over the same tokens."""
    from sera.models import load_tokenizer

    other = load_tokenizer(reference, trust_remote_code=trust_remote_code)
    if other.get_vocab() != tokenizer.get_vocab():
        raise SeraInputError(f"--reference {reference}: its tokenizer differs from the policy's; the implicit reward "
                             "compares log-probs of the same tokens under both, so they must share a vocabulary")


def _definition(objective) -> str:
    if objective.reference_free:
        return "beta * (log pi(chosen)/|chosen| - log pi(rejected)/|rejected|)  (SimPO, reference-free)"
    ratio = "(log pi - log pi_ref)"
    if objective.length_normalized:
        return f"beta * ({ratio}(chosen)/|chosen| - {ratio}(rejected)/|rejected|)  ({objective.name})"
    return f"beta * ({ratio}(chosen) - {ratio}(rejected))  ({objective.name})"


# -- statistics ----------------------------------------------------------------------------------------

def margin_stats(margins: np.ndarray) -> dict:
    margins = np.asarray(margins, dtype=np.float64)
    return {"count": int(len(margins)), "mean": float(margins.mean()), "std": float(margins.std()),
            "quantiles": {f"{q:g}": float(np.quantile(margins, q)) for q in QUANTILES},
            "share_negative": float(np.mean(margins < 0)), "share_zero": float(np.mean(margins == 0))}


def length_stats(margins: np.ndarray, chosen_tokens: np.ndarray, rejected_tokens: np.ndarray) -> dict:
    """How much of the margin the length difference explains (a spurious feature a DAA readily learns)."""
    difference = np.asarray(chosen_tokens, dtype=np.float64) - np.asarray(rejected_tokens, dtype=np.float64)
    return {"mean_chosen_tokens": float(np.mean(chosen_tokens)), "mean_rejected_tokens": float(np.mean(rejected_tokens)),
            "share_chosen_longer": float(np.mean(difference > 0)),
            "pearson_margin_vs_length_difference": pearson(margins, difference),
            "spearman_margin_vs_length_difference": pearson(_ranks(margins), _ranks(difference))}


def label_stats(column: str, margins: np.ndarray, labels: list[bool | None]) -> dict:
    known = np.array([label is not None for label in labels])
    positive = np.array([bool(label) for label in labels])
    m = np.asarray(margins, dtype=np.float64)
    true, false = m[known & positive], m[known & ~positive]
    return {"column": column, "true": int(len(true)), "false": int(len(false)), "missing": int((~known).sum()),
            AUC_KEY: auc(-m[known], positive[known]), "auc_definition": AUC_DEFINITION,
            "mean_margin_true": float(true.mean()) if len(true) else None,
            "mean_margin_false": float(false.mean()) if len(false) else None,
            "share_negative_true": float(np.mean(true < 0)) if len(true) else None,
            "share_negative_false": float(np.mean(false < 0)) if len(false) else None}


def keep_stats(ratio: float, margins: np.ndarray, kept: np.ndarray, path: Path | None,
               labels: list[bool | None] | None) -> dict:
    stats = {"ratio": ratio, "kept": int(kept.sum()), "dropped": int((~kept).sum()),
             "lowest_margin_kept": float(margins[kept].min()),
             "filtered_output": str(path) if path is not None else None}
    if labels is not None:
        known = np.array([label is not None for label in labels])
        positive = np.array([bool(label) for label in labels]) & known
        stats["share_true_among_kept"] = _share(positive[kept & known])
        stats["share_true_among_dropped"] = _share(positive[~kept & known])
        stats["share_of_true_dropped"] = _share(~kept[positive]) if positive.any() else None
    return stats


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney, from average ranks);
    None without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if len(mask) else None


# -- outputs --------------------------------------------------------------------------------------------

def filtered_row(pair: PreferencePair, row: Any, dataset_format: str, label_column: str | None) -> dict:
    """A kept pair as a training row. `pairs` input: the input row unchanged (an `id` added where it had none,
    so the pair keeps its id). Other schemas (hh-rlhf, ultrafeedback, tldr): the pair as `sera` read it
    (`id`, `prompt`, `chosen`, `rejected`, and the label column), so `sera train` trains on exactly the pairs
    scored, whatever its --seed (original UltraFeedback's rejected completion is drawn by seed)."""
    if dataset_format == "pairs" and isinstance(row, dict):
        return row if "id" in row else {"id": pair.id, **row}
    result = {"id": pair.id, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if label_column and isinstance(row, dict) and label_column in row and label_column not in result:
        result[label_column] = row[label_column]
    return result


def write_rows(path: Path, rows: list[dict]) -> None:
    """`.jsonl` or `.parquet` by suffix, atomically."""
    from sera.io import _write_atomic_with, write_jsonl

    if path.suffix.lower() == ".jsonl":
        try:
            write_jsonl(path, rows)
        except TypeError as exc:
            raise SeraRuntimeError(f"cannot write {path}: a row holds a value JSON cannot store ({exc})") from exc
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SeraRuntimeError(f"cannot write {path}: the rows do not fit one parquet schema ({exc}); "
                               "write .jsonl instead") from exc
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    _write_atomic_with(path, lambda handle: handle.write(buffer.getvalue()))


def plot_histogram(path: Path, margins: np.ndarray, summary: dict, labels: list[bool | None] | None = None,
                   threshold: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sera.io import _write_atomic_with

    margins = np.asarray(margins, dtype=np.float64)
    low, high = float(margins.min()), float(margins.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, max(10, min(60, int(math.sqrt(len(margins))) * 2)) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    if labels is not None:
        label_column = summary["label"]["column"]
        for value, colour in ((False, "tab:blue"), (True, "tab:red")):
            subset = np.array([m for m, label in zip(margins, labels) if label is value])
            if len(subset):
                ax.hist(subset, bins=bins, alpha=0.6, color=colour, label=f"{label_column} = {str(value).lower()} "
                        f"({len(subset)})")
        value = summary["label"][AUC_KEY]
        if value is not None:
            ax.set_title(f"AUC of a low margin for {label_column} = true: {value:.3f}", fontsize=9)
    else:
        ax.hist(margins, bins=bins, color="tab:blue", alpha=0.8, label=f"pairs ({len(margins)})")
    ax.axvline(0.0, color="black", linestyle=":", linewidth=1, label="0")
    if threshold is not None:
        ax.axvline(threshold, color="tab:green", linestyle="--", linewidth=1,
                   label=f"kept: margin >= {threshold:.3g}")
    ax.set_xlabel(f"implicit reward margin ({summary['daa']}, beta {summary['beta']:g}, {summary['margin']})")
    ax.set_ylabel("pairs")
    fig.suptitle(f"{Path(str(summary['data']['source'])).name}: {summary['data']['pairs_scored']} pairs; "
                 f"{summary['margins']['share_negative']:.1%} negative", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    _write_atomic_with(path, lambda handle: handle.write(buffer.getvalue()))
    return path


def summary_lines(summary: dict) -> list[str]:
    """The few lines `sera score` prints at the end."""
    data, stats, length = summary["data"], summary["margins"], summary["length"]
    skipped = ", ".join(f"{k} {v}" for k, v in data["skipped"].items()) or "none"
    q = stats["quantiles"]
    lines = [f"{data['pairs_scored']} pairs scored from {data['rows_read']} rows ({data['format']}; skipped: {skipped})",
             f"margin ({summary['daa']}, {summary['margin']}): median {q['0.5']:.4g}, 5%/95% {q['0.05']:.4g} / "
             f"{q['0.95']:.4g}, negative {stats['share_negative']:.1%}",
             "margin vs chosen-minus-rejected length (tokens): Pearson "
             + _fmt(length["pearson_margin_vs_length_difference"]) + ", Spearman "
             + _fmt(length["spearman_margin_vs_length_difference"])]
    if "label" in summary:
        label = summary["label"]
        lines.append(f"--label-column {label['column']}: {label['true']} true, {label['false']} false; AUC of a low "
                     f"margin for true: {_fmt(label[AUC_KEY])} (0.5 = chance)")
    if "keep" in summary:
        keep = summary["keep"]
        lines.append(f"kept {keep['kept']} of {data['pairs_scored']} (margin >= {keep['lowest_margin_kept']:.4g}) "
                     f"-> {keep['filtered_output']}")
    lines.append(f"wrote {summary['outputs']['scored']}, {summary['outputs']['summary']}, "
                 f"{summary['outputs']['histogram']}")
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


"""Preference data: load, validate, and count (never silently drop) what cannot be used.

A pair is `(id, prompt, chosen, rejected)`. Prompts and responses are either strings or chat
message lists (`[{"role": ..., "content": ...}]`) as in TRL. The `id` column is kept through the
whole run (row index otherwise), so every decision SeRA writes can be traced back to a row.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from sera.errors import SeraInputError
from sera.io import JSON_ERRORS, has_lone_surrogate, json_error, preview, read_utf8, undecodable_column

Text = Union[str, list[dict[str, Any]]]
REQUIRED = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair; `source` is `offline` (the dataset) or `generated` (bootstrapped)."""

    id: str
    prompt: Text
    chosen: Text
    rejected: Text
    source: str = "offline"


@dataclass
class LoadedPairs:
    pairs: list[PreferencePair]
    skipped: Counter = field(default_factory=Counter)
    """Rows not used, by reason: invalid (with --skip-invalid), empty_response, identical_responses, and the
    format adapters' reasons (e.g. hh_transcripts_differ_before_last_reply; see :mod:`sera.formats`)."""
    rows_read: int = 0
    format: str = "pairs"
    """The dataset format used (the detected one under `auto`)."""
    meta: dict[str, dict] = field(default_factory=dict)
    """Extra per-pair fields a format provides, by pair id (ultrafeedback `all`: rating_gap and ratings)."""


def load_pairs(source: str | Iterable[Any], *, split: str | None = None, skip_invalid: bool = False,
               dataset_format: str = "auto", seed: int = 0,
               ultrafeedback_pairs: str = "best-vs-random") -> LoadedPairs:
    """Read and validate a preference dataset from a local file, a `save_to_disk` folder or the hub.

    `dataset_format` is one of :data:`sera.formats.FORMATS`; `auto` detects it from the first row's
    columns. `split` defaults to the format's training split (`train`, `train_prefs` for UltraFeedback
    binarized). `seed` fixes the random lower-rated completion of original UltraFeedback rows;
    `ultrafeedback_pairs="all"` yields every ranked pair instead (for Curri-DPO)."""
    from sera.formats import FORMATS, SkipRow, converter, detect_format

    if dataset_format not in FORMATS:
        raise SeraInputError(f"--dataset-format: {dataset_format!r} is not one of {', '.join(FORMATS)}")
    if isinstance(source, (str, Path)):
        rows = _read_rows(source, split, dataset_format)
    else:  # rows in memory (SeraTrainer's train_dataset: a datasets.Dataset or a list of dicts)
        rows, source = list(enumerate(source, start=1)), "train_dataset"
    loaded = LoadedPairs(pairs=[], format=dataset_format)
    convert = None if dataset_format == "auto" else converter(dataset_format, seed=seed,
                                                                 ultrafeedback_pairs=ultrafeedback_pairs)
    seen_ids: dict[str, int] = {}
    for line, row in rows:
        loaded.rows_read += 1
        where = f"{source}, row {line}"
        try:
            if convert is None and isinstance(row, dict):  # a row that cannot be detected is invalid, like any other
                loaded.format = _detect(row, where, detect_format)
                convert = converter(loaded.format, seed=seed, ultrafeedback_pairs=ultrafeedback_pairs)
            if isinstance(row, dict) and convert is not None:
                converted = convert(row, str(loaded.rows_read - 1), where)
            else:
                converted = [row]
            parsed = [(_parse_row(r, default_id=str(loaded.rows_read - 1), where=where), r) for r in converted]
            for pair, _ in parsed:
                _check_unicode(pair, row, where)
        except SkipRow as skip:
            loaded.skipped[skip.reason] += 1
            continue
        except SeraInputError:
            if not skip_invalid:
                raise
            loaded.skipped["invalid"] += 1
            continue
        for pair, raw in parsed:
            if pair.id in seen_ids:
                raise SeraInputError(f"{where}: field 'id': {preview(pair.id)} repeats row {seen_ids[pair.id]} "
                                     "(ids must be unique)")
            seen_ids[pair.id] = line
            reason = degenerate_reason(pair)
            if reason:
                loaded.skipped[reason] += 1
                continue
            extra = {k: raw[k] for k in ("rating_gap", "chosen_rating", "rejected_rating") if k in raw}
            if extra:
                loaded.meta[pair.id] = extra
            loaded.pairs.append(pair)
    if not loaded.pairs:
        raise SeraInputError(f"{source}: no usable preference pairs ({loaded.rows_read} rows read, "
                             f"skipped: {dict(loaded.skipped) or 'none'})")
    return loaded


def degenerate_reason(pair: PreferencePair) -> str | None:
    """Why a well-formed pair carries no preference signal, or None if it does."""
    if not response_text(pair.chosen).strip() or not response_text(pair.rejected).strip():
        return "empty_response"
    if pair.chosen == pair.rejected:
        return "identical_responses"
    return None


def response_text(response: Text) -> str:
    """The plain text of a response (the concatenated contents of a message list)."""
    if isinstance(response, str):
        return response
    return "".join(str(message.get("content", "")) for message in response)


def is_conversational(pair: PreferencePair) -> bool:
    return isinstance(pair.prompt, list)


def _detect(row: dict, where: str, detect) -> str:
    if not ({"prompt", "chosen", "rejected"} & set(row)):
        return detect(row, where)
    try:
        return detect(row, where)
    except SeraInputError:
        return "pairs"  # a pair with a missing field: validation names the field


def _default_split(dataset_format: str) -> str:
    from sera.formats import DEFAULT_SPLITS

    return DEFAULT_SPLITS.get(dataset_format, "train")


def _read_rows(source: str, split: str | None, dataset_format: str = "auto") -> list[tuple[int, Any]]:
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _read_saved(path, split, dataset_format)
        raise SeraInputError(f"{source}: is a directory; give a .jsonl, .json or .parquet file "
                             "(or a folder written by datasets' save_to_disk)")
    if path.exists():
        suffix = path.suffix.lower()
        if suffix == ".gz":
            suffix = Path(path.stem).suffix.lower()
            if suffix in (".jsonl", ".ndjson"):
                return _read_jsonl(path)
            if suffix == ".json":
                return _read_json(path)
            raise SeraInputError(f"{source}: unsupported file type (use .jsonl[.gz], .json[.gz] or .parquet)")
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path)
        if suffix == ".parquet":
            return _read_parquet(path)
        raise SeraInputError(f"{source}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")
    if source.endswith((".jsonl", ".json", ".parquet", ".gz")) or source.startswith((".", "/")):
        raise SeraInputError(f"{source}: no such file")
    return _read_hub(source, split, dataset_format)


_GZIP_ERRORS = (OSError, EOFError, zlib.error)
"""What reading a damaged file raises (zlib.error: a corrupt .gz stream)."""


def _open_text(path: Path):
    """Lines of text; a byte that is not UTF-8 stays in its line (as a surrogate escape) for that row to report."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape")
    return open(path, encoding="utf-8", errors="surrogateescape")


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                column = undecodable_column(line)
                if column is not None:
                    rows.append((number, _Malformed(f"not valid UTF-8 (a byte at column {column})")))
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except JSON_ERRORS as exc:
                    rows.append((number, _Malformed(f"malformed JSON ({json_error(exc, one_line=True)})")))
    except _GZIP_ERRORS as exc:
        raise SeraInputError(f"{path}: cannot read ({exc})") from exc
    return rows


def _read_json(path: Path) -> list[tuple[int, Any]]:
    try:
        text = read_utf8(path, gzip.open if path.suffix.lower() == ".gz" else open)
        data = json.loads(text)
    except _GZIP_ERRORS as exc:
        raise SeraInputError(f"{path}: cannot read ({exc})") from exc
    except JSON_ERRORS as exc:
        raise SeraInputError(f"{path}: malformed JSON ({json_error(exc)})") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SeraInputError(f"{path}: expected a JSON list of rows")
    return [(index + 1, row) for index, row in enumerate(data)]


def _read_parquet(path: Path) -> list[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()  # a damaged file can fail as late as decoding its strings
    except Exception as exc:
        raise SeraInputError(f"{path}: cannot read parquet ({_first_line(exc)})") from exc
    return [(index + 1, row) for index, row in enumerate(rows)]


def _read_hub(name: str, split: str | None, dataset_format: str = "auto") -> list[tuple[int, Any]]:
    try:
        import datasets

        if split is None:
            names = datasets.get_dataset_split_names(name)
            split = _pick_split(names, dataset_format)
        dataset = datasets.load_dataset(name, split=split)
    except SeraInputError:
        raise
    except Exception as exc:
        raise SeraInputError(f"{name}: not a local file, and loading it from the hub failed "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    return [(index + 1, row) for index, row in enumerate(dataset)]


def _read_saved(path: Path, split: str | None, dataset_format: str) -> list[tuple[int, Any]]:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    try:
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
    except Exception as exc:
        raise SeraInputError(f"{path}: cannot read the saved dataset ({_first_line(exc)})") from exc
    if isinstance(data, DatasetDict):
        names = list(data.keys())
        if split is None:
            split = _pick_split(names, dataset_format)
        elif split not in names:
            raise SeraInputError(f"{path}: no split {split!r} (available: {', '.join(names)})")
        data = data[split]
    try:
        return [(index + 1, row) for index, row in enumerate(data)]  # rows are decoded (and can fail) only here
    except Exception as exc:
        raise SeraInputError(f"{path}: cannot read the saved dataset ({_first_line(exc)})") from exc


def _pick_split(names: list[str], dataset_format: str) -> str:
    """The format's training split, else `train_prefs` or `train` if present, else the only split."""
    for candidate in (_default_split(dataset_format), "train_prefs", "train"):
        if candidate in names:
            return candidate
    if len(names) == 1:
        return names[0]
    raise SeraInputError(f"several splits ({', '.join(names)}) and none is a training split; "
                         "choose one with --dataset-split")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class _Malformed:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_row(row: Any, *, default_id: str, where: str) -> PreferencePair:
    if isinstance(row, _Malformed):
        raise SeraInputError(f"{where}: {row.reason}")
    if not isinstance(row, dict):
        raise SeraInputError(f"{where}: expected an object with fields prompt, chosen, rejected")
    for name in REQUIRED:
        if name not in row or row[name] is None:
            raise SeraInputError(f"{where}: field {name!r} is missing")
    prompt_is_chat = _check_text(row["prompt"], where, "prompt")
    for name in ("chosen", "rejected"):
        if _check_text(row[name], where, name) != prompt_is_chat:
            kind = "a message list" if prompt_is_chat else "a string"
            raise SeraInputError(f"{where}: field {name!r} must be {kind}, like the prompt")
    row_id = row.get("id", default_id)
    if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
        raise SeraInputError(f"{where}: field 'id' must be a string or an integer")
    return PreferencePair(id=str(row_id), prompt=row["prompt"], chosen=row["chosen"], rejected=row["rejected"])


def _check_unicode(pair: PreferencePair, row: Any, where: str) -> None:
    """Refuse text with a lone surrogate (JSON's "\\ud800" escapes decode to one): no tokenizer or UTF-8 file
    takes it. The message names the field of the row as read (before a format's conversion)."""
    texts = [pair.id]
    for value in (pair.prompt, pair.chosen, pair.rejected):
        texts.extend([value] if isinstance(value, str) else [t for m in value for t in (m["role"], m["content"])])
    if any(has_lone_surrogate(text) for text in texts):
        raise SeraInputError(f"{where}: field {_surrogate_field(row) or 'id'!r} holds a lone surrogate "
                             "(an unpaired \\ud800-\\udfff escape), which is not valid Unicode")


def _surrogate_field(value: Any, name: str = "") -> str | None:
    """The path (`completions[1].response`) of the first string in `value` with a lone surrogate, or None."""
    if isinstance(value, str):
        return name if has_lone_surrogate(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        path = f"{name}[{key}]" if isinstance(key, int) else f"{name}.{key}" if name else str(key)
        found = _surrogate_field(item, path)
        if found is not None:
            return found
    return None


def _check_text(value: Any, where: str, name: str) -> bool:
    """Validate a string or a message list; returns True for a message list."""
    if isinstance(value, str):
        return False
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        return True
    raise SeraInputError(f"{where}: field {name!r} must be a string or a non-empty list of "
                         f"{{'role': str, 'content': str}} messages, got {type(value).__name__}")


def _is_message(message: Any) -> bool:
    return (isinstance(message, dict) and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str))

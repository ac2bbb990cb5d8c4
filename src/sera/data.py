"""Preference data: load, validate, and count (never silently drop) what cannot be used.

A pair is `(id, prompt, chosen, rejected)`. Prompts and responses are either strings or chat
message lists (`[{"role": ..., "content": ...}]`) as in TRL. The `id` column is kept through the
whole run (row index otherwise), so every decision SeRA writes can be traced back to a row.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from sera.errors import SeraInputError

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
    """Rows not used, by reason: invalid (with --skip-invalid), empty_response, identical_responses."""
    rows_read: int = 0


def load_pairs(source: str, *, split: str = "train", skip_invalid: bool = False) -> LoadedPairs:
    """Read and validate a preference dataset from a local file or the hub."""
    rows = _read_rows(source, split)
    loaded = LoadedPairs(pairs=[])
    seen_ids: dict[str, int] = {}
    for line, row in rows:
        loaded.rows_read += 1
        try:
            pair = _parse_row(row, default_id=str(loaded.rows_read - 1), where=f"{source}, row {line}")
        except SeraInputError:
            if not skip_invalid:
                raise
            loaded.skipped["invalid"] += 1
            continue
        if pair.id in seen_ids:
            raise SeraInputError(f"{source}, row {line}: field 'id': {pair.id!r} repeats row {seen_ids[pair.id]} "
                                 "(ids must be unique)")
        seen_ids[pair.id] = line
        reason = degenerate_reason(pair)
        if reason:
            loaded.skipped[reason] += 1
            continue
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


def _read_rows(source: str, split: str) -> list[tuple[int, Any]]:
    path = Path(source)
    if path.is_dir():
        raise SeraInputError(f"{source}: is a directory; give a .jsonl, .json or .parquet file")
    if path.exists():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path)
        if suffix == ".parquet":
            return _read_parquet(path)
        raise SeraInputError(f"{source}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")
    if source.endswith((".jsonl", ".json", ".parquet")) or source.startswith((".", "/")):
        raise SeraInputError(f"{source}: no such file")
    return _read_hub(source, split)


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    rows.append((number, _Malformed(f"malformed JSON ({exc.msg} at column {exc.colno})")))
    except (OSError, UnicodeDecodeError) as exc:
        raise SeraInputError(f"{path}: cannot read ({exc})") from exc
    return rows


def _read_json(path: Path) -> list[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SeraInputError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise SeraInputError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SeraInputError(f"{path}: expected a JSON list of rows")
    return [(index + 1, row) for index, row in enumerate(data)]


def _read_parquet(path: Path) -> list[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:
        raise SeraInputError(f"{path}: cannot read parquet ({exc})") from exc
    return [(index + 1, row) for index, row in enumerate(table.to_pylist())]


def _read_hub(name: str, split: str) -> list[tuple[int, Any]]:
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise SeraInputError(f"{name}: not a local file, and loading it from the hub failed "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    return [(index + 1, row) for index, row in enumerate(dataset)]


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

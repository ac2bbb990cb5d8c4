"""Evaluation prompts from a local file or a hub dataset, in the formats the paper evaluates on.

`load_prompts(source)` returns a list of :class:`PromptRecord` (an id, the prompt text, and the
chat messages to generate from). Each row is recognised by its fields, in this order:

=========================  ==========================================  =======================
format                     fields                                      id
=========================  ==========================================  =======================
plain list                 a bare string (JSON list, JSONL or .txt)    position (0-based)
Vicuna-80 (FastChat)       ``question_id``, ``turns`` (first turn)     ``question_id``
Evol-Instruct test set     ``idx``, ``Instruction``                    ``idx``
AlpacaEval                 ``instruction`` (+ optional ``input``)      ``id`` or position
prompt column              ``prompt`` (string or chat message list)    ``id``/``prompt_id``
preference test split      ``prompt`` or only ``chosen`` (a chat       ``id``/``prompt_id``
                           list, or HH-RLHF "Human:/Assistant:" text)  or position
=========================  ==========================================  =======================

``prompt_field`` forces the field that holds the prompt. Multi-turn Vicuna questions use their first
turn (all 80 of Vicuna-80 are single-turn). Bad rows raise :class:`SeraInputError` naming the file,
the line (or row) and the field; duplicate ids are an error, since outputs are paired by id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sera.errors import SeraInputError
from sera.io import JSON_ERRORS, has_lone_surrogate, json_error, preview, read_utf8, undecodable_column

_ID_FIELDS = ("id", "prompt_id", "question_id", "idx")
_HH_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class PromptRecord:
    """One evaluation prompt: `id` (kept as in the source: int or str), the text, the chat messages.

    `prompt` is the text shown to judges and written to outputs (the last user turn for a
    conversation); `messages` is what the chat template is applied to when generating.
    `extra` carries fields worth passing through (AlpacaEval's `dataset`).
    """

    id: Any
    prompt: str
    messages: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def load_prompts(source: str | Path, *, split: str | None = None, prompt_field: str | None = None,
                 limit: int | None = None) -> list[PromptRecord]:
    """Read prompts from a local file (.jsonl, .json, .txt, .csv, .parquet), a `save_to_disk`
    directory, or a hub dataset id (`split` picks the split; default: the one named like "test")."""
    path = Path(source)
    if path.is_file():
        rows, where = _read_file(path)
    elif path.is_dir():
        rows, where = _read_dataset_dir(path, split)
    elif _looks_like_path(str(source)):
        raise SeraInputError(f"--prompts: no such file or directory: {source}")
    else:
        rows, where = _read_hub(str(source), split)
    if limit is not None:
        rows = rows[:limit]
    records = [_parse_row(row, index, where, prompt_field) for index, row in enumerate(rows)]
    if not records:
        raise SeraInputError(f"{source}: no prompts found")
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        key = str(record.id)
        if has_lone_surrogate(key):
            raise SeraInputError(f"{where(index)}: the id field holds a lone surrogate (not valid Unicode)")
        if key in seen:
            raise SeraInputError(f"{where(index)}: duplicate id {preview(record.id)} (first at {where(seen[key])}); "
                                 "outputs are paired by id, so ids must be unique")
        seen[key] = index
    return records


# ---------------------------------------------------------------------------------------------- readers

def _read_file(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            lines = [(number, line) for number, line in enumerate(handle, start=1) if line.strip()]
        for number, line in lines:
            column = undecodable_column(line)
            if column is not None:
                raise SeraInputError(f"{path}:{number}: not valid UTF-8 (a byte at column {column})")
            try:
                rows.append(json.loads(line))
            except JSON_ERRORS as exc:
                raise SeraInputError(f"{path}:{number}: not valid JSON ({json_error(exc, one_line=True)})") from exc
        numbers = [number for number, _ in lines]
        return rows, lambda index: f"{path}:{numbers[index]}"
    if suffix == ".json":
        try:
            data = json.loads(read_utf8(path))
        except JSON_ERRORS as exc:
            raise SeraInputError(f"{path}: not valid JSON ({json_error(exc)})") from exc
        if isinstance(data, dict):  # {"prompts": [...]} or a columnar {"prompt": [...], ...}
            lists = {k: v for k, v in data.items() if isinstance(v, list)}
            if len(lists) == 1 and len(data) == 1:
                data = next(iter(lists.values()))
            elif lists and len({len(v) for v in lists.values()}) == 1:
                length = len(next(iter(lists.values())))
                data = [{k: v[i] for k, v in lists.items()} for i in range(length)]
        if not isinstance(data, list):
            raise SeraInputError(f"{path}: expected a JSON list of prompts or of objects")
        return data, lambda index: f"{path}: item {index}"
    if suffix == ".txt":
        # lines end at \n, \r\n or \r only (str.splitlines would also cut at a form feed, U+2028, ...)
        text = read_utf8(path).replace("\r\n", "\n").replace("\r", "\n")
        lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
        return [line for _, line in lines], lambda index: f"{path}:{lines[index][0]}"
    if suffix in (".csv", ".parquet"):
        from datasets import load_dataset

        try:
            dataset = load_dataset(suffix[1:], data_files=str(path), split="train")
        except Exception as exc:
            raise SeraInputError(f"{path}: cannot read ({_first_line(exc)})") from exc
        return list(dataset), lambda index: f"{path}: row {index}"
    raise SeraInputError(f"{path}: unsupported prompt file type {suffix!r} "
                         "(use .jsonl, .json, .txt, .csv or .parquet)")


def _read_dataset_dir(path: Path, split: str | None):
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as exc:
        raise SeraInputError(f"--prompts {path}: a directory must be a datasets `save_to_disk` folder "
                             f"({_first_line(exc)})") from exc
    if isinstance(data, DatasetDict):
        name = _pick_split(list(data.keys()), split, str(path))
        data = data[name]
        label = f"{path} [{name}]"
    else:
        label = str(path)
    return list(data), lambda index: f"{label}: row {index}"


def _read_hub(name: str, split: str | None):
    from datasets import load_dataset

    try:
        if split is None:
            data = load_dataset(name)
            split = _pick_split(list(data.keys()), None, name)
            data = data[split]
        else:
            data = load_dataset(name, split=split)
    except SeraInputError:
        raise
    except Exception as exc:
        raise SeraInputError(f"--prompts {name!r}: not a local file and cannot be loaded from the hub "
                             f"({_first_line(exc)})") from exc
    return list(data), lambda index: f"{name} [{split}]: row {index}"


def _pick_split(names: list[str], split: str | None, source: str) -> str:
    if split is not None:
        if split not in names:
            raise SeraInputError(f"{source}: no split {split!r} (available: {', '.join(names)})")
        return split
    for preferred in ("test", "test_prefs", "eval"):
        if preferred in names:
            return preferred
    tests = [name for name in names if "test" in name or "eval" in name]
    if len(tests) == 1:
        return tests[0]
    if len(names) == 1:
        return names[0]
    raise SeraInputError(f"{source}: several splits ({', '.join(names)}); choose one with --split")


# ------------------------------------------------------------------------------------------------- rows

def _parse_row(row: Any, index: int, where, prompt_field: str | None) -> PromptRecord:
    if isinstance(row, str):
        if prompt_field is not None:
            raise SeraInputError(f"{where(index)}: a bare string has no field {prompt_field!r}")
        return _record(index, row, where(index))
    if not isinstance(row, dict):
        raise SeraInputError(f"{where(index)}: expected a string or an object, got {type(row).__name__}")

    extra = {"dataset": _text(row["dataset"], f"{where(index)}: field 'dataset'")} \
        if isinstance(row.get("dataset"), str) else {}
    if prompt_field is not None:
        if prompt_field not in row:
            raise SeraInputError(f"{where(index)}: missing field {prompt_field!r}")
        return _record(_row_id(row, index), row[prompt_field], f"{where(index)}: field {prompt_field!r}", extra)
    if "turns" in row and "question_id" in row:  # Vicuna-80 / MT-bench question format
        turns = row["turns"]
        if not isinstance(turns, list) or not turns:
            raise SeraInputError(f"{where(index)}: field 'turns' must be a non-empty list of strings")
        return _record(_id_field(row, "question_id", where(index)), turns[0], f"{where(index)}: field 'turns'", extra)
    if "Instruction" in row:  # Evol-Instruct test set
        record_id = _id_field(row, "idx", where(index)) if "idx" in row else _row_id(row, index)
        return _record(record_id, row["Instruction"],
                       f"{where(index)}: field 'Instruction'", extra)
    if "instruction" in row:  # AlpacaEval (and Alpaca-style instruction/input)
        text = row["instruction"]
        if isinstance(row.get("input"), str) and row["input"].strip() and isinstance(text, str):
            text = f"{text}\n\n{row['input']}"
        return _record(_row_id(row, index), text, f"{where(index)}: field 'instruction'", extra)
    if "prompt" in row:
        return _record(_row_id(row, index), row["prompt"], f"{where(index)}: field 'prompt'", extra)
    if "chosen" in row:  # preference split without a separate prompt
        messages = _prompt_from_chosen(row["chosen"], f"{where(index)}: field 'chosen'")
        return _record(_row_id(row, index), messages, f"{where(index)}: field 'chosen'", extra)
    raise SeraInputError(f"{where(index)}: missing the prompt field (expected one of 'prompt', 'instruction', "
                         f"'Instruction', 'turns' with 'question_id', or 'chosen'; found "
                         f"{preview(', '.join(map(str, row))) if row else 'none'})")


def _row_id(row: dict, index: int) -> Any:
    for name in _ID_FIELDS:
        value = row.get(name)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and value != "":
            return value
    return index


def _id_field(row: dict, name: str, where: str) -> Any:
    """The id a format names (Vicuna's `question_id`, Evol-Instruct's `idx`): a string or an integer, as `sera
    eval` pairs outputs by it."""
    value = row[name]
    if not isinstance(value, (int, str)) or isinstance(value, bool) or value == "":
        raise SeraInputError(f"{where}: field {name!r} must be a string or an integer")
    return value


def _text(text: str, where: str) -> str:
    if has_lone_surrogate(text):  # JSON's "\\ud800" escapes decode to one; no tokenizer or UTF-8 file takes it
        raise SeraInputError(f"{where}: holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                             "which is not valid Unicode")
    return text


def _record(record_id: Any, prompt: Any, where: str, extra: dict | None = None) -> PromptRecord:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise SeraInputError(f"{where}: empty prompt")
        _text(prompt, where)
        return PromptRecord(record_id, prompt, [{"role": "user", "content": prompt}], extra or {})
    if isinstance(prompt, list) and prompt and all(_is_message(m) for m in prompt):
        messages = [{"role": _text(m["role"], where), "content": _text(m["content"], where)} for m in prompt]
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()  # a trailing assistant turn is a response, not part of the prompt
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise SeraInputError(f"{where}: the conversation has no user turn")
        return PromptRecord(record_id, users[-1], messages, extra or {})
    raise SeraInputError(f"{where}: expected a non-empty string or a list of chat messages "
                         f"({{'role', 'content'}}), got {type(prompt).__name__}")


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and isinstance(message.get("role"), str) \
        and isinstance(message.get("content"), str)


def _prompt_from_chosen(chosen: Any, where: str) -> list[dict]:
    if isinstance(chosen, list) and chosen and all(_is_message(m) for m in chosen):
        if chosen[-1]["role"] != "assistant":
            raise SeraInputError(f"{where}: the conversation does not end with an assistant turn")
        return chosen[:-1]
    if isinstance(chosen, str) and _HH_ASSISTANT in chosen:
        return _parse_hh(chosen[:chosen.rindex(_HH_ASSISTANT)], where)
    raise SeraInputError(f"{where}: cannot find the prompt (expected a chat message list ending with the "
                         "assistant's answer, or HH-RLHF text with 'Human:'/'Assistant:' turns)")


def _parse_hh(text: str, where: str) -> list[dict]:
    """HH-RLHF's "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript as chat messages."""
    parts = re.split(r"\n\n(Human|Assistant):", text)
    messages = [{"role": "user" if tag == "Human" else "assistant", "content": content.strip()}
                for tag, content in zip(parts[1::2], parts[2::2])]
    if not messages or messages[-1]["role"] != "user":
        raise SeraInputError(f"{where}: HH-RLHF text has no 'Human:' turn before the last 'Assistant:'")
    return messages


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or Path(text).suffix.lower() in (
        ".jsonl", ".json", ".txt", ".csv", ".parquet")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

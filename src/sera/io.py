"""Atomic writes: a reader (or a crash) never sees a half-written output file.

In a multi-process run only rank 0 writes (see :mod:`sera.distributed`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from sera import distributed
from sera.errors import SeraInputError, SeraRuntimeError


def _write_atomic(path: Path, text: str) -> None:
    _write_atomic_with(path, lambda handle: handle.write(text.encode("utf-8")))


def _write_atomic_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(handle)` into a temporary file beside `path`, then rename it over `path` (rank 0 only)."""
    if not distributed.is_main():
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SeraRuntimeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SeraRuntimeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_optimizer_state(path: Path, state: dict) -> None:
    """An optimizer's `state_dict()` as safetensors (tensors) + JSON metadata (everything else), atomically:
    no pickle is written, so none has to be trusted when :func:`load_optimizer_state` reads it back."""
    from safetensors.torch import save

    if not distributed.is_main():  # only rank 0 writes: the other ranks need not copy the state to the CPU
        return
    tensors, other = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{index}/{name}"
            if hasattr(value, "detach"):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                other[key] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "other": json.dumps(other)}
    _write_atomic_with(path, lambda handle: handle.write(save(tensors, metadata=metadata)))


def load_optimizer_state(path: Path) -> dict:
    """What :func:`save_optimizer_state` wrote, as an optimizer `state_dict()` (tensors on the CPU)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            keys = list(handle.keys())  # a safe_open handle, not a dict
            entries = {key: handle.get_tensor(key) for key in keys}
        entries.update(json.loads(metadata["other"]))
        state: dict[int, dict] = {}
        for key, value in entries.items():
            index, name = key.split("/", 1)
            state.setdefault(int(index), {})[name] = value
        return {"state": state, "param_groups": json.loads(metadata["param_groups"])}
    except (OSError, ValueError, KeyError) as exc:
        raise SeraRuntimeError(f"cannot read {path}: {exc}") from exc


def write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    lines = [json.dumps(row, ensure_ascii=False, default=_jsonable) for row in rows]
    _write_atomic(path, "".join(line + "\n" for line in lines))


def write_yaml(path: Path, obj: Any) -> None:
    _write_atomic(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def append_jsonl(path: Path, row: dict) -> None:
    """Append one line (logs only: a torn last line is tolerated by readers of logs)."""
    if not distributed.is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# -- reading user files: what is wrong, said in words (the loaders add file, row and field) ----------------

JSON_ERRORS = (ValueError, RecursionError)
"""What `json.loads` raises on bad text: JSONDecodeError, ValueError (an integer over Python's 4,300-digit
limit) and RecursionError (nesting deeper than the interpreter's stack)."""


def json_error(exc: BaseException, *, one_line: bool = False) -> str:
    """Why `json.loads` refused a text (one of :data:`JSON_ERRORS`), in a few words; `one_line`: the text was
    one line of a JSONL file (its column, no line number)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg}: column {exc.colno}" if one_line else f"{exc.msg}: line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number with too many digits"


def read_utf8(path: Path, opener: Callable[..., BinaryIO] = open) -> str:
    """The whole text of a UTF-8 file; a byte that is not UTF-8 is a SeraInputError naming its line."""
    with opener(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SeraInputError(f"{path}: line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x})") from exc


def preview(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: a value quoted in a message keeps it one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def undecodable_column(line: str) -> int | None:
    """In a line read with `errors="surrogateescape"`: the column of its first byte that was not UTF-8, or None."""
    return _lone_surrogate_at(line)


def has_lone_surrogate(text: str) -> bool:
    """True for a string no UTF-8 file or tokenizer accepts: JSON's "\\ud800"-style escapes decode to one."""
    return _lone_surrogate_at(text) is not None


def _lone_surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start + 1
    return None


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

"""Fuzzed bad input (issue 17, part 3): the files `sera generate` and `sera eval` read.

- prompt files for `sera generate` (:func:`sera.eval.prompts.load_prompts`): .jsonl, .json, .txt, .csv, .parquet, in
  every recognised row format (bare strings, Vicuna-80, Evol-Instruct, AlpacaEval, a prompt column as text or chat
  messages, a preference split's `chosen` as chat messages or HH-RLHF text);
- generation files for `sera eval` (:func:`sera.eval.evaluate.load_outputs`): `sera generate` JSONL and AlpacaEval
  JSON, then :func:`~sera.eval.evaluate.evaluate` itself with a stand-in judge.

These loaders read all or nothing (a prompt or an output cannot be skipped: outputs are paired by id), so an
example ends one of two ways: everything loads and is sound, or a SeraInputError names the file, the row (line or
item) and the field. Planned examples predict which row; chaos examples check the contract only. Profiles and
the runner are those of tests/test_fuzz_inputs.py.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from sera.errors import SeraInputError
from sera.eval.evaluate import evaluate, load_outputs
from sera.eval.judges import PointwiseJudge
from sera.eval.prompts import load_prompts
from sera.io import has_lone_surrogate
from tests.test_fuzz_inputs import (JSON_VALUES, NOT_ID, NOT_TEXT, PIECE, SAFE, SCALARS, SURROGATES, VARIANTS,
                                    arrow_table, check_message, damage_file, fuzz, hh, msg, raw_fault)


@dataclass(frozen=True)
class Item:
    """A row of a generated prompt or output file and what loading it must do."""

    value: Any
    """The row (written as JSON), or bytes: a raw JSONL line."""
    fault: str | None = None
    """None (sound); `row`: refused at this row naming `field` (or containing `phrase`); `read`: a JSONL line the
    reader refuses before any row is looked at; `id`: refused in the id pass (after every row parsed)."""
    field: str | None = None
    phrase: str | None = None
    key: Any = None
    """The pairing key (prompt id, output id or (id, sample), AlpacaEval instruction); None: its position."""
    typed: bool = True


def bad(item: Item, path: tuple, value: Any, *, field: str | None = None, phrase: str | None = None,
        typed: bool = True) -> Item:
    data = json.loads(json.dumps(item.value))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return Item(data, "row", field, phrase, item.key, typed)


def raw(draw, item: Item, fault: str = "read") -> Item:
    """A JSONL line that is not JSON (or not UTF-8): the reader refuses it, naming its line."""
    line = raw_fault(draw, _Wrapped(item.value))
    return Item(line.value, fault, None, "not valid UTF-8" if line.phrase == "not valid UTF-8" else "not valid JSON")


@dataclass
class _Wrapped:
    value: Any


def check_location(message: str, path: Path, kind: str, number: int) -> None:
    """A row's location as each prompt/output reader writes it: JSONL and .txt `path:line`, JSON `path: item i`
    (from 0), csv and parquet `path: row i` (from 0)."""
    where = {"jsonl": f"{path}:{number}: ", "txt": f"{path}:{number}: ", "json": f"{path}: item {number}: ",
             "csv": f"{path}: row {number}: ", "parquet": f"{path}: row {number}: "}[kind]
    assert where in message, (where, message)


# -- prompt files --------------------------------------------------------------------------------------------

IN_LINE = st.text(st.one_of(st.characters(codec="utf-8", exclude_characters="\n\r"),
                            st.sampled_from("\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")), max_size=8)
"""Text within one line of a .txt file, with the characters Python's str.splitlines (but no editor) breaks at."""
PROMPT_KINDS = ("string", "vicuna", "evol", "alpaca", "prompt", "prompt-chat", "chosen-chat", "chosen-hh")


def sound_prompt(draw, kind: str, i: int, *, text=PIECE) -> Item:
    question = f"q{i} {draw(text)}"
    key_kind = draw(st.sampled_from(["str", "int", "position"]))
    key = f"r{i}" if key_kind == "str" else 1000 + i if key_kind == "int" else None
    if kind == "string":
        return Item(question)
    if kind == "vicuna":
        key = key if key is not None else f"r{i}"
        return Item({"question_id": key, "category": "writing", "turns": [question, "and then?"]}, key=key)
    if kind == "evol":
        key = key if key is not None else 1000 + i
        return Item({"idx": key, "Instruction": question}, key=key)
    if kind == "alpaca":
        value = {"instruction": question, "output": "...", "dataset": "helpful_base"}
        if draw(st.booleans()):
            value["input"] = draw(SAFE)
    elif kind == "prompt":
        value = {"prompt": question}
    elif kind == "prompt-chat":
        value = {"prompt": [msg("system", "be brief"), msg("user", question)]}
    elif kind == "chosen-chat":
        value = {"chosen": [msg("user", question), msg("assistant", "a")], "rejected": [msg("user", question)]}
    else:
        value = {"chosen": hh(question, "a"), "rejected": hh(question, "b")}
    if key is not None:
        value[draw(st.sampled_from(["id", "prompt_id"]))] = key
    return Item(value, key=key)


def prompt_fault(draw, kind: str, item: Item) -> Item:
    surrogate = draw(SURROGATES)
    value = item.value
    options = [lambda: Item(draw(st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                                           st.lists(SCALARS, max_size=2))),
                            "row", phrase="expected a string or an object", typed=False),
               lambda: Item({"title": "no prompt here"}, "row", phrase="missing the prompt field", typed=False)]
    empty = st.sampled_from(["", "  ", "\t"])
    if kind in ("evol", "alpaca", "prompt"):  # a blank cell (a csv reads an empty one as null)
        text_field = {"evol": "Instruction", "alpaca": "instruction", "prompt": "prompt"}[kind]
        options.append(lambda name=text_field: bad(_without_input(item), (name,),
                                                   draw(st.sampled_from(["", "  ", None])), field=name))
    if kind == "string":
        options.append(lambda: Item(draw(empty), "row", phrase="empty prompt"))
        options.append(lambda: Item(value + surrogate, "row", phrase="lone surrogate", typed=False))
    elif kind == "vicuna":
        options.append(lambda: bad(item, ("turns",), draw(st.sampled_from([[], "abc", 3, [3], [""], [None], ["  "]])),
                                   field="turns", typed=False))
        options.append(lambda: bad(item, ("question_id",), draw(NOT_ID.filter(lambda v: v is not None)) if
                                   draw(st.booleans()) else draw(st.sampled_from([None, ""])), field="question_id",
                                   typed=False))
    elif kind == "evol":
        options.append(lambda: bad(item, ("Instruction",), draw(st.one_of(NOT_TEXT, empty, st.none())),
                                   field="Instruction", typed=False))
        options.append(lambda: bad(item, ("idx",), draw(st.one_of(NOT_ID, st.just(""))), field="idx", typed=False))
    elif kind == "alpaca":
        options.append(lambda: bad(_without_input(item), ("instruction",), draw(st.one_of(NOT_TEXT, empty, st.none())),
                                   field="instruction", typed=False))
        options.append(lambda: bad(item, ("instruction",), value["instruction"] + surrogate, field="instruction",
                                   typed=False))
        options.append(lambda: bad(item, ("dataset",), surrogate, field="dataset", typed=False))
    elif kind == "prompt":
        options.append(lambda: bad(item, ("prompt",), draw(st.one_of(NOT_TEXT, empty, st.none())), field="prompt",
                                   typed=False))
        options.append(lambda: bad(item, ("prompt",), value["prompt"] + surrogate, field="prompt", typed=False))
    elif kind == "prompt-chat":
        options.append(lambda: bad(item, ("prompt",), [msg("assistant", "hello")], field="prompt"))
        options.append(lambda: bad(item, ("prompt", 1, "content"), draw(st.sampled_from([..., None, 3])),
                                   field="prompt", typed=False))
        options.append(lambda: bad(item, ("prompt", 1, "content"), "hi" + surrogate, field="prompt", typed=False))
    elif kind == "chosen-chat":
        options.append(lambda: bad(item, ("chosen",), [msg("user", "q"), msg("user", "again")], field="chosen"))
        options.append(lambda: bad(item, ("chosen",), [msg("assistant", "a")], field="chosen"))
        options.append(lambda: bad(item, ("chosen",), draw(st.one_of(st.integers(), st.just([]), st.just({}))),
                                   field="chosen", typed=False))
    else:
        options.append(lambda: bad(item, ("chosen",), "no turns at all", field="chosen"))
        options.append(lambda: bad(item, ("chosen",), "\n\nAssistant: a", field="chosen"))
    if isinstance(item.key, str) and kind not in ("vicuna",):
        id_field = next(name for name in ("id", "prompt_id", "idx") if isinstance(value, dict) and name in value)
        options.append(lambda name=id_field: replace(bad(item, (name,), item.key + surrogate), fault="id",
                                                     phrase="lone surrogate", field=None, typed=False))
    return draw(st.sampled_from(options))()


def _without_input(item: Item) -> Item:
    """AlpacaEval's `input` is appended to the instruction: without it, an empty instruction is an empty prompt."""
    if isinstance(item.value, dict) and "input" in item.value:
        return replace(item, value={k: v for k, v in item.value.items() if k != "input"})
    return item


@dataclass
class PromptFile:
    file_kind: str
    items: list[Item]
    wrap: bool


@st.composite
def planned_prompt_files(draw, file_kinds=("jsonl", "json", "txt")) -> PromptFile:
    file_kind = draw(st.sampled_from(file_kinds))
    count = draw(st.integers(1, 6))
    if file_kind == "txt":  # each line a prompt; a byte that is not UTF-8 refuses the file, naming its line
        items = [sound_prompt(draw, "string", i, text=IN_LINE) for i in range(count)]
        for index in sorted(draw(st.sets(st.integers(0, count - 1), max_size=1))):
            items[index] = Item(items[index].value.encode("utf-8") + draw(st.sampled_from([b"\xff", b"\xc3("])),
                                "read", phrase=f"line {index + 1} is not valid UTF-8")
        return PromptFile(file_kind, items, False)
    typed = file_kind in ("csv", "parquet")
    kinds = ("prompt", "alpaca", "evol") if file_kind == "csv" else PROMPT_KINDS[1:] if typed else PROMPT_KINDS
    kind = draw(st.sampled_from(kinds))  # one row format per file (a typed file has one set of columns)
    items = [sound_prompt(draw, kind, i) for i in range(count)]
    if typed:  # a column holds ids of one type, and a row cannot leave it out
        items = [_typed_id(item, kind, i) for i, item in enumerate(items)]
    for index in sorted(draw(st.sets(st.integers(0, count - 1), max_size=count))):
        if file_kind == "jsonl" and draw(st.integers(0, 4)) == 0:
            items[index] = raw(draw, items[index])
            continue
        candidate = prompt_fault(draw, kind, items[index])
        if not typed or (candidate.typed and isinstance(candidate.value, dict)):
            items[index] = candidate
    keyed = [i for i, item in enumerate(items) if item.fault is None and item.key is not None]
    if keyed and count > 1 and draw(st.booleans()):  # a repeated id
        source = draw(st.sampled_from(keyed))
        target = draw(st.sampled_from([i for i in range(count) if i != source]))
        name = _id_name(items[target].value)
        if items[target].fault is None and name and isinstance(items[source].key, type(items[target].key)):
            items[target] = replace(items[target], value={**items[target].value, name: items[source].key},
                                    key=items[source].key)
    return PromptFile(file_kind, items, file_kind == "json" and draw(st.booleans()))


def _typed_id(item: Item, kind: str, i: int) -> Item:
    name = _id_name(item.value) or {"vicuna": "question_id", "evol": "idx"}.get(kind, "id")
    return replace(item, value={**item.value, name: f"r{i}"}, key=f"r{i}")


def _id_name(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return next((name for name in ("id", "prompt_id", "question_id", "idx") if name in value), None)


def write_prompt_file(directory: Path, file_kind: str, values: list[Any], wrap: bool = False) -> tuple[Path, list]:
    """Write the rows; returns the file and each row's location number (line, or index from 0)."""
    path = directory / f"prompts.{file_kind}"
    if file_kind in ("jsonl", "txt"):
        lines = [value if isinstance(value, bytes) else value.encode("utf-8") if file_kind == "txt" else
                 json.dumps(value).encode("utf-8") for value in values]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path, list(range(1, len(values) + 1))
    if file_kind == "json":
        path.write_text(json.dumps({"prompts": values} if wrap else values), encoding="utf-8")
    elif file_kind == "csv":
        names = list(dict.fromkeys(key for value in values for key in value))
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows(values)
    else:
        import pyarrow.parquet as pq

        pq.write_table(arrow_table(values), path)
    return path, list(range(len(values)))


def expected_prompts(items: list[Item], numbers: list) -> tuple:
    """("loaded", count) or ("refused", location number, field, phrase): a line the reader refuses first, then the
    first faulty row, then (ids) a lone surrogate or a repeated id."""
    for fault in ("read", "row"):
        for item, number in zip(items, numbers):
            if item.fault == fault:
                return "refused", number, item.field, item.phrase
    seen = set()
    for position, (item, number) in enumerate(zip(items, numbers)):
        if item.fault == "id":
            return "refused", number, None, item.phrase
        key = str(item.key if item.key is not None else position)
        if key in seen:
            return "refused", number, None, "duplicate id"
        seen.add(key)
    return "loaded", len(items)


def check_records(records: list, count: int | None) -> None:
    assert records and (count is None or len(records) == count)
    assert len({str(record.id) for record in records}) == len(records)
    for record in records:
        assert isinstance(record.id, (int, str)) and not isinstance(record.id, bool)
        assert isinstance(record.prompt, str) and record.prompt.strip() and not has_lone_surrogate(record.prompt)
        assert record.messages and any(m["role"] == "user" for m in record.messages)
        for message in record.messages:
            assert isinstance(message["role"], str) and isinstance(message["content"], str)
            assert not has_lone_surrogate(message["role"] + message["content"])


def check_planned_prompts(plan: PromptFile) -> str:
    with tempfile.TemporaryDirectory(prefix="sera-fuzz-") as tmp:
        path, numbers = write_prompt_file(Path(tmp), plan.file_kind, [item.value for item in plan.items], plan.wrap)
        want = expected_prompts(plan.items, numbers)
        try:
            records = load_prompts(path)
        except SeraInputError as exc:
            message = check_message(exc, str(path))
            assert want[0] == "refused", (want, message)
            _, number, field, phrase = want
            if plan.file_kind != "txt":  # a .txt file is refused as a whole (the phrase names the line)
                check_location(message, path, plan.file_kind, number)
            assert field is None or f"field '{field}'" in message, (want, message)
            assert phrase is None or phrase in message, (want, message)
            return "refused"
        assert want[0] == "loaded", (want, records)
        check_records(records, want[1])
        for item, record in zip(plan.items, records):
            if item.key is not None:
                assert record.id == item.key
        return "loaded"


@pytest.mark.parametrize("variant", VARIANTS)
def test_planned_prompt_files(variant):
    fuzz(variant, "load_prompts .jsonl/.json/.txt (planned faults)", planned_prompt_files(), check_planned_prompts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_planned_prompt_tables(variant, datasets_cache):
    fuzz(variant, "load_prompts .csv/.parquet (planned faults)", planned_prompt_files(("csv", "parquet")),
         check_planned_prompts, default_examples=20)


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """csv and parquet prompt files go through datasets' load_dataset: keep its cache out of the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


@dataclass
class AnyPromptFile:
    file_kind: str
    values: list[Any]
    damage: tuple | None
    limit: int | None
    prompt_field: str | None


@st.composite
def any_prompt_files(draw) -> AnyPromptFile:
    file_kind = draw(st.sampled_from(("jsonl", "json", "txt", "csv", "parquet")))
    values = []
    for i in range(draw(st.integers(0, 6))):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            values.append(draw(JSON_VALUES))
        else:
            kind = draw(st.sampled_from(PROMPT_KINDS))
            item = sound_prompt(draw, kind, i)
            values.append((prompt_fault(draw, kind, item) if choice == 1 else item).value)
    if file_kind == "txt":
        values = [v if isinstance(v, str) else json.dumps(v) for v in values]
    elif file_kind == "csv":
        values = [{str(k): json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
                  for row in values if isinstance(row, dict) and row]
    elif file_kind == "parquet":
        values = [row for row in values if isinstance(row, dict)]
    damage = draw(st.one_of(st.none(), st.tuples(st.sampled_from(["truncate", "flip", "insert"]), st.floats(0, 1),
                                                 st.binary(min_size=1, max_size=3))))
    return AnyPromptFile(file_kind, values, damage, draw(st.one_of(st.none(), st.integers(1, 4))),
                         draw(st.one_of(st.none(), st.sampled_from(["prompt", "instruction", "text"]))))


def check_any_prompt_file(example: AnyPromptFile) -> str:
    with tempfile.TemporaryDirectory(prefix="sera-fuzz-") as tmp:
        directory = Path(tmp)
        if example.file_kind == "txt":
            path = directory / "prompts.txt"
            path.write_bytes("\n".join(example.values).encode("utf-8", "surrogatepass"))
        elif example.file_kind == "parquet":
            import pyarrow.parquet as pq

            path = directory / "prompts.parquet"
            pq.write_table(arrow_table([{k if k.strip() and k.isprintable() else f"c{n}": v
                                         for n, (k, v) in enumerate(row.items())} for row in example.values],
                                       lenient=True), path)
        elif example.file_kind == "csv":
            path = directory / "prompts.csv"
            names = list(dict.fromkeys(key for row in example.values for key in row)) or ["prompt"]
            with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=names)
                writer.writeheader()
                writer.writerows(example.values)
        else:
            path = directory / f"prompts.{example.file_kind}"
            path.write_text("".join(json.dumps(v) + "\n" for v in example.values) if example.file_kind == "jsonl"
                            else json.dumps(example.values), encoding="utf-8")
        if example.damage:
            damage_file(path, example.damage)
        try:
            records = load_prompts(path, limit=example.limit, prompt_field=example.prompt_field)
        except SeraInputError as exc:
            check_message(exc, str(path))
            return "refused"
        check_records(records, None)
        return "loaded"


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_prompt_file_loads_soundly_or_is_refused_in_one_line(variant, datasets_cache):
    fuzz(variant, "load_prompts (chaos)", any_prompt_files(), check_any_prompt_file, default_examples=40)


# -- generation files for sera eval ---------------------------------------------------------------------------

def sound_output(draw, i: int, *, alpaca: bool) -> Item:
    prompt, output = f"q{i} {draw(PIECE)}", draw(st.one_of(SAFE, PIECE, st.just("")))
    if alpaca:
        value = {"instruction": prompt, "output": output}
        if draw(st.booleans()):
            value["dataset"] = "helpful_base"
        key = prompt
    else:
        key = draw(st.sampled_from([f"r{i}", 1000 + i]))
        value = {"id": key, "prompt": prompt, "output": output}
        sample = draw(st.sampled_from([None, 0, 1, 2]))
        if sample is not None:
            value["sample"] = sample
        key = (str(key), sample) if sample else str(key)
    if draw(st.booleans()):
        value["generator"] = draw(st.sampled_from(["sft", "sera", None]))
    return Item(value, key=key)


def output_fault(draw, item: Item, *, alpaca: bool) -> Item:
    surrogate = draw(SURROGATES)
    value = item.value
    not_object = "expected an object" if alpaca else "expected a JSON object"
    not_rows = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.lists(SCALARS, max_size=2))
    options = [lambda: Item(draw(not_rows),
                            "row", phrase=not_object),
               lambda: bad(item, ("generator",), draw(st.one_of(st.integers(), st.lists(st.text(max_size=2),
                                                                                       max_size=2), st.just({}))),
                           field="generator"),
               lambda: bad(item, ("generator",), "model" + surrogate, field="generator")]
    names = ("instruction", "output") if alpaca else ("id", "prompt", "output")
    for name in names:
        options.append(lambda name=name: bad(item, (name,), ..., field=name))
        wrong = NOT_ID if name == "id" else st.one_of(NOT_TEXT, st.none())
        options.append(lambda name=name, wrong=wrong: bad(item, (name,), draw(wrong), field=name))
        options.append(lambda name=name: bad(item, (name,), str(value[name]) + surrogate, field=name))
    if not alpaca:
        options.append(lambda: bad(item, ("sample",), draw(st.sampled_from([-1, 1.5, "1", True, [1], {}])),
                                   field="sample"))
    return draw(st.sampled_from(options))()


@dataclass
class OutputFile:
    alpaca: bool
    items: list[Item]
    top: Any = None
    """AlpacaEval only: a JSON document other than a list of rows (refused as a whole)."""


@st.composite
def planned_output_files(draw) -> OutputFile:
    alpaca = draw(st.booleans())
    count = draw(st.integers(1, 6))
    items = [sound_output(draw, i, alpaca=alpaca) for i in range(count)]
    for index in sorted(draw(st.sets(st.integers(0, count - 1), max_size=count))):
        if not alpaca and draw(st.integers(0, 4)) == 0:
            items[index] = raw(draw, items[index], fault="row")
        else:
            items[index] = output_fault(draw, items[index], alpaca=alpaca)
    sound = [i for i, item in enumerate(items) if item.fault is None]
    if sound and count > 1 and draw(st.booleans()):  # a repeated id (or instruction)
        source = draw(st.sampled_from(sound))
        target = draw(st.sampled_from([i for i in range(count) if i != source]))
        if items[target].fault is None:
            copied = {k: items[source].value[k] for k in (("instruction",) if alpaca else ("id", "sample"))
                      if k in items[source].value}
            value = {k: v for k, v in items[target].value.items() if k != "sample"} | copied
            items[target] = replace(items[target], value=value, key=items[source].key)
    top = draw(st.sampled_from([None] * 6 + [{}, [], "rows", {"data": []}])) if alpaca else None
    return OutputFile(alpaca, items, top)


def write_outputs(directory: Path, plan: OutputFile, name: str = "outputs") -> Path:
    if plan.alpaca:
        path = directory / f"{name}.json"
        path.write_text(json.dumps(plan.top if plan.top is not None else [item.value for item in plan.items]),
                        encoding="utf-8")
    else:
        path = directory / f"{name}.jsonl"
        path.write_bytes(b"".join((item.value if isinstance(item.value, bytes) else
                                   json.dumps(item.value).encode("utf-8")) + b"\n" for item in plan.items))
    return path


class LengthJudge(PointwiseJudge):
    """A stand-in judge: the longer output wins."""

    spec = "stand-in:length"

    def score(self, prompts, outputs):
        return [float(len(output)) for output in outputs]


def check_planned_outputs(plan: OutputFile) -> str:
    with tempfile.TemporaryDirectory(prefix="sera-fuzz-") as tmp:
        path = write_outputs(Path(tmp), plan)
        if plan.top is not None:
            with pytest.raises(SeraInputError, match="expected a non-empty JSON list") as info:
                load_outputs(path)
            check_message(info.value, str(path))
            return "refused"
        want = None
        seen = set()
        for index, item in enumerate(plan.items):
            number = index if plan.alpaca else index + 1
            if item.fault is not None:
                want = number, item.field, item.phrase
                break
            if item.key in seen:
                want = number, None, "duplicate"
                break
            seen.add(item.key)
        try:
            rows = load_outputs(path)
        except SeraInputError as exc:
            message = check_message(exc, str(path))
            assert want is not None, message
            number, field, phrase = want
            check_location(message, path, "json" if plan.alpaca else "jsonl", number)
            assert field is None or f"field '{field}'" in message, (want, message)
            assert phrase is None or phrase in message, (want, message)
            return "refused"
        assert want is None, (want, rows)
        assert len(rows) == len(plan.items)
        for row in rows.values():
            assert isinstance(row["prompt"], str) and isinstance(row["output"], str)
            assert not has_lone_surrogate(row["prompt"] + row["output"] + (row.get("generator") or ""))
        # and sera eval itself, against a baseline sharing every other id with the same prompts
        baseline = OutputFile(plan.alpaca, [replace(item, value={**item.value, "output": "baseline answer"})
                                            for item in plan.items[::2]])
        report = evaluate(path, write_outputs(Path(tmp), baseline, "baseline"), LengthJudge(), bootstrap_samples=20,
                          output=Path(tmp) / "report.json")
        assert report["n"] == len(baseline.items) and report["unmatched_candidate"] == len(rows) - report["n"]
        assert json.loads((Path(tmp) / "report.json").read_text(encoding="utf-8"))["n"] == report["n"]
        return "loaded"


@pytest.mark.parametrize("variant", VARIANTS)
def test_planned_generation_files(variant):
    fuzz(variant, "load_outputs + evaluate (planned faults)", planned_output_files(), check_planned_outputs)


@dataclass
class AnyOutputs:
    alpaca: bool
    candidate: list[Any]
    baseline: list[Any]
    damage: tuple | None


@st.composite
def any_output_files(draw) -> AnyOutputs:
    alpaca = draw(st.booleans())

    def rows():
        values = []
        for i in range(draw(st.integers(0, 5))):
            choice = draw(st.sampled_from([0, 1, 2, 2, 2, 2, 2, 2]))  # 0: any JSON, 1: a faulty row, 2: a sound one
            schema = draw(st.sampled_from([alpaca] * 3 + [not alpaca]))  # AlpacaEval rows in a JSONL file too
            item = sound_output(draw, draw(st.integers(0, 3)), alpaca=schema)
            values.append(draw(JSON_VALUES) if choice == 0 else
                          output_fault(draw, item, alpaca=schema).value if choice == 1 else item.value)
        return values

    damage = draw(st.one_of(st.none(), st.none(), st.tuples(st.sampled_from(["truncate", "flip", "insert"]),
                                                            st.floats(0, 1), st.binary(min_size=1, max_size=3))))
    candidate = rows()
    if draw(st.booleans()):  # the baseline answered the same prompts (or the same rows, changed)
        baseline = rows()
    else:
        baseline = [{**row, "output": "baseline"} if isinstance(row, dict) else row for row in candidate]
    return AnyOutputs(alpaca, candidate, baseline, damage)


def check_any_outputs(example: AnyOutputs) -> str:
    with tempfile.TemporaryDirectory(prefix="sera-fuzz-") as tmp:
        paths = []
        for name, values in (("candidate", example.candidate), ("baseline", example.baseline)):
            plan = OutputFile(example.alpaca, [Item(value) for value in values])
            paths.append(write_outputs(Path(tmp), plan, name))
        if example.damage:
            damage_file(paths[0], example.damage)
        try:
            report = evaluate(paths[0], paths[1], LengthJudge(), bootstrap_samples=20, output=Path(tmp) / "r.json")
        except SeraInputError as exc:
            message = str(exc)
            assert "\n" not in message and len(message) < 900, message
            assert str(paths[0]) in message or str(paths[1]) in message, message
            return "refused"
        assert 0 <= report["win_rate"] <= 1 and report["n"] >= 1
        return "loaded"


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_generation_files_are_judged_or_refused_in_one_line(variant):
    fuzz(variant, "evaluate (chaos)", any_output_files(), check_any_outputs)


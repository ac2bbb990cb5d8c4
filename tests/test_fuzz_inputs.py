"""Fuzzed bad input (issue 17, part 3): the preference datasets `sera train` reads.

Hypothesis writes malformed files of every supported type (.jsonl, .jsonl.gz, .json, .json.gz, a JSON
`{"data": [...]}`, .parquet, `save_to_disk` folders) in every supported schema (generic pairs as strings or chat
message lists, HH-RLHF transcripts, UltraFeedback binarized and original, TL;DR) and checks that
:func:`sera.data.load_pairs` ends one of two ways, never another exception:

- it loads, and every row read is a pair or counted under a skip reason (`rows_read == pairs + sum(skipped)`);
- it refuses with a :class:`SeraInputError`: one line naming the file, and the row and field at fault.

Two kinds of example:

- *planned*: valid rows with known faults (an invalid field, a row that is not an object, malformed JSON, a byte
  that is not UTF-8, a lone surrogate, a repeated id, a row skipped for a counted reason, extra fields, empty and
  huge strings). The outcome is predicted exactly: the pairs and skip counts, or the row and field a refusal names.
- *chaos*: anything at all (mixed formats in one file, arbitrary JSON values, truncated or damaged files, any
  `--dataset-format`); only the two-outcome contract is checked.

Each check runs in two variants: the default one (a few dozen derandomized examples, part of `pytest -q`) and one
marked `slow` with 1,000 examples per loader (`python -m pytest -m slow tests/test_fuzz_inputs.py
tests/test_fuzz_eval_inputs.py`; counts in docs/robustness.md). `SERA_FUZZ_RECORD=<file>` appends each run's
counts (examples, loaded, refused, seconds) to <file> as JSON lines.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sera.data import degenerate_reason, load_pairs
from sera.errors import SeraInputError
from sera.io import has_lone_surrogate

# -- profiles and the runner ---------------------------------------------------------------------------------

settings.register_profile("sera-fuzz", max_examples=60, derandomize=True, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("sera-fuzz-slow", settings.get_profile("sera-fuzz"), max_examples=1000)
VARIANTS = ["default", pytest.param("slow", marks=pytest.mark.slow)]
"""Parametrize a fuzz test with these: `default` (profile sera-fuzz) and `slow` (sera-fuzz-slow, 1,000 examples)."""


def fuzz(variant: str, name: str, strategy: st.SearchStrategy, check: Callable[[Any], str | list[str]],
         default_examples: int | None = None) -> Counter:
    """Run `check(example)` over `strategy`'s examples; `check` returns the outcome ("loaded" or "refused"), or one
    per load it made ("skip_invalid: loaded", ...)."""
    profile = settings.get_profile("sera-fuzz-slow" if variant == "slow" else "sera-fuzz")
    if variant != "slow" and default_examples is not None:
        profile = settings(profile, max_examples=default_examples)
    outcomes: Counter = Counter()

    @profile
    @given(strategy)
    def run(example):
        result = check(example)
        outcomes["examples"] += 1
        for outcome in [result] if isinstance(result, str) else result:
            assert outcome.rsplit(" ", 1)[-1] in ("loaded", "refused"), outcome
            outcomes[outcome] += 1

    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    if os.environ.get("SERA_FUZZ_RECORD"):
        with open(os.environ["SERA_FUZZ_RECORD"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"loader": name, "variant": variant, **outcomes, "seconds": round(seconds, 1)})
                         + "\n")
    return outcomes


def check_message(exc: SeraInputError, path: str, *, rows: int | None = None) -> str:
    """A refusal is one line naming the file; a row it names exists. Returns the message."""
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert path in message, message
    assert len(message) <= len(path) + 600, message  # quoted values are cut short: a message stays readable
    if rows is not None:
        for number in re.findall(r"(?:, row |:)(\d+)(?=: )", message[message.index(path) + len(path):][:40]):
            assert 1 <= int(number) <= rows, message
    return message


# -- text ----------------------------------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
SAFE = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=8)
"""Text for valid rows: any Unicode but lone surrogates and line breaks (no accidental HH-RLHF turn markers)."""
HUGE = st.builds(lambda char, size: char * size, st.sampled_from(["a", "é", "語", "😀", " x"]),
                 st.integers(10_000, 200_000))
PIECE = st.one_of(SAFE, SAFE, SAFE, HUGE)
ODD_TEXT = st.one_of(st.text(max_size=12), st.just(""), st.just("   "), HUGE,
                     st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), SURROGATES, st.text(max_size=4)),
                     st.text(st.sampled_from("\n\r\t\x00\u2028 \\\"[]/{}:"), max_size=8),
                     st.sampled_from(["\n\nHuman: hi", "\n\nAssistant: yo", "Human: a\n\nAssistant: b", "[/x]",
                                      "[bold]", "NaN"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**30, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True), ODD_TEXT)
KEYS = st.one_of(st.text(max_size=6), st.sampled_from(
    ["prompt", "chosen", "rejected", "id", "instruction", "completions", "info", "summaries", "choice", "response",
     "role", "content", "fine-grained_score", "a\nb", "x" * 300, "[/x]"]))
"""Object keys: any text, and the field names the schemas use (partly formed rows)."""
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(KEYS, inner, max_size=4)),
                           max_leaves=8)
NOT_TEXT = st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(),
                     st.dictionaries(st.text(max_size=4), SCALARS, max_size=2), st.lists(st.integers(), max_size=2),
                     st.just([]), st.just([{"role": "user"}]), st.just([{"role": 1, "content": "x"}]),
                     st.just([{"content": "x"}]), st.just(["a", "b"]))
"""A value that is neither a string nor a valid chat message list."""
NOT_ID = st.one_of(st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2), st.just({}),
                   st.none())
"""A value that is not a valid pair id (a string or an integer)."""


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if k % 2 == 0 else 'Assistant'}: {turn}" for k, turn in enumerate(turns))


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def with_surrogate(text: str, surrogate: str) -> str:
    return text + surrogate


# -- planned rows --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """A row of a generated file and what loading it must do."""

    value: Any
    """The row (written as JSON), or bytes: a raw line (JSONL only)."""
    outcome: str = "valid"
    """`valid`; `invalid` (refused, or skipped as invalid with skip_invalid); `skip:<reason>` (a format adapter's
    skip: counted, its id not claimed); `degenerate:<reason>` (counted after its id is claimed); `duplicate`."""
    field: str | None = None
    """For `invalid`: the field the refusal names (a prefix: 'chosen' matches 'chosen[1].content')."""
    phrase: str | None = None
    """For a row-level fault (no field): words the refusal contains."""
    id: str | None = None
    """The pair id; None: the row's position (load_pairs' default)."""
    typed: bool = True
    """False when parquet cannot hold the row (a lone surrogate, a value of another type than its column's)."""


SCHEMAS = ("pairs", "pairs-chat", "hh-rlhf", "ultrafeedback-binarized", "ultrafeedback", "tldr")
FORMAT_OF = {"pairs-chat": "pairs"}
SKIP_REASONS = {"invalid", "empty_response", "identical_responses", "hh_transcripts_differ_before_last_reply",
                "hh_last_turn_before_reply_not_human", "conversations_differ_before_last_reply",
                "ultrafeedback_fewer_than_two_rated", "ultrafeedback_all_ratings_tied"}


def rating(draw, value: float) -> dict:
    """One of UltraFeedback's three ways of rating a completion."""
    kind = draw(st.sampled_from(["fine-grained", "annotations", "overall"]))
    if kind == "fine-grained":
        return {"fine-grained_score": value}
    if kind == "overall":
        return {"overall_score": value}
    return {"annotations": {"helpfulness": {"Rating": str(value)}, "honesty": {"Rating": "N/A"}}}


def valid_row(draw, schema: str, i: int, *, explicit_id: bool, variant: int) -> Row:
    """A well-formed row of `schema` that yields one pair (id `r<i>` if explicit, else its position)."""
    text = draw(PIECE)
    question, good, bad = f"q{i} {text}", f"good {i} {draw(PIECE)}", f"bad {i} {draw(SAFE)}"
    if schema == "pairs":
        value = {"prompt": question, "chosen": good, "rejected": bad}
    elif schema == "pairs-chat":
        prompt = [msg("system", "be brief"), msg("user", question)] if variant else [msg("user", question)]
        value = {"prompt": prompt, "chosen": [msg("assistant", good)], "rejected": [msg("assistant", bad)]}
    elif schema == "hh-rlhf":
        before = ("hi", "hello", question) if variant else (question,)
        value = {"chosen": hh(*before, good), "rejected": hh(*before, bad)}
    elif schema == "ultrafeedback-binarized":
        if variant:  # trl-lib's variant: the message lists hold the replies, the prompt is its own column
            value = {"prompt": question, "chosen": [msg("assistant", good)], "rejected": [msg("assistant", bad)]}
        else:
            value = {"prompt": question, "prompt_id": f"pid{i}",
                     "chosen": [msg("user", question), msg("assistant", good)],
                     "rejected": [msg("user", question), msg("assistant", bad)]}
    elif schema == "ultrafeedback":
        value = {"instruction": question, "completions": [
            {"response": good, **rating(draw, 5)}, {"response": bad, **rating(draw, 2)}]}
    else:  # tldr
        choice = variant % 2
        summaries = [{"text": good}, {"text": bad}][::1 if choice == 0 else -1]
        value = {"info": {"post": f"post {text}", "title": f"title {i}", "subreddit": "tifu"},
                 "summaries": summaries, "choice": choice}
    if explicit_id:
        value["id"] = f"r{i}"
    return Row(value, id=f"r{i}" if explicit_id else None)


def _set(row: Row, path: tuple, value: Any, **changes) -> Row:
    """`row` with the field at `path` set to `value` (a `...` value deletes it)."""
    data = json.loads(json.dumps(row.value))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return replace(row, value=data, **changes)


def invalid(row: Row, path: tuple, value: Any, field: str, *, typed: bool = True) -> Row:
    return _set(row, path, value, outcome="invalid", field=field, typed=typed, id=None)


def fault(draw, schema: str, row: Row) -> Row:
    """`row` with one fault of its schema, or one of the faults any row can have: the outcome is recorded."""
    surrogate = draw(SURROGATES)
    value = row.value
    options: list[Callable[[], Row]] = [
        # missing (or null: parquet writes a missing field as null) and wrong-typed required fields
        lambda: invalid(row, (name,), draw(st.sampled_from([..., None])), name)
        for name in REQUIRED_FIELDS[schema]]
    options.append(lambda: Row(draw(st.one_of(st.lists(SCALARS, max_size=2), st.text(max_size=5), st.integers(),
                                               st.none(), st.booleans())),
                               "invalid", phrase="expected an object", typed=False))
    options.append(lambda: _set(row, ("x_" + draw(st.text(max_size=5)),), draw(JSON_VALUES), typed=False))  # extra
    if schema in ("pairs", "pairs-chat"):
        chat = schema == "pairs-chat"
        for name in ("prompt", "chosen", "rejected"):
            options.append(lambda name=name: invalid(row, (name,), draw(NOT_TEXT), name, typed=False))
            if chat:
                options.append(lambda name=name: invalid(row, (name, -1, "content"),
                                                         with_surrogate(value[name][-1]["content"], surrogate),
                                                         name, typed=False))
                options.append(lambda name=name: invalid(row, (name, -1, "content"), ..., name))
            else:
                options.append(lambda name=name: invalid(row, (name,), with_surrogate(value[name], surrogate), name,
                                                         typed=False))
        other_kind = "plain" if chat else [msg("assistant", "plain")]  # a response of the other kind than the prompt
        for name in ("chosen", "rejected"):
            options.append(lambda name=name: invalid(row, (name,), other_kind, name, typed=False))
        options.append(lambda: _set(row, ("chosen",), value["rejected"], outcome="degenerate:identical_responses"))
        options.append(lambda: _set(row, ("rejected",), draw(st.sampled_from(["", "  ", "\t"])) if not chat else
                                    [msg("assistant", draw(st.sampled_from(["", "  "])))],
                                    outcome="degenerate:empty_response"))
    elif schema == "hh-rlhf":
        for name in ("chosen", "rejected"):
            options.append(lambda name=name: invalid(row, (name,), draw(NOT_TEXT), name, typed=False))
            options.append(lambda name=name: invalid(row, (name,), "Human: " + draw(SAFE), name))
        options.append(lambda: invalid(_set(row, ("rejected",), "junk" + value["rejected"]), ("chosen",),
                                       "junk" + value["chosen"], "chosen"))
        options.append(lambda: invalid(row, ("chosen",), with_surrogate(value["chosen"], surrogate), "chosen",
                                       typed=False))
        options.append(lambda: _set(row, ("rejected",), value["chosen"], outcome="degenerate:identical_responses"))
        options.append(lambda: _set(row, ("rejected",), value["rejected"].rsplit("\n\nAssistant:", 1)[0]
                                    + "\n\nAssistant:" + draw(st.sampled_from(["", "  "])),
                                    outcome="degenerate:empty_response"))
        options.append(lambda: _set(row, ("rejected",), hh("another question", "bad"),
                                    outcome="skip:hh_transcripts_differ_before_last_reply", id=None))
        options.append(lambda: _set(_set(row, ("chosen",), hh("q", "a") + "\n\nAssistant: good"), ("rejected",),
                                    hh("q", "a") + "\n\nAssistant: bad",
                                    outcome="skip:hh_last_turn_before_reply_not_human", id=None))
    elif schema == "ultrafeedback-binarized":
        for name in ("chosen", "rejected"):
            options.append(lambda name=name: invalid(row, (name,), draw(st.one_of(NOT_TEXT, st.text(max_size=3))),
                                                     name, typed=False))
            options.append(lambda name=name: invalid(row, (name, -1, "role"), "user", name))
        options.append(lambda: invalid(row, ("chosen", -1, "content"),
                                       with_surrogate(value["chosen"][-1]["content"], surrogate), "chosen",
                                       typed=False))
        if len(value["chosen"]) == 1:  # replies only: the prompt column is required
            options.append(lambda: invalid(row, ("prompt",), draw(st.sampled_from([..., None, ""])), "prompt"))
        else:
            options.append(lambda: _set(row, ("rejected", 0, "content"), "another question",
                                        outcome="skip:conversations_differ_before_last_reply", id=None))
        options.append(lambda: _set(row, ("rejected",), value["chosen"], outcome="degenerate:identical_responses"))
        options.append(lambda: _set(row, ("chosen", -1, "content"), " ", outcome="degenerate:empty_response"))
    elif schema == "ultrafeedback":
        options.append(lambda: invalid(row, ("instruction",), draw(NOT_TEXT), "instruction", typed=False))
        options.append(lambda: invalid(row, ("instruction",), with_surrogate(value["instruction"], surrogate),
                                       "instruction", typed=False))
        options.append(lambda: invalid(row, ("completions",), draw(st.one_of(st.integers(), st.text(max_size=3),
                                                                                st.just({}))), "completions",
                                       typed=False))
        options.append(lambda: invalid(row, ("completions", 1), draw(st.one_of(st.integers(), st.text(max_size=3),
                                                                                  st.none())), "completions[1]",
                                       typed=False))
        options.append(lambda: invalid(row, ("completions", 0, "response"), draw(st.sampled_from([..., None, 3])),
                                       "completions[0]", typed=False))
        unrated = {"response": "unrated", "fine-grained_score": draw(st.sampled_from([None, "5", True, float("nan"),
                                                                                        float("inf"), 10**400]))}
        options.append(lambda: _set(row, ("completions",), [value["completions"][0], unrated],
                                    outcome="skip:ultrafeedback_fewer_than_two_rated", id=None, typed=False))
        options.append(lambda: _set(row, ("completions",), [{**c, "fine-grained_score": 3}
                                                            for c in value["completions"]],
                                    outcome="skip:ultrafeedback_all_ratings_tied", id=None))
        options.append(lambda: _set(row, ("completions", 1, "response"), value["completions"][0]["response"],
                                    outcome="degenerate:identical_responses"))
    else:  # tldr
        options.append(lambda: invalid(row, ("info",), draw(st.one_of(st.integers(), st.text(max_size=3))),
                                       "info.post", typed=False))
        options.append(lambda: invalid(row, ("info", "post"), draw(st.sampled_from([..., None, 5])), "info.post",
                                       typed=False))
        options.append(lambda: invalid(row, ("info", "post"), with_surrogate(value["info"]["post"], surrogate),
                                       "info.post", typed=False))
        options.append(lambda: invalid(row, ("info", draw(st.sampled_from(["title", "subreddit"]))),
                                       draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=1))), "info.",
                                       typed=False))
        options.append(lambda: invalid(row, ("summaries",), draw(st.one_of(
            st.just([]), st.just([{"text": "a"}]), st.just([{"text": "a"}, {"text": "b"}, {"text": "c"}]),
            st.just([{"text": "a"}, {"txt": "b"}]), st.just([{"text": "a"}, "b"]), st.integers())),
            "summaries", typed=False))
        options.append(lambda: invalid(row, ("choice",), draw(st.sampled_from([2, -1, 1.0, 0.0, "1", True, [0]])),
                                       "choice", typed=False))
        options.append(lambda: _set(row, ("summaries", 1, "text"), value["summaries"][0]["text"],
                                    outcome="degenerate:identical_responses"))
        options.append(lambda: _set(row, ("summaries", 0, "text"), "  ", outcome="degenerate:empty_response"))
    if "id" in value and schema != "ultrafeedback":  # UltraFeedback takes any id as its text (str(id))
        options.append(lambda: invalid(row, ("id",), draw(NOT_ID), "id", typed=False))
    if "id" in value:
        options.append(lambda: invalid(row, ("id",), with_surrogate("r", surrogate), "id", typed=False))
    return draw(st.sampled_from(options))()


REQUIRED_FIELDS = {"pairs": ("prompt", "chosen", "rejected"), "pairs-chat": ("prompt", "chosen", "rejected"),
                   "hh-rlhf": ("chosen", "rejected"), "ultrafeedback-binarized": ("chosen", "rejected"),
                   "ultrafeedback": ("instruction", "completions"), "tldr": ("info", "summaries", "choice")}


def raw_fault(draw, row: Row) -> Row:
    """A JSONL line that is not a JSON object: cut short, not UTF-8, a number too long to read, nested too deep."""
    text = json.dumps(row.value, ensure_ascii=draw(st.booleans())).encode("utf-8")
    kind = draw(st.sampled_from(["cut", "bytes", "digits", "deep"]))
    if kind == "cut":
        cut = text[:draw(st.integers(1, len(text) - 1))]
        try:
            cut.decode("utf-8")
        except UnicodeDecodeError:  # cut inside a character
            return Row(cut, "invalid", phrase="not valid UTF-8")
        return Row(cut, "invalid", phrase="malformed JSON")
    if kind == "bytes":
        at = draw(st.integers(1, len(text) - 1))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80"]))
        return Row(text[:at] + bad + text[at:], "invalid", phrase="not valid UTF-8")
    if kind == "digits":
        return Row(b'{"prompt": "a", "chosen": "b", "rejected": "c", "id": ' + b"7" * 5000 + b"}", "invalid",
                   phrase="malformed JSON")
    return Row(b"[" * 100_000 + b"]" * draw(st.sampled_from([0, 100_000])), "invalid", phrase="malformed JSON")


# -- files ---------------------------------------------------------------------------------------------------

TEXT_KINDS = ("jsonl", "jsonl.gz", "json", "json.gz", "json-data")
TYPED_KINDS = ("parquet", "saved", "saved-dict")
KINDS = TEXT_KINDS + TYPED_KINDS


def write_rows(directory: Path, kind: str, rows: list[Any], *, blank: list[int] = (), crlf: bool = False,
               ascii_json: bool = True) -> tuple[Path, list[int]]:
    """Write `rows` (values, or bytes lines for JSONL) as a `kind` file; returns it and each row's number
    (its line in a JSONL file, blank lines counted; else its position from 1)."""
    if kind.startswith("jsonl"):
        lines, numbers = [], []
        for index, row in enumerate(rows):
            lines.extend([b" "] * blank[index] if index < len(blank) else [])
            lines.append(row if isinstance(row, bytes) else
                         json.dumps(row, ensure_ascii=ascii_json or _needs_ascii(row)).encode("utf-8"))
            numbers.append(len(lines))
        data = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines)
        path = directory / f"data.{kind}"
        path.write_bytes(gzip.compress(data, mtime=0) if kind.endswith(".gz") else data)
        return path, numbers
    numbers = list(range(1, len(rows) + 1))
    if kind.startswith("json"):
        document = {"data": rows, "version": 1} if kind == "json-data" else rows
        data = json.dumps(document, ensure_ascii=ascii_json or _needs_ascii(document), indent=1).encode("utf-8")
        path = directory / ("data.json.gz" if kind == "json.gz" else "data.json")
        path.write_bytes(gzip.compress(data, mtime=0) if kind == "json.gz" else data)
        return path, numbers
    table = arrow_table(rows)
    if kind == "parquet":
        import pyarrow.parquet as pq

        path = directory / "data.parquet"
        pq.write_table(table, path)
        return path, numbers
    from datasets import Dataset, DatasetDict

    dataset = Dataset(table)
    path = directory / "saved"
    (DatasetDict({"train": dataset, "test": dataset}) if kind == "saved-dict" else dataset).save_to_disk(str(path))
    return path, numbers


def _needs_ascii(value: Any) -> bool:
    return has_lone_surrogate(json.dumps(value, ensure_ascii=False))


def arrow_table(rows: list[dict], *, lenient: bool = False):
    """The rows as a table, a column per key any row has (null where a row lacks it). `lenient`: a column arrow
    cannot type holds each value as JSON text instead."""
    import pyarrow as pa

    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
            if not _storable(columns[key].type):
                raise pa.ArrowNotImplementedError("parquet stores no struct without fields")
        except (pa.ArrowException, UnicodeEncodeError, OverflowError, TypeError, ValueError):
            if not lenient:
                raise
            columns[key] = pa.array([None if v is None else json.dumps(v) for v in values])
    return pa.table(columns) if columns else pa.table({"empty": pa.array([None] * len(rows))})


def _storable(kind) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_storable(field.type) for field in kind)
    if pa.types.is_list(kind):
        return _storable(kind.value_type)
    return True


# -- planned examples ----------------------------------------------------------------------------------------

@dataclass
class Planned:
    schema: str
    kind: str
    rows: list[Row]
    dataset_format: str
    blank: list[int]
    crlf: bool
    ascii_json: bool


@st.composite
def planned_files(draw, kinds: tuple[str, ...] = KINDS) -> Planned:
    schema = draw(st.sampled_from(SCHEMAS))
    kind = draw(st.sampled_from(kinds))
    typed = kind in TYPED_KINDS
    count = draw(st.integers(1, 6))
    explicit = typed or draw(st.booleans())  # a typed column cannot leave a row's id out: all rows have one
    variant = draw(st.integers(0, 1))  # one layout per file (a typed file has one set of columns)
    rows = [valid_row(draw, schema, i, explicit_id=explicit, variant=variant) for i in range(count)]
    for index in sorted(draw(st.sets(st.integers(0, count - 1), max_size=count))):
        if kind.startswith("jsonl") and draw(st.integers(0, 5)) == 0:
            rows[index] = raw_fault(draw, rows[index])
            continue
        candidate = fault(draw, schema, rows[index])
        if typed and not candidate.typed:
            continue
        rows[index] = candidate
    claimed = [i for i, row in enumerate(rows) if row.id is not None]
    if claimed and len(rows) > 1 and draw(st.booleans()):  # a repeated id
        source = draw(st.sampled_from(claimed))
        target = draw(st.sampled_from([i for i in range(len(rows)) if i != source]))
        if isinstance(rows[target].value, dict) and rows[target].outcome in ("valid", "degenerate:empty_response",
                                                                            "degenerate:identical_responses"):
            rows[target] = _set(rows[target], ("id",), rows[source].id, id=rows[source].id)
    # auto-detection needs a sound first row, and cannot tell replies-only UltraFeedback rows (a prompt string,
    # message-list responses) from mixed-up generic pairs: those need --dataset-format
    detectable = rows[0].outcome == "valid" and not (schema == "ultrafeedback-binarized" and variant)
    detected = detectable and draw(st.booleans())
    return Planned(schema, kind, rows, "auto" if detected else FORMAT_OF.get(schema, schema),
                   blank=draw(st.lists(st.integers(0, 2), max_size=count)) if kind.startswith("jsonl") else [],
                   crlf=draw(st.booleans()), ascii_json=draw(st.booleans()))


def expected(plan: Planned, numbers: list[int], skip_invalid: bool) -> tuple:
    """What load_pairs must do: ("loaded", pairs, skipped) or ("refused", row number or None, field, phrase)."""
    seen: set[str] = set()
    pairs, skipped = 0, Counter()
    for position, (row, number) in enumerate(zip(plan.rows, numbers)):
        if row.outcome == "invalid":
            if not skip_invalid:
                return "refused", number, row.field, row.phrase
            skipped["invalid"] += 1
            continue
        if row.outcome.startswith("skip:"):
            skipped[row.outcome[5:]] += 1
            continue
        pair_id = row.id if row.id is not None else str(position)
        if pair_id in seen:
            return "refused", number, "id", "repeats row"
        seen.add(pair_id)
        if row.outcome.startswith("degenerate:"):
            skipped[row.outcome[11:]] += 1
        else:
            pairs += 1
    if not pairs:
        return "refused", None, None, "no usable preference pairs"
    return "loaded", pairs, skipped


def check_planned(plan: Planned) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="sera-fuzz-") as tmp:
        path, numbers = write_rows(Path(tmp), plan.kind, [row.value for row in plan.rows], blank=plan.blank,
                                   crlf=plan.crlf, ascii_json=plan.ascii_json)
        outcomes = []
        for skip_invalid in (False, True):
            mode = "skip_invalid" if skip_invalid else "strict"
            want = expected(plan, numbers, skip_invalid)
            try:
                loaded = load_pairs(str(path), skip_invalid=skip_invalid, dataset_format=plan.dataset_format)
            except SeraInputError as exc:
                message = check_message(exc, str(path), rows=max(numbers))
                assert want[0] == "refused", (want, message)
                _, number, field, phrase = want
                assert (f"{path}, row {number}: " if number else f"{path}: ") in message, (want, message)
                assert field is None or f"field '{field}" in message, (want, message)
                assert phrase is None or phrase in message, (want, message)
                outcomes.append(f"{mode}: refused")
                continue
            assert want[0] == "loaded", (want, loaded.skipped, len(loaded.pairs))
            check_loaded(loaded, skip_invalid, rows=len(plan.rows))
            assert (len(loaded.pairs), loaded.skipped) == want[1:], (want, loaded.skipped)
            if plan.dataset_format == "auto":
                assert loaded.format == FORMAT_OF.get(plan.schema, plan.schema)
            outcomes.append(f"{mode}: loaded")
        return outcomes


def check_loaded(loaded, skip_invalid: bool, *, rows: int | None, one_pair_per_row: bool = True) -> None:
    """Every row read is a pair or a counted skip; every pair is sound."""
    assert set(loaded.skipped) <= SKIP_REASONS, loaded.skipped
    assert skip_invalid or "invalid" not in loaded.skipped
    if rows is not None:
        assert loaded.rows_read == rows
    if one_pair_per_row:
        assert loaded.rows_read == len(loaded.pairs) + sum(loaded.skipped.values())
    assert loaded.pairs and len({pair.id for pair in loaded.pairs}) == len(loaded.pairs)
    for pair in loaded.pairs:
        assert isinstance(pair.id, str) and not has_lone_surrogate(pair.id)
        kinds = set()
        for text in (pair.prompt, pair.chosen, pair.rejected):
            kinds.add(isinstance(text, str))
            messages = [msg("user", text)] if isinstance(text, str) else text
            assert messages and all(isinstance(m["role"], str) and isinstance(m["content"], str)
                                    and not has_lone_surrogate(m["role"] + m["content"]) for m in messages)
        assert len(kinds) == 1, pair  # all strings or all message lists
        assert degenerate_reason(pair) is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_planned_faults_are_refused_at_their_row_or_counted(variant):
    fuzz(variant, "load_pairs (planned faults)", planned_files(), check_planned)


# -- chaos: anything in any file -----------------------------------------------------------------------------

@dataclass
class Chaos:
    kind: str
    rows: list[Any]
    damage: tuple | None
    dataset_format: str
    skip_invalid: bool
    ultrafeedback_pairs: str


@st.composite
def any_row(draw) -> Any:
    """A row of any schema (sound or faulty) or any JSON value: a file of them mixes formats."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(JSON_VALUES)
    schema = draw(st.sampled_from(SCHEMAS))
    row = valid_row(draw, schema, draw(st.integers(0, 3)), explicit_id=draw(st.booleans()),
                    variant=draw(st.integers(0, 1)))
    return (fault(draw, schema, row) if choice == 1 else row).value


@st.composite
def chaos_files(draw) -> Chaos:
    kind = draw(st.sampled_from(KINDS))
    rows = draw(st.lists(any_row(), max_size=6))
    if kind in TYPED_KINDS:
        rows = [row for row in rows if isinstance(row, dict)]
    damage = draw(st.one_of(st.none(), st.tuples(st.sampled_from(["truncate", "flip", "insert"]),
                                                 st.floats(0, 1), st.binary(min_size=1, max_size=3))))
    from sera.formats import FORMATS, ULTRAFEEDBACK_PAIRS

    return Chaos(kind, rows, damage, draw(st.sampled_from(FORMATS)), draw(st.booleans()),
                 draw(st.sampled_from(ULTRAFEEDBACK_PAIRS)))


def damage_file(path: Path, damage: tuple) -> None:
    """Cut a file short, or change or insert bytes (in a save_to_disk folder: in its data or state file)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        path = files[int(damage[1] * (len(files) - 1))]
    data = path.read_bytes()
    at = int(damage[1] * len(data))
    if damage[0] == "truncate":
        data = data[:at]
    elif damage[0] == "flip":
        data = data[:at] + damage[2] + data[at + len(damage[2]):]
    else:
        data = data[:at] + damage[2] + data[at:]
    path.write_bytes(data)


def check_chaos(example: Chaos) -> str:
    mode = "skip_invalid" if example.skip_invalid else "strict"
    with tempfile.TemporaryDirectory(prefix="sera-fuzz-") as tmp:
        if example.kind in TYPED_KINDS:  # column names datasets can store
            table = arrow_table([{(k if k.strip() and k.isprintable() else f"column{n}"): v
                                  for n, (k, v) in enumerate(row.items())} for row in example.rows], lenient=True)
            rows = table.to_pylist()
        else:
            rows = example.rows
        path, numbers = write_rows(Path(tmp), example.kind, rows, ascii_json=False) if example.kind not in \
            TYPED_KINDS else _write_table(Path(tmp), example.kind, table)
        if example.damage:
            damage_file(path, example.damage)
        try:
            loaded = load_pairs(str(path), skip_invalid=example.skip_invalid, dataset_format=example.dataset_format,
                                ultrafeedback_pairs=example.ultrafeedback_pairs)
        except SeraInputError as exc:
            message = check_message(exc, str(path), rows=None if example.damage else max(numbers, default=0))
            if example.skip_invalid and re.search(r", row \d+: ", message):
                assert "field 'id'" in message and "repeats row" in message, message  # the one row-level refusal
            return f"{mode}: refused"
        all_pairs = example.dataset_format == "ultrafeedback" and example.ultrafeedback_pairs == "all"
        check_loaded(loaded, example.skip_invalid, rows=None if example.damage else len(rows),
                     one_pair_per_row=not all_pairs)
        return f"{mode}: loaded"


def _write_table(directory: Path, kind: str, table) -> tuple[Path, list[int]]:
    numbers = list(range(1, table.num_rows + 1))
    if kind == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, directory / "data.parquet")
        return directory / "data.parquet", numbers
    from datasets import Dataset, DatasetDict

    dataset = Dataset(table)
    (DatasetDict({"train": dataset}) if kind == "saved-dict" else dataset).save_to_disk(str(directory / "saved"))
    return directory / "saved", numbers


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_file_loads_with_counted_skips_or_is_refused_in_one_line(variant):
    fuzz(variant, "load_pairs (chaos)", chaos_files(), check_chaos)


@pytest.fixture(autouse=True, scope="module")
def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()

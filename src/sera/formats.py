"""Public preference datasets, each turned into SeRA's `prompt` / `chosen` / `rejected` rows.

One function per schema; each takes a raw row and returns the rows it yields (dicts with
`prompt`, `chosen`, `rejected` and an `id`), which :func:`sera.data.load_pairs` then validates
like any other pair. A row that is well formed but cannot be turned into a pair without guessing
raises :class:`SkipRow` with a reason; `load_pairs` counts it under that reason in
`LoadedPairs.skipped` (so the run's summary reports it). A malformed row raises
:class:`~sera.errors.SeraInputError` naming file, row and field.

    format                    schema (columns)                                  yields
    pairs                     prompt, chosen, rejected [, id]                   the row as it is
    hh-rlhf                   chosen, rejected: whole "Human:/Assistant:"       chat prompt (all turns before the
                              transcripts (Anthropic/hh-rlhf)                   last Assistant turn) + the two replies
    ultrafeedback-binarized   prompt, chosen, rejected as message lists        chat prompt + the two final replies
                              (HuggingFaceH4/ultrafeedback_binarized;          (splits train_prefs / test_prefs)
                              trl-lib's variant without `prompt` too)
    ultrafeedback             instruction, completions[{response, ratings}]    best-rated vs a random lower-rated
                              (openbmb/UltraFeedback)                           one; or every ranked pair (Curri-DPO)
    tldr                      info{post, title, subreddit}, summaries[2],      TL;DR prompt + chosen/rejected summary
                              choice (openai/summarize_from_feedback);          (prompt/chosen/rejected rows of
                              or prompt/chosen/rejected strings                 trl-lib/tldr-preference pass as pairs)

`auto` looks at the columns of the first row (see :func:`detect_format`).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any, Callable

from sera.errors import SeraInputError
from sera.io import preview

FORMATS = ("auto", "pairs", "hh-rlhf", "ultrafeedback-binarized", "ultrafeedback", "tldr")
ULTRAFEEDBACK_PAIRS = ("best-vs-random", "all")

DEFAULT_SPLITS = {"ultrafeedback-binarized": "train_prefs", "sft": "train_sft"}
"""The split read from a hub dataset (or a saved DatasetDict) when none is named."""

HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


class SkipRow(Exception):
    """A well-formed row that yields no pair; `reason` is the key it is counted under."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- detection ------------------------------------------------------------------------------------

def detect_format(row: Any, where: str) -> str:
    """The format of a dataset, from the columns (and value types) of its first row."""
    if not isinstance(row, dict):
        raise SeraInputError(f"{where}: expected an object; cannot detect the dataset format")
    keys = set(row)
    if {"instruction", "completions"} <= keys:
        return "ultrafeedback"
    if {"info", "summaries", "choice"} <= keys:
        return "tldr"
    if {"chosen", "rejected"} <= keys:
        chosen = row["chosen"]
        if "prompt" not in keys:
            if isinstance(chosen, str) and HH_ASSISTANT in chosen:
                return "hh-rlhf"
            if isinstance(chosen, list):
                return "ultrafeedback-binarized"
        elif isinstance(chosen, list) and chosen and isinstance(chosen[0], dict) and chosen[0].get("role") != "assistant":
            return "ultrafeedback-binarized"  # the message list repeats the prompt's turns
        if "prompt" in keys:
            return "pairs"
    raise SeraInputError(
        f"{where}: cannot detect the dataset format from its columns ({_columns(keys)}); "
        "expected prompt/chosen/rejected (pairs), chosen/rejected transcripts (hh-rlhf), "
        "instruction/completions (ultrafeedback) or info/summaries/choice (tldr); "
        "name it with --dataset-format")


def converter(fmt: str, *, seed: int = 0, ultrafeedback_pairs: str = "best-vs-random"
              ) -> Callable[[dict, str, str], list[dict]]:
    """`convert(row, default_id, where) -> rows` for a format other than `auto`."""
    if fmt not in FORMATS or fmt == "auto":
        raise SeraInputError(f"--dataset-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if ultrafeedback_pairs not in ULTRAFEEDBACK_PAIRS:
        raise SeraInputError(f"ultrafeedback_pairs: {ultrafeedback_pairs!r} is not one of "
                             f"{', '.join(ULTRAFEEDBACK_PAIRS)}")
    if fmt == "pairs":
        return lambda row, default_id, where: [row]
    if fmt == "hh-rlhf":
        return lambda row, default_id, where: [hh_rlhf(row, default_id, where)]
    if fmt == "ultrafeedback-binarized":
        return lambda row, default_id, where: [ultrafeedback_binarized(row, default_id, where)]
    if fmt == "tldr":
        return lambda row, default_id, where: [tldr(row, default_id, where)]
    if ultrafeedback_pairs == "all":
        return lambda row, default_id, where: ultrafeedback_ranked_pairs(row, default_id, where)
    return lambda row, default_id, where: [ultrafeedback(row, default_id, where, seed=seed)]


# -- HH-RLHF --------------------------------------------------------------------------------------

def hh_rlhf(row: dict, default_id: str, where: str) -> dict:
    """Split both transcripts at their last Assistant turn; the conversations before it must agree."""
    _require(row, ("chosen", "rejected"), where)
    prompts, replies = [], []
    for name in ("chosen", "rejected"):
        text = row[name]
        if not isinstance(text, str):
            raise SeraInputError(f"{where}: field {name!r} must be a Human:/Assistant: transcript (a string)")
        cut = text.rfind(HH_ASSISTANT)
        if cut < 0:
            raise SeraInputError(f"{where}: field {name!r} has no '\\n\\nAssistant:' turn "
                                 "(not an HH-RLHF transcript)")
        prompts.append(text[:cut])
        replies.append(text[cut + len(HH_ASSISTANT):].strip())
    if prompts[0] != prompts[1]:
        raise SkipRow("hh_transcripts_differ_before_last_reply")
    return {"id": _row_id(row, default_id), "prompt": hh_messages(prompts[0], where, "chosen"),
            "chosen": [{"role": "assistant", "content": replies[0]}],
            "rejected": [{"role": "assistant", "content": replies[1]}]}


def hh_messages(transcript: str, where: str, name: str) -> list[dict]:
    """"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c" -> user/assistant/user messages (same-role turns merged)."""
    parts = _HH_TURN.split(transcript)
    if parts[0].strip() or len(parts) < 3:
        raise SeraInputError(f"{where}: field {name!r} does not start with a '\\n\\nHuman:' turn")
    messages: list[dict] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        content = content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise SkipRow("hh_last_turn_before_reply_not_human")
    return messages


# -- UltraFeedback --------------------------------------------------------------------------------

def ultrafeedback_binarized(row: dict, default_id: str, where: str) -> dict:
    """`chosen`/`rejected` are whole conversations; the prompt is what precedes their final reply."""
    _require(row, ("chosen", "rejected"), where)
    conversations = []
    for name in ("chosen", "rejected"):
        value = row[name]
        if not (isinstance(value, list) and value and all(_is_message(m) for m in value)):
            raise SeraInputError(f"{where}: field {name!r} must be a non-empty list of "
                                 "{'role': str, 'content': str} messages")
        if value[-1]["role"] != "assistant":
            raise SeraInputError(f"{where}: field {name!r}: the last message must be the assistant's reply")
        conversations.append(value)
    chosen, rejected = conversations
    prompt = [dict(role=m["role"], content=m["content"]) for m in chosen[:-1]]
    if prompt != [dict(role=m["role"], content=m["content"]) for m in rejected[:-1]]:
        raise SkipRow("conversations_differ_before_last_reply")
    if not prompt:  # the message lists hold the replies only: the prompt is its own column
        text = row.get("prompt")
        if not isinstance(text, str) or not text:
            raise SeraInputError(f"{where}: field 'prompt' is missing (the message lists hold no user turn)")
        prompt = [{"role": "user", "content": text}]
    row_id = row.get("id", row.get("prompt_id", default_id))
    return {"id": row_id, "prompt": prompt, "chosen": [_message(chosen[-1])], "rejected": [_message(rejected[-1])]}


def ultrafeedback_ratings(row: dict, where: str) -> list[tuple[str, float]]:
    """(response, rating) of each completion. Rating: `fine-grained_score` (the mean of the four aspect
    ratings, what HuggingFaceH4's binarization ranks by), else the mean of `annotations[*].Rating`,
    else `overall_score`. Completions without any rating are left out."""
    _require(row, ("instruction", "completions"), where)
    if not isinstance(row["instruction"], str):
        raise SeraInputError(f"{where}: field 'instruction' must be a string")
    completions = row["completions"]
    if not isinstance(completions, list):
        raise SeraInputError(f"{where}: field 'completions' must be a list")
    rated = []
    for index, completion in enumerate(completions):
        if not isinstance(completion, dict) or not isinstance(completion.get("response"), str):
            raise SeraInputError(f"{where}: field 'completions[{index}].response' is missing or not a string")
        rating = _rating(completion)
        if rating is not None:
            rated.append((completion["response"], rating))
    return rated


def ultrafeedback(row: dict, default_id: str, where: str, *, seed: int = 0) -> dict:
    """Binarized as HuggingFaceH4 did: the best-rated completion vs a random lower-rated one (seeded per row)."""
    rated = ultrafeedback_ratings(row, where)
    if len(rated) < 2:
        raise SkipRow("ultrafeedback_fewer_than_two_rated")
    best = max(rating for _, rating in rated)
    top = [response for response, rating in rated if rating == best]
    lower = [response for response, rating in rated if rating < best]
    if not lower:
        raise SkipRow("ultrafeedback_all_ratings_tied")
    row_id = str(_row_id(row, default_id))
    # seeded by the bytes str seeds hash to (the same draw), which a lone surrogate in the id cannot break
    rng = random.Random(f"{seed}:{row_id}".encode("utf-8", "surrogatepass"))
    return {"id": row_id, "prompt": [{"role": "user", "content": row["instruction"]}],
            "chosen": [{"role": "assistant", "content": top[0]}],
            "rejected": [{"role": "assistant", "content": rng.choice(lower)}]}


def ultrafeedback_ranked_pairs(row: dict, default_id: str, where: str) -> list[dict]:
    """Every pair of completions with different ratings, higher-rated as chosen (Curri-DPO's input).

    Ids are `<row id>:<i>><j>` (indices into the rated completions); each row carries `rating_gap`,
    `chosen_rating` and `rejected_rating`, which `load_pairs` keeps in `LoadedPairs.meta`."""
    rated = ultrafeedback_ratings(row, where)
    row_id = str(_row_id(row, default_id))
    prompt = [{"role": "user", "content": row["instruction"]}]
    pairs = []
    for i, (response_i, rating_i) in enumerate(rated):
        for j, (response_j, rating_j) in enumerate(rated):
            if rating_i > rating_j:
                pairs.append({"id": f"{row_id}:{i}>{j}", "prompt": prompt,
                              "chosen": [{"role": "assistant", "content": response_i}],
                              "rejected": [{"role": "assistant", "content": response_j}],
                              "rating_gap": rating_i - rating_j, "chosen_rating": rating_i,
                              "rejected_rating": rating_j})
    if not pairs:
        raise SkipRow("ultrafeedback_all_ratings_tied" if len(rated) >= 2 else "ultrafeedback_fewer_than_two_rated")
    return pairs


def _rating(completion: dict) -> float | None:
    score = completion.get("fine-grained_score")
    if _number(score):
        return float(score)
    annotations = completion.get("annotations")
    if isinstance(annotations, dict):
        values = []
        for aspect in annotations.values():
            rating = aspect.get("Rating") if isinstance(aspect, dict) else None
            try:
                value = float(rating)
            except (TypeError, ValueError, OverflowError):
                continue  # "N/A" ratings are not counted
            if math.isfinite(value):
                values.append(value)
        if values:
            return sum(values) / len(values)
    score = completion.get("overall_score")
    return float(score) if _number(score) else None


# -- TL;DR ----------------------------------------------------------------------------------------

def tldr(row: dict, default_id: str, where: str) -> dict:
    """OpenAI's summarize-from-feedback comparisons (post + two summaries + the labeller's choice).

    The prompt is TRL's TL;DR format ("SUBREDDIT: r/...\\n\\nTITLE: ...\\n\\nPOST: ...\\n\\nTL;DR:"); the
    summaries follow it after a space. Rows that are already prompt/chosen/rejected pass unchanged."""
    if {"prompt", "chosen", "rejected"} <= set(row):
        return row
    _require(row, ("info", "summaries", "choice"), where)
    info, summaries, choice = row["info"], row["summaries"], row["choice"]
    if not isinstance(info, dict) or not isinstance(info.get("post", info.get("article")), str):
        raise SeraInputError(f"{where}: field 'info.post' is missing or not a string")
    if not (isinstance(summaries, list) and len(summaries) == 2
            and all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in summaries)):
        raise SeraInputError(f"{where}: field 'summaries' must be two objects with a 'text' string")
    if not isinstance(choice, int) or isinstance(choice, bool) or choice not in (0, 1):
        raise SeraInputError(f"{where}: field 'choice' must be 0 or 1")
    for name in ("title", "subreddit"):
        if info.get(name) is not None and not isinstance(info[name], str):
            raise SeraInputError(f"{where}: field 'info.{name}' must be a string")
    post = info.get("post", info.get("article")).strip()
    parts = []
    if info.get("subreddit"):
        parts.append(f"SUBREDDIT: r/{info['subreddit']}")
    if info.get("title"):
        parts.append(f"TITLE: {info['title'].strip()}")
    parts.append(f"POST: {post}")
    prompt = "\n\n".join(parts) + "\n\nTL;DR:"
    row_id = row.get("id", f"{info['id']}:{default_id}" if info.get("id") else default_id)
    return {"id": row_id, "prompt": prompt, "chosen": " " + summaries[choice]["text"].strip(),
            "rejected": " " + summaries[1 - choice]["text"].strip()}


# -- helpers --------------------------------------------------------------------------------------

def _require(row: dict, names: tuple[str, ...], where: str) -> None:
    for name in names:
        if name not in row or row[name] is None:
            raise SeraInputError(f"{where}: field {name!r} is missing")


def _columns(keys: set) -> str:
    """Column names for a message: quoted and cut short, at most ten (a name can hold a line break)."""
    names = sorted(map(str, keys))
    return ", ".join(preview(name, 40) for name in names[:10]) + (f", ... ({len(names)} columns)" if len(names) > 10
                                                                   else "")


def _row_id(row: dict, default_id: str) -> Any:
    return row.get("id", default_id)


def _is_message(message: Any) -> bool:
    return (isinstance(message, dict) and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str))


def _message(message: dict) -> dict:
    return {"role": message["role"], "content": message["content"]}


def _number(value: Any) -> bool:
    """A finite rating: not a bool, NaN, an infinity, or an integer beyond a float's range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False

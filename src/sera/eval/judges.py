"""Judges: which of two responses to a prompt is better.

The API (reused wherever sera needs a labeller of response pairs)::

    judge = build_judge("rm:path/to/reward-model")      # or "gold:mod:fn", "llm:model@http://host/v1"
    judge.compare(prompts, outputs_a, outputs_b)        # -> list[int]: +1 a wins, 0 tie, -1 b wins
    judge.score(prompts, outputs)                       # -> list[float]; pointwise judges only
    judge.pointwise                                     # True for gold and rm

Specs:

- ``gold:<module>:<function>`` - a Python callable ``(prompt, output) -> float`` (higher is better).
  ``<module>`` is an importable dotted name or a path to a ``.py`` file. Equal scores tie.
- ``rm:<model path or hub id>`` - a sequence-classification reward model with one output;
  the prompt and response are formatted with the tokenizer's chat template when it has one,
  else as ``prompt + "\\n" + response``. Higher score wins; equal scores tie. It is loaded with
  the model options every command shares (``dtype``, ``gguf_file``, ``trust_remote_code``: `sera
  eval`'s --dtype, --gguf-file, --trust-remote-code); the other judges load no model and refuse them.
- ``llm:<model>@<base_url>`` - an OpenAI-compatible chat-completions endpoint
  (``POST <base_url>/chat/completions``; base_url usually ends in ``/v1``). The API key comes from
  ``SERA_JUDGE_API_KEY`` or else ``OPENAI_API_KEY`` (none: no Authorization header, as for a local
  vLLM server); it is never logged, cached or reported. Each pair is judged twice, once in each
  order, to cancel position bias: the two verdicts must agree for a win, anything else is a tie.
  Each request has a timeout and is retried with exponential backoff on connection errors,
  HTTP 408/429/5xx and replies without a recognisable verdict; when the retries run out a
  :class:`SeraRuntimeError` is raised. Every finished judgment is appended to an on-disk JSONL
  cache as soon as it arrives, so a rerun (after a failure, or of the same comparison) never pays
  for it again.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import importlib.util
import json
import math
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from sera.errors import SeraInputError, SeraRuntimeError
from sera.progress import track

API_KEY_VARIABLES = ("SERA_JUDGE_API_KEY", "OPENAI_API_KEY")
MODEL_OPTIONS = ("dtype", "gguf_file", "trust_remote_code")
"""Options that load a judge's model (the rm judge's); the same names as every command's model options."""


class Judge(ABC):
    """Compares two responses to the same prompt. `spec` is the string it was built from."""

    spec: str = ""
    pointwise: bool = False

    @abstractmethod
    def compare(self, prompts: Sequence[str], outputs_a: Sequence[str], outputs_b: Sequence[str]) -> list[int]:
        """For each i: +1 if outputs_a[i] is better, -1 if outputs_b[i] is, 0 for a tie."""

    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        raise SeraInputError(f"judge {self.spec!r} compares pairs; it gives no pointwise scores")


class PointwiseJudge(Judge):
    """A judge that scores each response on its own; a pair is won by the higher score."""

    pointwise = True

    @abstractmethod
    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        """One score per response (higher is better)."""

    def compare(self, prompts, outputs_a, outputs_b) -> list[int]:
        _check_lengths(prompts, outputs_a, outputs_b)
        scores = self.score(list(prompts) * 2, list(outputs_a) + list(outputs_b))
        n = len(prompts)
        return [0 if a_text == b_text else _sign(a - b)
                for a, b, a_text, b_text in zip(scores[:n], scores[n:], outputs_a, outputs_b)]


def build_judge(spec: str, **options) -> Judge:
    """A judge from its spec string (see the module docstring). `options` go to the judge's
    constructor when it takes them (e.g. `cache`, `timeout`, `max_retries`, `backoff_base`,
    `concurrency` for the llm judge; `batch_size`, `max_length` for the rm judge); others are ignored, except
    the model-loading options (`dtype`, `gguf_file`, `trust_remote_code`), which only an rm judge takes."""
    kind, _, rest = spec.partition(":")
    if not rest:
        raise SeraInputError(f"--judge {spec!r}: expected gold:<module>:<function>, rm:<model> or "
                             "llm:<model>@<base_url>")
    given = [name for name in MODEL_OPTIONS if options.get(name) not in (None, False)]
    if given and kind != "rm":
        raise SeraInputError(f"--{', --'.join(name.replace('_', '-') for name in given)}: model-loading options "
                             f"apply to an rm: judge's model only, and a {kind} judge loads no model")
    if kind == "gold":
        return GoldJudge(spec)
    if kind == "rm":
        return RewardModelJudge(rest, **_pick(options, RewardModelJudge))
    if kind == "llm":
        model, at, base_url = rest.rpartition("@")
        if not at or not model or not base_url.startswith(("http://", "https://")):
            raise SeraInputError(f"--judge {spec!r}: expected llm:<model>@<base_url>, "
                                 "e.g. llm:gpt-4o@https://api.openai.com/v1")
        return LLMJudge(model, base_url, **_pick(options, LLMJudge))
    raise SeraInputError(f"--judge {spec!r}: unknown judge kind {kind!r} (choose gold, rm or llm)")


def _pick(options: dict, cls) -> dict:
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    return {k: v for k, v in options.items() if k in accepted and v is not None}


# --------------------------------------------------------------------------------------------------- gold

class GoldJudge(PointwiseJudge):
    """`gold:<module>:<function>`: a Python callable (prompt, output) -> float."""

    def __init__(self, spec: str, function: Callable[[str, str], float] | None = None):
        self.spec = spec
        self.function = function if function is not None else _import_function(spec)

    def score(self, prompts, outputs) -> list[float]:
        _check_lengths(prompts, outputs)
        scores = []
        for prompt, output in zip(prompts, outputs):
            try:
                value = self.function(prompt, output)
            except Exception as exc:
                raise SeraRuntimeError(f"judge {self.spec}: the function raised "
                                       f"{type(exc).__name__}: {exc}") from exc
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise SeraInputError(f"judge {self.spec}: the function must return a number, "
                                     f"got {type(value).__name__}") from None
            if math.isnan(value):
                raise SeraRuntimeError(f"judge {self.spec}: the function returned NaN")
            scores.append(value)
        return scores


def _import_function(spec: str) -> Callable:
    _, _, rest = spec.partition(":")
    module_name, colon, function_name = rest.rpartition(":")
    if not colon or not module_name or not function_name:
        raise SeraInputError(f"--judge {spec!r}: expected gold:<module>:<function>")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise SeraInputError(f"--judge {spec!r}: no such file: {path}")
            module_spec = importlib.util.spec_from_file_location(f"_sera_gold_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except SeraInputError:
        raise
    except Exception as exc:
        raise SeraInputError(f"--judge {spec!r}: cannot import {module_name!r} "
                             f"({type(exc).__name__}: {exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise SeraInputError(f"--judge {spec!r}: {module_name!r} has no function {function_name!r}")
    return function


# ----------------------------------------------------------------------------------------------------- rm

class RewardModelJudge(PointwiseJudge):
    """`rm:<path>`: a sequence-classification reward model (one logit = the reward)."""

    def __init__(self, path: str, *, batch_size: int = 8, max_length: int | None = None, dtype: str = "auto",
                 trust_remote_code: bool = False, gguf_file: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from sera.models import resolve_dtype, split_gguf

        self.spec = f"rm:{path}"
        self.batch_size = batch_size
        folder, gguf_file = split_gguf(path, gguf_file)  # a .gguf path, or a folder/hub repo + --gguf-file
        gguf = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **gguf)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                folder, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code, **gguf)
        except Exception as exc:
            raise SeraInputError(f"--judge rm:{path}: cannot load a sequence-classification model "
                                 f"({_first_line(exc)})") from exc
        if self.model.config.num_labels != 1:
            raise SeraInputError(f"--judge rm:{path}: a reward model has one output, this one has "
                                 f"{self.model.config.num_labels} labels")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        limit = getattr(self.tokenizer, "model_max_length", None) or 4096
        self.max_length = max_length or min(int(limit), 4096)
        if torch.cuda.is_available():
            self.model = self.model.to("cuda")
        self.model.eval()

    def encode(self, prompt: str, output: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}],
                tokenize=True, return_dict=True)["input_ids"]
        else:
            ids = self.tokenizer(prompt + "\n" + output)["input_ids"]
        return list(ids)[-self.max_length:] if len(ids) > self.max_length else list(ids)

    def score(self, prompts, outputs) -> list[float]:
        import torch

        _check_lengths(prompts, outputs)
        unique = list(dict.fromkeys(zip(prompts, outputs)))  # score each distinct text once: equal texts tie
        if len(unique) < len(prompts):
            by_text = dict(zip(unique, self.score([p for p, _ in unique], [o for _, o in unique])))
            return [by_text[item] for item in zip(prompts, outputs)]
        encoded = [self.encode(p, o) for p, o in zip(prompts, outputs)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        scores = [0.0] * len(encoded)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        for batch in track(batches, "reward model", total=len(batches)):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, i in enumerate(batch):
                scores[i] = float(logits[row, 0].float())
        return scores


# ---------------------------------------------------------------------------------------------------- llm

JUDGE_SYSTEM = (
    "You are a careful, impartial judge of AI assistants. Compare two responses to the user's "
    "instruction and decide which one is more helpful, correct, and well written. Do not let the order "
    "of the responses or their length influence you."
)
JUDGE_TEMPLATE = (
    "[Instruction]\n{prompt}\n\n"
    "[Response A]\n{first}\n\n"
    "[Response B]\n{second}\n\n"
    "Which response is better? Reply with exactly one of [[A]], [[B]] or [[tie]] and nothing else."
)
TEMPLATE_VERSION = "pairwise-v1"


class JudgeReplyError(Exception):
    """A reply we could not use (retried like a transient failure)."""


def parse_verdict(text: str) -> str:
    """'A', 'B' or 'tie' from a judge's reply; raises JudgeReplyError when there is none or it is ambiguous.

    Accepts "[[A]]"-style tags anywhere (all tags must agree), or a reply that is just the verdict:
    "A", "b.", "Response A", "Tie", "**B**", "Output (a)".
    """
    if not isinstance(text, str):
        raise JudgeReplyError("reply has no text content")
    tags = {m.lower() for m in re.findall(r"\[\[\s*(a|b|tie)\s*\]\]", text, flags=re.IGNORECASE)}
    if len(tags) == 1:
        return _VERDICTS[tags.pop()]
    if len(tags) > 1:
        raise JudgeReplyError(f"reply names several verdicts: {text[:80]!r}")
    bare = re.sub(r"[\s\*\"'`.:!()\[\]]+", " ", text).strip().lower()
    bare = re.sub(r"^(?:verdict|final verdict|answer|the better response is)\s+", "", bare)
    bare = re.sub(r"^(?:response|output|assistant)\s+", "", bare)
    if bare in _VERDICTS:
        return _VERDICTS[bare]
    raise JudgeReplyError(f"no verdict in reply: {text[:80]!r}")


_VERDICTS = {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie"}


class JudgmentCache:
    """Append-only JSONL of finished judgments: {"key", "verdict"}; a torn last line is ignored."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                        self._entries[row["key"]] = row["verdict"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line torn by a crash, or foreign content

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, verdict: str, model: str) -> None:
        with self._lock:
            self._entries[key] = verdict
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "verdict": verdict, "model": model}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self._entries)


class LLMJudge(Judge):
    """`llm:<model>@<base_url>`: pairwise verdicts from an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, model: str, base_url: str, *, cache: str | Path | None = None, timeout: float = 60.0,
                 max_retries: int = 5, backoff_base: float = 1.0, backoff_max: float = 60.0,
                 concurrency: int = 4, max_tokens: int | None = 16, temperature: float = 0.0,
                 api_key: str | None = None):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.spec = f"llm:{model}@{self.base_url}"
        self.url = self.base_url + "/chat/completions"
        self.cache = JudgmentCache(cache)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._api_key = api_key if api_key is not None else next(
            (os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), None)
        self.requests_made = 0  # HTTP requests sent (not cache hits), for reports and tests
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"LLMJudge({self.spec!r})"

    def key(self, prompt: str, first: str, second: str) -> str:
        """Cache key of one ordered judgment: (model, template, prompt, first, second)."""
        payload = json.dumps([self.model, TEMPLATE_VERSION, self.temperature, prompt, first, second],
                             ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def compare(self, prompts, outputs_a, outputs_b) -> list[int]:
        _check_lengths(prompts, outputs_a, outputs_b)
        forward = [(p, a, b) for p, a, b in zip(prompts, outputs_a, outputs_b)]
        backward = [(p, b, a) for p, a, b in zip(prompts, outputs_a, outputs_b)]
        verdicts = self.judge_ordered(forward + backward)
        n = len(forward)
        return [combine(first, second) for first, second in zip(verdicts[:n], verdicts[n:])]

    def judge_ordered(self, items: Sequence[tuple[str, str, str]]) -> list[str]:
        """'A'/'B'/'tie' for each (prompt, first, second), from the cache or the endpoint."""
        keys = [self.key(*item) for item in items]
        results: list[str | None] = [self.cache.get(k) for k in keys]
        todo: dict[str, list[int]] = {}
        for index, (key, result) in enumerate(zip(keys, results)):
            if result is None:
                todo.setdefault(key, []).append(index)  # identical queries are asked once
        if todo:
            jobs = [(key, items[indices[0]]) for key, indices in todo.items()]
            for key, verdict in self._run(jobs):
                for index in todo[key]:
                    results[index] = verdict
        return results  # type: ignore[return-value]

    def _run(self, jobs):
        """Yield (key, verdict) as requests finish; on a failure, keep what finished, then raise."""
        executor = ThreadPoolExecutor(max_workers=self.concurrency)
        stop = threading.Event()  # set on the first failure: no new attempts, running requests finish
        pending = {executor.submit(self._judge_one, key, item, stop): key for key, item in jobs}
        failure: BaseException | None = None
        # rich advances a bar when the next item is asked for: one extra item, taken now, keeps it exact
        bar = iter(track(range(len(jobs) + 1), f"judging with {self.model}", total=len(jobs)))
        next(bar)
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    key = pending.pop(future)
                    error = future.exception()
                    if error is not None:
                        if not isinstance(error, _Stopped):
                            failure = failure or error
                        stop.set()
                        continue
                    next(bar, None)
                    yield key, future.result()
                if failure is not None:
                    # requests already in flight finish (and are cached); queued jobs never start
                    executor.shutdown(wait=True, cancel_futures=True)
                    break
        finally:  # also on Ctrl-C: no new attempts, in-flight requests finish and are cached
            stop.set()
            executor.shutdown(wait=True, cancel_futures=True)
            bar.close()
        if failure is not None:
            if isinstance(failure, (SeraRuntimeError, SeraInputError)):
                raise failure
            raise SeraRuntimeError(f"judge {self.spec}: {type(failure).__name__}: {failure}") from failure

    def _judge_one(self, key: str, item: tuple[str, str, str], stop: threading.Event | None = None) -> str:
        prompt, first, second = item
        messages = [{"role": "system", "content": JUDGE_SYSTEM},
                    {"role": "user", "content": JUDGE_TEMPLATE.format(prompt=prompt, first=first, second=second)}]
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self._delay(attempt, last_error)
                stop.wait(delay) if stop is not None else time.sleep(delay)  # wakes early on a stop
            if stop is not None and stop.is_set():
                raise _Stopped()
            try:
                verdict = parse_verdict(self._post(messages))
            except SeraInputError:
                if stop is not None:
                    stop.set()
                raise
            except _Retryable as exc:
                last_error = str(exc)
                continue
            except JudgeReplyError as exc:
                last_error = f"malformed reply: {exc}"
                continue
            self.cache.put(key, verdict, self.model)
            return verdict
        if stop is not None:
            stop.set()
        raise SeraRuntimeError(
            f"judge {self.spec}: gave up after {self.max_retries + 1} attempts ({last_error}); "
            f"{len(self.cache)} finished judgments are kept in the cache"
            + (f" {self.cache.path}" if self.cache.path else "") + ", so a rerun resumes")

    def _delay(self, attempt: int, last_error: str) -> float:
        retry_after = re.search(r"retry after ([0-9.]+)s", last_error)
        if retry_after:
            return min(float(retry_after.group(1)), self.backoff_max)
        delay = self.backoff_base * (2 ** (attempt - 1))
        return min(delay, self.backoff_max) * (0.75 + 0.5 * random.random())

    def _post(self, messages: list[dict]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        with self._count_lock:
            self.requests_made += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in (408, 409, 425, 429) or exc.code >= 500:
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                hint = f"; retry after {retry_after}s" if retry_after and retry_after.isdigit() else ""
                raise _Retryable(f"HTTP {exc.code} from {self.url}{detail}{hint}") from None
            if exc.code in (401, 403):
                raise SeraInputError(f"judge {self.spec}: HTTP {exc.code}, the endpoint refused the API key "
                                     f"(set {API_KEY_VARIABLES[0]} or {API_KEY_VARIABLES[1]}){detail}") from None
            raise SeraInputError(f"judge {self.spec}: HTTP {exc.code} from {self.url}{detail} "
                                 "(check the model name and base URL)") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"cannot reach {self.url}: {reason}") from None
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            raise JudgeReplyError(f"not a chat-completions response ({type(exc).__name__})") from None
        return content


class _Stopped(Exception):
    """Another judgment failed for good: this one gives up without a new attempt."""


class _Retryable(Exception):
    """A transient failure: connection, timeout, HTTP 408/429/5xx."""


def combine(first: str, second: str) -> int:
    """Outcome for (a, b) from the verdict with a first and the verdict with b first."""
    a_first = {"A": 1, "B": -1, "tie": 0}[first]
    b_first = {"A": -1, "B": 1, "tie": 0}[second]
    return a_first if a_first == b_first else 0


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace").strip()
    except Exception:
        return ""
    return f": {text[:200]}" if text else ""


# ------------------------------------------------------------------------------------------------ helpers

def _check_lengths(*columns: Sequence) -> None:
    if len({len(c) for c in columns}) > 1:
        raise ValueError(f"prompts and outputs differ in length: {[len(c) for c in columns]}")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


__all__ = ["Judge", "PointwiseJudge", "GoldJudge", "RewardModelJudge", "LLMJudge", "JudgmentCache",
           "build_judge", "parse_verdict", "combine", "API_KEY_VARIABLES"]

"""Judges on tiny inputs: gold callables, a tiny random reward model, and the llm judge against a real
chat-completions HTTP server on 127.0.0.1 (errors, malformed replies, timeouts, the cache)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sera.errors import SeraInputError, SeraRuntimeError
from sera.eval.judges import LLMJudge, build_judge, combine, parse_verdict

# ------------------------------------------------------------------------------------------------ gold


def test_gold_judge_from_module_and_file(tmp_path, monkeypatch):
    (tmp_path / "gold_mod.py").write_text("def score(prompt, output):\n    return output.count('good')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    judge = build_judge("gold:gold_mod:score")
    assert judge.pointwise and judge.spec == "gold:gold_mod:score"
    assert judge.score(["p", "p"], ["good good", "bad"]) == [2.0, 0.0]
    assert judge.compare(["p"] * 3, ["good", "bad", "good"], ["bad", "good", "good"]) == [1, -1, 0]

    by_file = build_judge(f"gold:{tmp_path / 'gold_mod.py'}:score")
    assert by_file.compare(["p"], ["good"], ["meh"]) == [1]


def test_gold_judge_errors(tmp_path, monkeypatch):
    (tmp_path / "gold_bad.py").write_text("def words(prompt, output):\n    return 'many'\n"
                                          "def boom(prompt, output):\n    raise KeyError('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SeraInputError, match="no function 'nope'"):
        build_judge("gold:gold_bad:nope")
    with pytest.raises(SeraInputError, match="cannot import 'no_such_module_xyz'"):
        build_judge("gold:no_such_module_xyz:f")
    with pytest.raises(SeraInputError, match="expected gold:<module>:<function>"):
        build_judge("gold:onlymodule")
    with pytest.raises(SeraInputError, match="must return a number"):
        build_judge("gold:gold_bad:words").score(["p"], ["o"])
    with pytest.raises(SeraRuntimeError, match="raised KeyError"):
        build_judge("gold:gold_bad:boom").score(["p"], ["o"])
    with pytest.raises(SeraInputError, match="unknown judge kind 'gpt'"):
        build_judge("gpt:4")


# -------------------------------------------------------------------------------------------------- rm

ALPHABET = "abcdefghijklmnopqrstuvwxyz ?.,!"


def _save_reward_model(path, num_labels=1):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from sera.models import build_char_tokenizer

    tokenizer = build_char_tokenizer(ALPHABET)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, num_labels=num_labels)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def test_rm_judge_scores_match_unbatched_model(tmp_path):
    import torch

    model, tokenizer = _save_reward_model(tmp_path / "rm")
    judge = build_judge(f"rm:{tmp_path / 'rm'}", batch_size=2, dtype="float32", concurrency=3)  # foreign: ignored
    prompts = ["what is up?", "say hi", "count to three"]
    outputs = ["not much.", "hi!", "one, two, three."]
    scores = judge.score(prompts, outputs)
    model.eval()
    for prompt, output, score in zip(prompts, outputs, scores):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": output}],
                                            tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)  # right padding in batches changes nothing

    other = ["a", "hello there, friend", "three"]
    forward = judge.compare(prompts, outputs, other)
    assert forward == [-x for x in judge.compare(prompts, other, outputs)]
    other_scores = judge.score(prompts, other)
    assert forward == [(a > b) - (a < b) for a, b in zip(scores, other_scores)]
    assert judge.compare(prompts, outputs, outputs) == [0, 0, 0]


def test_rm_judge_rejects_bad_models(tmp_path):
    _save_reward_model(tmp_path / "rm2", num_labels=2)
    with pytest.raises(SeraInputError, match="one output, this one has 2 labels"):
        build_judge(f"rm:{tmp_path / 'rm2'}")
    with pytest.raises(SeraInputError, match="cannot load a sequence-classification model"):
        build_judge(f"rm:{tmp_path / 'absent'}")


# ------------------------------------------------------------------------------------------------- llm

def _responses(content: str) -> tuple[str, str]:
    first = content.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)[0]
    second = content.split("[Response B]\n", 1)[1].split("\n\nWhich response is better?", 1)[0]
    return first, second


class FakeJudgeServer:
    """An OpenAI-style chat-completions server on 127.0.0.1 that prefers the longer response.

    Switches: `fail_first` calls answer HTTP 500, then `malformed_first` calls answer a body that is
    not a usable reply; calls after `fail_after` (when set) all answer 500; `slow_first` calls sleep
    `slow_seconds` before answering; `always` answers that verdict whatever the order (position bias);
    `status` answers every call with that HTTP status.
    """

    def __init__(self, *, fail_first=0, malformed_first=0, fail_after=None, slow_first=0, slow_seconds=0.0,
                 always=None, status=None):
        self.fail_first, self.malformed_first, self.fail_after = fail_first, malformed_first, fail_after
        self.slow_first, self.slow_seconds, self.always, self.status = slow_first, slow_seconds, always, status
        self.calls = 0
        self.authorizations: list[str | None] = []
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.calls += 1
                    call = server.calls
                    server.authorizations.append(self.headers.get("Authorization"))
                    server.bodies.append(body)
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if server.status is not None:
                    return self._send(server.status, b'{"error": "nope"}')
                if call <= server.slow_first:
                    time.sleep(server.slow_seconds)
                if call <= server.fail_first or (server.fail_after is not None and call > server.fail_after):
                    return self._send(500, b'{"error": "internal error"}')
                if call <= server.fail_first + server.malformed_first:
                    bad = [b"<html>oops</html>", json.dumps({"choices": []}).encode(),
                           json.dumps(_reply("I think both have merits.")).encode()]
                    return self._send(200, bad[call % len(bad)])
                first, second = _responses(body["messages"][-1]["content"])
                if server.always:
                    verdict = server.always
                else:
                    verdict = "A" if len(first) > len(second) else "B" if len(second) > len(first) else "tie"
                self._send(200, json.dumps(_reply(f"[[{verdict}]]")).encode())

            def _send(self, code, payload):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "judge",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


@pytest.fixture
def serve():
    servers = []

    def start(**switches):
        servers.append(FakeJudgeServer(**switches))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


PROMPTS = ["q1", "q2", "q3"]
A = ["a long answer", "x", "same"]
B = ["short", "a longer one", "emas"]


def _judge(server, cache, **options):
    options = {"concurrency": 1, "max_retries": 3, "backoff_base": 0.001, "timeout": 5.0, **options}
    return build_judge(f"llm:judge-model@{server.base_url}", cache=cache, **options)


def test_llm_judge_both_orders_and_api_key(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("SERA_JUDGE_API_KEY", "sk-test-secret")
    server = serve()
    judge = _judge(server, tmp_path / "cache.jsonl", concurrency=3)
    assert judge.compare(PROMPTS, A, B) == [1, -1, 0]
    assert server.calls == 6  # every pair in both orders
    assert set(server.authorizations) == {"Bearer sk-test-secret"}
    assert {b["model"] for b in server.bodies} == {"judge-model"}
    cache_text = (tmp_path / "cache.jsonl").read_text()
    assert len(cache_text.splitlines()) == 6 and "sk-test-secret" not in cache_text
    assert "sk-test-secret" not in repr(judge)


def test_llm_judge_without_key_sends_no_authorization(serve, tmp_path, monkeypatch):
    monkeypatch.delenv("SERA_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = serve()
    assert _judge(server, None).compare(["q"], ["long one"], ["s"]) == [1]
    assert server.authorizations == [None, None]


def test_position_bias_cancels_to_ties(serve, tmp_path):
    server = serve(always="A")
    assert _judge(server, tmp_path / "c.jsonl").compare(PROMPTS, A, B) == [0, 0, 0]


def test_cache_means_a_rerun_never_pays_twice(serve, tmp_path):
    server = serve()
    cache = tmp_path / "c.jsonl"
    first = _judge(server, cache).compare(PROMPTS, A, B)
    calls = server.calls
    again = _judge(server, cache)
    assert again.compare(PROMPTS, A, B) == first
    assert server.calls == calls and again.requests_made == 0
    # a new pair pays only for itself; a torn last line (crash while writing) is ignored
    with open(cache, "a") as handle:
        handle.write('{"key": "abc", "verd')
    third = _judge(server, cache)
    assert third.compare(PROMPTS + ["q4"], A + ["longer still"], B + ["s"]) == first + [1]
    assert third.requests_made == 2


def test_http_500_is_retried(serve, tmp_path):
    server = serve(fail_first=2)
    judge = _judge(server, tmp_path / "c.jsonl")
    assert judge.compare(PROMPTS, A, B) == [1, -1, 0]
    assert server.calls == 8


def test_malformed_replies_are_retried(serve, tmp_path):
    server = serve(malformed_first=3)  # not JSON, no choices, no verdict
    judge = _judge(server, tmp_path / "c.jsonl")
    assert judge.compare(PROMPTS, A, B) == [1, -1, 0]
    assert server.calls == 9


def test_timeout_is_retried(serve, tmp_path):
    server = serve(slow_first=1, slow_seconds=1.0)
    judge = _judge(server, tmp_path / "c.jsonl", timeout=0.3)
    assert judge.compare(["q"], ["long one"], ["s"]) == [1]
    assert server.calls == 3


def test_persistent_failure_raises_and_keeps_finished_judgments(serve, tmp_path):
    cache = tmp_path / "c.jsonl"
    broken = serve(fail_after=3)
    judge = _judge(broken, cache, max_retries=2)
    with pytest.raises(SeraRuntimeError, match=r"gave up after 3 attempts \(HTTP 500.*3 finished judgments"):
        judge.compare(PROMPTS, A, B)
    assert broken.calls == 3 + 3  # three judgments, then one job tried 1 + 2 times
    assert len(cache.read_text().splitlines()) == 3

    healthy = serve()
    rerun = _judge(healthy, cache)
    assert rerun.compare(PROMPTS, A, B) == [1, -1, 0]
    assert healthy.calls == 3  # only the judgments that were missing


def test_persistent_malformed_reply_gives_clear_error(serve, tmp_path):
    server = serve(malformed_first=100)
    with pytest.raises(SeraRuntimeError, match="gave up after 2 attempts \\(malformed reply"):
        _judge(server, tmp_path / "c.jsonl", max_retries=1).compare(["q"], ["a"], ["b"])


def test_auth_and_not_found_errors_are_not_retried(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("SERA_JUDGE_API_KEY", "sk-test-secret")
    server = serve(status=401)
    with pytest.raises(SeraInputError, match="HTTP 401, the endpoint refused the API key") as info:
        _judge(server, None).compare(["q"], ["a"], ["b"])
    assert "sk-test-secret" not in str(info.value)
    assert server.calls <= 2  # the two orders, each tried once
    missing = build_judge(f"llm:m@{server.base_url.removesuffix('/v1')}/v2", concurrency=1)
    with pytest.raises(SeraInputError, match="HTTP 404"):
        missing.compare(["q"], ["a"], ["b"])


def test_unreachable_endpoint_fails_after_retries(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = build_judge(f"llm:m@http://127.0.0.1:{port}/v1", concurrency=1, max_retries=1, backoff_base=0.001)
    with pytest.raises(SeraRuntimeError, match="cannot reach"):
        judge.compare(["q"], ["a"], ["b"])


def test_llm_spec_errors():
    with pytest.raises(SeraInputError, match="llm:<model>@<base_url>"):
        build_judge("llm:gpt-4o")
    with pytest.raises(SeraInputError, match="llm:<model>@<base_url>"):
        build_judge("llm:gpt-4o@localhost:8000")
    judge = build_judge("llm:org/model@v2@http://127.0.0.1:1/v1/")
    assert isinstance(judge, LLMJudge) and judge.model == "org/model@v2"
    assert judge.url == "http://127.0.0.1:1/v1/chat/completions"


@pytest.mark.parametrize("text, verdict", [
    ("[[A]]", "A"), ("[[b]]", "B"), ("[[Tie]]", "tie"), ("After thinking, my verdict: [[B]].", "B"),
    ("A", "A"), ("b.", "B"), ("Response A", "A"), ("**B**", "B"), ("tie", "tie"), (" Output (a) ", "A"),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize("text", ["", "both are fine", "[[A]] or maybe [[B]]", "AB", None])
def test_parse_verdict_rejects_malformed(text):
    from sera.eval.judges import JudgeReplyError

    with pytest.raises(JudgeReplyError):
        parse_verdict(text)


def test_combine_orders():
    assert combine("A", "B") == 1 and combine("B", "A") == -1
    assert combine("A", "A") == 0 and combine("tie", "B") == 0 and combine("tie", "tie") == 0

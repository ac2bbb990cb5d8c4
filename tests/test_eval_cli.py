"""`sera generate` and `sera eval` end to end, through the CLI's entry point (exit codes, files, table)."""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import pytest

from sera.cli import main

SHARED_EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "eval"


def run_cli(*args) -> int:
    old = sys.argv
    sys.argv = ["sera", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code or 0
    finally:
        sys.argv = old


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapped error lines
    monkeypatch.setenv("SERA_NO_PROGRESS", "1")


def _stderr(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random tiny Llama with a printable-ASCII char tokenizer, long enough for Evol-Instruct prompts."""
    from sera.models import build_char_tokenizer, build_tiny_llama, save_model

    tokenizer = build_char_tokenizer(string.printable)
    path = tmp_path_factory.mktemp("eval-models") / "tiny-chat"
    save_model(build_tiny_llama(tokenizer, hidden_size=16, layers=1, max_positions=4096), tokenizer, path)
    return path


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -------------------------------------------------------------------------------------------- generate

def test_generate_jsonl_with_samples(model_dir, tmp_path, capsys):
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Hi there?"},
                                                  {"id": "b", "prompt": "Name a colour."}])
    out = tmp_path / "out" / "gen.jsonl"
    code = run_cli("generate", "--model", model_dir, "--prompts", prompts, "--output", out, "--num-samples", "2",
                   "--max-new-tokens", "4", "--batch-size", "4", "--temperature", "1.0", "--top-p", "0.9")
    assert code == 0, _stderr(capsys)
    rows = _read_jsonl(out)
    assert [(r["id"], r["sample"]) for r in rows] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert {r["generator"] for r in rows} == {"tiny-chat"}
    assert rows[0]["prompt"] == "Hi there?" and all(isinstance(r["output"], str) for r in rows)
    assert "wrote 4 responses to 2 prompts" in _stderr(capsys)


def test_generate_alpaca_eval_format(model_dir, tmp_path, capsys):
    prompts = tmp_path / "alpaca.json"
    prompts.write_text(json.dumps([{"instruction": "Say hi.", "dataset": "helpful_base"},
                                   {"instruction": "Say bye."}]))
    out = tmp_path / "outputs.json"
    code = run_cli("generate", "--model", model_dir, "--prompts", prompts, "--output", out, "--format",
                   "alpaca_eval", "--generator", "my-model", "--max-new-tokens", "3", "--temperature", "0")
    assert code == 0, _stderr(capsys)
    data = json.loads(out.read_text())
    assert data[0] == {"instruction": "Say hi.", "output": data[0]["output"], "generator": "my-model",
                       "dataset": "helpful_base"}
    assert set(data[1]) == {"instruction", "output", "generator"}


def test_generate_is_greedy_and_reproducible_at_temperature_zero(model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one?\ntwo?\n")
    outs = []
    for name in ("x.jsonl", "y.jsonl"):
        assert run_cli("generate", "--model", model_dir, "--prompts", prompts, "--output", tmp_path / name,
                       "--max-new-tokens", "5", "--temperature", "0") == 0
        outs.append([r["output"] for r in _read_jsonl(tmp_path / name)])
    assert outs[0] == outs[1]


def test_prompt_ids_use_the_chat_template_when_there_is_one():
    from sera.eval.generate import prompt_token_ids
    from sera.eval.prompts import PromptRecord
    from sera.models import build_char_tokenizer

    record = PromptRecord(1, "ab", [{"role": "user", "content": "ab"}])
    chat = build_char_tokenizer("ab")
    assert chat.decode(prompt_token_ids(chat, record)) == "<|user|>ab<|end|><|assistant|>"
    plain = build_char_tokenizer("ab", chat_template=None)
    assert plain.decode(prompt_token_ids(plain, record)) == "ab"


def test_generate_input_errors(model_dir, tmp_path, capsys):
    bad = _write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "ok"}', '{"prompt": "unterminated'])
    assert run_cli("generate", "--model", model_dir, "--prompts", bad, "--output", tmp_path / "o.jsonl") == 2
    assert "bad.jsonl:2: not valid JSON" in _stderr(capsys)
    good = _write_jsonl(tmp_path / "good.jsonl", ['"hello"'])
    assert run_cli("generate", "--model", model_dir, "--prompts", good, "--output", tmp_path / "o.jsonl",
                   "--backend", "vllm") == 2
    assert "backend vllm needs the vllm extra and a GPU" in _stderr(capsys)
    assert run_cli("generate", "--model", tmp_path / "no-model", "--prompts", good,
                   "--output", tmp_path / "o.jsonl") == 2
    assert "cannot load tokenizer" in _stderr(capsys)
    assert run_cli("generate", "--model", model_dir, "--prompts", good, "--output", tmp_path / "o.json",
                   "--format", "alpaca_eval", "--num-samples", "2") == 2
    assert "one response per prompt" in _stderr(capsys)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.json").exists()


@pytest.mark.skipif(not SHARED_EVAL.is_dir(), reason=f"shared eval prompts not found at {SHARED_EVAL}")
@pytest.mark.parametrize("name, count, id_field", [("vicuna_bench_questions.jsonl", 80, "question_id"),
                                                   ("evol_instruct_testset.jsonl", 218, "idx")])
def test_shared_benchmark_prompts_load_through_generate(model_dir, tmp_path, capsys, name, count, id_field):
    source = SHARED_EVAL / name
    out = tmp_path / "gen.jsonl"
    code = run_cli("generate", "--model", model_dir, "--prompts", source, "--output", out,
                   "--max-new-tokens", "1", "--batch-size", "64", "--temperature", "0")
    assert code == 0, _stderr(capsys)
    rows = _read_jsonl(out)
    expected = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    assert len(rows) == len(expected) == count
    assert [r["id"] for r in rows] == [e[id_field] for e in expected]
    first = expected[0]
    assert rows[0]["prompt"] == (first["turns"][0] if "turns" in first else first["Instruction"])


# ------------------------------------------------------------------------------------------------ eval

def _outputs(path: Path, outputs: dict, generator: str, prompts: dict | None = None) -> Path:
    return _write_jsonl(path, [{"id": k, "prompt": (prompts or {}).get(k, f"prompt {k}"), "output": v,
                                "generator": generator} for k, v in outputs.items()])


@pytest.fixture
def gold_module(tmp_path, monkeypatch):
    (tmp_path / "gold_len.py").write_text("def score(prompt, output):\n    return len(output)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "gold:gold_len:score"


def test_eval_with_gold_judge_writes_report_and_table(tmp_path, capsys, gold_module):
    cand = _outputs(tmp_path / "cand.jsonl", {1: "long answer", 2: "tiny", 3: "same", 4: "extra"}, "sera")
    base = _outputs(tmp_path / "base.jsonl", {1: "short", 2: "longer one", 3: "same", 5: "x"}, "dpo")
    report_path = tmp_path / "report.json"
    code = run_cli("eval", "--candidate", cand, "--baseline", base, "--judge", gold_module,
                   "--output", report_path)
    assert code == 0, _stderr(capsys)
    report = json.loads(report_path.read_text())
    for key in ("n", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high", "lc_win_rate",
                "mean_len_candidate", "mean_len_baseline", "judge"):
        assert key in report
    assert (report["n"], report["wins"], report["ties"], report["losses"]) == (3, 1, 1, 1)
    assert report["win_rate"] == pytest.approx(0.5)
    assert report["judge"] == gold_module
    assert report["unmatched_candidate"] == 1 and report["unmatched_baseline"] == 1
    assert report["mean_len_candidate"] == pytest.approx((11 + 4 + 4) / 3)
    assert (report["candidate_generator"], report["baseline_generator"]) == ("sera", "dpo")
    err = _stderr(capsys)
    assert "sera vs dpo" in err and "win rate (ties half)" in err and "50.0%" in err
    assert "unmatched ids" in err


def test_eval_pairs_samples_and_alpaca_json(tmp_path, capsys, gold_module):
    cand = _write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "sample": s, "prompt": "p", "output": "o" * (s + 2)}
                                              for s in range(2)])
    base = _write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "sample": s, "prompt": "p", "output": "oo"}
                                              for s in range(2)])
    assert run_cli("eval", "--candidate", cand, "--baseline", base, "--judge", gold_module,
                   "--output", tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["n"], report["wins"], report["ties"]) == (2, 1, 1)

    alpaca_c = tmp_path / "c.json"
    alpaca_c.write_text(json.dumps([{"instruction": "p1", "output": "long one", "generator": "x"},
                                    {"instruction": "p2", "output": "a", "generator": "x"}]))
    alpaca_b = tmp_path / "b.json"
    alpaca_b.write_text(json.dumps([{"instruction": "p2", "output": "bb", "generator": "y"},
                                    {"instruction": "p1", "output": "short", "generator": "y"}]))
    assert run_cli("eval", "--candidate", alpaca_c, "--baseline", alpaca_b, "--judge", gold_module,
                   "--output", tmp_path / "r2.json") == 0
    report = json.loads((tmp_path / "r2.json").read_text())
    assert (report["n"], report["wins"], report["losses"]) == (2, 1, 1)


@pytest.mark.parametrize("cand_lines, message", [
    (['{"id": 1, "prompt": "p", "output": "a"}', '{"id": 2, "prompt": "p"}'], "cand.jsonl:2: missing field 'output'"),
    (['{"id": 1, "prompt": "p", "output": "a"}', "", "{oops"], "cand.jsonl:3: not valid JSON"),
    (['{"prompt": "p", "output": "a"}'], "cand.jsonl:1: missing field 'id'"),
    (['{"id": 1, "prompt": "p", "output": 3}'], "cand.jsonl:1: field 'output' must be a string"),
    (['{"id": 1, "prompt": "p", "output": "a"}', '{"id": 1, "prompt": "p", "output": "b"}'],
     "cand.jsonl:2: duplicate id 1"),
    (['{"id": 9, "prompt": "p", "output": "a"}'], "share no id"),
    (['{"id": 1, "prompt": "another prompt", "output": "a"}'], "id 1: the prompts differ between"),
])
def test_eval_input_errors_name_file_line_and_field(tmp_path, capsys, gold_module, cand_lines, message):
    cand = _write_jsonl(tmp_path / "cand.jsonl", cand_lines)
    base = _write_jsonl(tmp_path / "base.jsonl", ['{"id": 1, "prompt": "p", "output": "b"}',
                                                  '{"id": 2, "prompt": "p", "output": "b"}'])
    code = run_cli("eval", "--candidate", cand, "--baseline", base, "--judge", gold_module,
                   "--output", tmp_path / "r.json")
    assert code == 2
    assert message in _stderr(capsys)
    assert not (tmp_path / "r.json").exists()


def test_eval_missing_file_and_bad_judge(tmp_path, capsys, gold_module):
    base = _outputs(tmp_path / "base.jsonl", {1: "b"}, "x")
    assert run_cli("eval", "--candidate", tmp_path / "nope.jsonl", "--baseline", base, "--judge", gold_module,
                   "--output", tmp_path / "r.json") == 2
    assert "nope.jsonl: no such file" in _stderr(capsys)
    assert run_cli("eval", "--candidate", base, "--baseline", base, "--judge", "oracle",
                   "--output", tmp_path / "r.json") == 2
    assert "expected gold:<module>:<function>" in _stderr(capsys)


def test_eval_with_rm_judge(tmp_path, capsys):
    from tests.test_eval_judges import _save_reward_model

    _save_reward_model(tmp_path / "rm")
    cand = _outputs(tmp_path / "c.jsonl", {1: "yes, sure.", 2: "no"}, "c")
    base = _outputs(tmp_path / "b.jsonl", {1: "maybe", 2: "no"}, "b")
    code = run_cli("eval", "--candidate", cand, "--baseline", base, "--judge", f"rm:{tmp_path / 'rm'}",
                   "--output", tmp_path / "r.json", "--batch-size", "1")
    assert code == 0, _stderr(capsys)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 2 and report["ties"] >= 1  # identical outputs tie
    assert "mean_score_candidate" in report and report["judge"] == f"rm:{tmp_path / 'rm'}"


def test_eval_with_llm_judge_caches_next_to_the_report(tmp_path, capsys, monkeypatch):
    from tests.test_eval_judges import FakeJudgeServer

    monkeypatch.setenv("SERA_JUDGE_API_KEY", "sk-cli-secret")
    server = FakeJudgeServer(fail_first=1)
    try:
        cand = _outputs(tmp_path / "c.jsonl", {1: "a long answer", 2: "x"}, "c")
        base = _outputs(tmp_path / "b.jsonl", {1: "short", 2: "longer"}, "b")
        args = ["eval", "--candidate", cand, "--baseline", base, "--judge", f"llm:judge@{server.base_url}",
                "--output", tmp_path / "run" / "report.json", "--backoff-base", "0.001", "--concurrency", "2"]
        assert run_cli(*args) == 0, _stderr(capsys)
        report = json.loads((tmp_path / "run" / "report.json").read_text())
        assert (report["wins"], report["losses"]) == (1, 1) and server.calls == 5
        cache = tmp_path / "run" / "judge_cache.jsonl"
        assert len(cache.read_text().splitlines()) == 4
        assert run_cli(*args) == 0 and server.calls == 5  # the rerun is served from the cache
        for path in (cache, tmp_path / "run" / "report.json"):
            assert "sk-cli-secret" not in path.read_text()
        assert "sk-cli-secret" not in capsys.readouterr().err
    finally:
        server.close()

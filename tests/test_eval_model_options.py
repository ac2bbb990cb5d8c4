"""`sera eval`'s model options (--dtype, --gguf-file, --trust-remote-code): they load an rm: judge's model, as
the same options load the model of train, sft, generate and score; any other judge refuses them (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch

from sera.errors import SeraInputError
from sera.eval.judges import build_judge
from tests.test_eval_cli import _outputs, _stderr, run_cli
from tests.test_eval_judges import _save_reward_model


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("SERA_NO_PROGRESS", "1")


@pytest.fixture
def loads(monkeypatch) -> list[dict]:
    """What each reward-model load was asked for (the load itself still happens)."""
    from transformers import AutoModelForSequenceClassification

    seen: list[dict] = []
    original = AutoModelForSequenceClassification.from_pretrained

    def spy(*args, **kwargs):
        seen.append({"args": args, **kwargs})
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", spy)
    return seen


@pytest.mark.parametrize("dtype, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_eval_loads_an_rm_judge_with_dtype(tmp_path, capsys, loads, dtype, expected):
    _save_reward_model(tmp_path / "rm")
    cand = _outputs(tmp_path / "c.jsonl", {1: "yes, sure.", 2: "no"}, "c")
    base = _outputs(tmp_path / "b.jsonl", {1: "maybe", 2: "no"}, "b")
    code = run_cli("eval", "--candidate", cand, "--baseline", base, "--judge", f"rm:{tmp_path / 'rm'}",
                   "--output", tmp_path / "r.json", "--dtype", dtype)
    assert code == 0, _stderr(capsys)
    assert loads[-1]["dtype"] == expected and loads[-1]["trust_remote_code"] is False
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 2 and "mean_score_candidate" in report


def test_an_rm_judge_takes_a_gguf_file(tmp_path, monkeypatch):
    """--gguf-file reaches the judge's loading, with the model folder split off a .gguf path as every other
    command does (recorded at the tokenizer, the first thing loaded; the fake file loads no further)."""
    from transformers import AutoTokenizer

    tokenizer_loads = []

    def record(*args, **kwargs):
        tokenizer_loads.append((args, kwargs))
        raise OSError("not a real GGUF")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", record)
    file = tmp_path / "rm.Q8_0.gguf"
    file.write_bytes(b"GGUF")
    for spec, options in ((f"rm:{tmp_path}", {"gguf_file": file.name}), (f"rm:{file}", {})):
        with pytest.raises(SeraInputError, match="cannot load a sequence-classification model"):
            build_judge(spec, dtype="float32", **options)
        assert tokenizer_loads[-1] == ((str(tmp_path),), {"trust_remote_code": False, "gguf_file": file.name})


@pytest.mark.parametrize("option", [["--dtype", "float32"], ["--gguf-file", "m.gguf"], ["--trust-remote-code"]])
def test_other_judges_refuse_the_model_options(tmp_path, capsys, option):
    cand = _outputs(tmp_path / "c.jsonl", {1: "yes"}, "c")
    code = run_cli("eval", "--candidate", cand, "--baseline", cand, "--judge", "llm:m@http://127.0.0.1:9/v1",
                   "--output", tmp_path / "r.json", *option)
    assert code == 2
    message = _stderr(capsys)
    assert f"{option[0]}: model-loading options apply to an rm: judge's model only" in message, message
    assert "Traceback" not in message and not (tmp_path / "r.json").exists()
    with pytest.raises(SeraInputError, match="a gold judge loads no model"):
        build_judge("gold:sera.worlds.sorting:gold_reward", dtype="bfloat16")

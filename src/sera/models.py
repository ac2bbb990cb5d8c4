"""Loading and saving causal LMs and tokenizers, plus the tiny in-code models the tests and demo use.

Everything that touches `from_pretrained` goes through here, so that errors become one clear
message (exit code 2) and saving is atomic (a directory appears complete or not at all).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sera.errors import SeraInputError

# Loading and saving a checkpoint is a matter of seconds; per-shard bars only bury SeRA's own output.
hf_logging.disable_progress_bar()

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""A minimal chat template for the in-code tokenizers (role tag, content, end-of-turn = EOS)."""


def resolve_dtype(name: str = "auto") -> torch.dtype:
    """`auto`: bf16 on a GPU that supports it, fp32 otherwise (CPU training in bf16 is slow and lossy)."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise SeraInputError(f"--dtype: unknown dtype {name!r} (choose auto, float32, bfloat16, float16)")
    return table[name]


def load_tokenizer(path: str, *, trust_remote_code: bool = False, gguf_file: str | None = None
                   ) -> PreTrainedTokenizerBase:
    kwargs = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        raise SeraInputError(f"cannot load tokenizer from {path!r}: {_first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, *, dtype: str = "auto", trust_remote_code: bool = False,
               gguf_file: str | None = None) -> PreTrainedModel:
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise SeraInputError(f"cannot load model from {path!r}: {_first_line(exc)}") from exc
    if getattr(model.config, "quantization_config", None) is not None and gguf_file:
        # GGUF weights are de-quantised on load; drop the marker so the model can be saved again.
        del model.config.quantization_config
        model.hf_quantizer = None
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Save weights (safetensors) and tokenizer so that `directory` appears complete or not at all."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_char_tokenizer(alphabet: str, *, chat_template: str | None = CHAT_TEMPLATE
                         ) -> PreTrainedTokenizerBase:
    """A character-level tokenizer built in code (nothing downloaded). EOS is `<|end|>`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|end|>", "<|unk|>", "<|user|>", "<|assistant|>", "<|system|>"]
    chars = sorted(set(alphabet))
    vocab = {token: index for index, token in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|pad|>", eos_token="<|end|>", unk_token="<|unk|>",
        additional_special_tokens=specials[3:],
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llama(tokenizer: PreTrainedTokenizerBase, *, hidden_size: int = 32, layers: int = 2,
                     heads: int = 2, max_positions: int = 256, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Llama-style causal LM sized for CPU tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

"""Loading and saving causal LMs and tokenizers, plus the tiny in-code models the tests and demo use.

Everything that touches `from_pretrained` goes through here, so that errors become one clear
message (exit code 2) and saving is atomic (a directory appears complete or not at all).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sera import distributed
from sera.errors import SeraInputError, SeraRuntimeError

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


def split_gguf(path: str, gguf_file: str | None) -> tuple[str, str | None]:
    """`--model folder --gguf-file name.gguf`, or `--model folder/name.gguf` alone: (folder, file name)."""
    if gguf_file is None and str(path).lower().endswith(".gguf") and Path(path).is_file():
        return str(Path(path).parent), Path(path).name
    if gguf_file and Path(gguf_file).is_absolute():
        if not Path(gguf_file).is_file():
            raise SeraInputError(f"--gguf-file {gguf_file}: no such file")
        return str(Path(gguf_file).parent), Path(gguf_file).name
    return path, gguf_file


def load_tokenizer(path: str, *, trust_remote_code: bool = False, gguf_file: str | None = None
                   ) -> PreTrainedTokenizerBase:
    path, gguf_file = split_gguf(path, gguf_file)
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
    """A causal LM from a folder, a hub id or a GGUF file; a LoRA adapter folder (saved by a run) is loaded
    onto its base and merged, so iterates saved as adapters load like any model."""
    if gguf_file is None and (Path(path) / "adapter_config.json").is_file():
        return _load_adapter_merged(Path(path), dtype=dtype, trust_remote_code=trust_remote_code)
    path, gguf_file = split_gguf(path, gguf_file)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        with distributed.whole_model_loading():  # never partitioned by a ZeRO-3 trainer's config
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise SeraInputError(f"cannot load model from {path!r}: {_first_line(exc)}") from exc
    if gguf_file:
        _drop_gguf_quantization_marker(model)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model


def _drop_gguf_quantization_marker(model: PreTrainedModel) -> None:
    """GGUF weights are de-quantised on load, yet transformers still marks the model as quantized, which
    blocks saving ("not serializable") and training ("purely quantized models"). Remove every marker."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_is_quantized", False):
            config._is_quantized = False


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, *,
               merge: bool = False) -> None:
    """Save weights (safetensors) and tokenizer so that `directory` appears complete or not at all.

    A LoRA policy (a PeftModel, or an :class:`AdapterView` of one) saves its adapter only
    (`adapter_model.safetensors`, `adapter_config.json`, and `sera_base.json` naming the base), unless
    `merge`: then the base with the adapter merged in, as a plain model. The policy is not modified."""
    if not distributed.is_main():  # one writer; callers `distributed.barrier()` before reading it back
        return
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    except OSError as exc:
        raise SeraRuntimeError(f"cannot write {directory}: {exc.strerror or exc}") from exc
    try:
        peft_model, adapter = _peft_parts(model)
        if peft_model is None:
            model.save_pretrained(tmp, safe_serialization=True)
        elif merge or adapter is None:
            _save_merged(peft_model, adapter, tmp)
        else:
            _save_adapter(peft_model, adapter, tmp)
        tokenizer.save_pretrained(tmp)
        if directory.exists():
            _keep_lock(directory, tmp)
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SeraRuntimeError(f"cannot write {directory}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _keep_lock(directory: Path, replacement: Path) -> None:
    """A held run lock (`sera sft` saves into the directory it locked) moves into the replacement: the same
    file, so the lock stays held across the swap (sera.run_lock)."""
    from sera.run_lock import LOCK_NAME

    if (directory / LOCK_NAME).exists():
        os.replace(directory / LOCK_NAME, replacement / LOCK_NAME)


# -- LoRA ------------------------------------------------------------------------------------------

def lora_config(r: int, alpha: float | None = None, dropout: float = 0.0,
                target_modules: str | list[str] | None = None):
    """A PEFT LoraConfig for a causal LM (`all-linear` by default, which never adapts the LM head)."""
    from peft import LoraConfig

    if isinstance(target_modules, str) and target_modules != "all-linear":
        target_modules = [name.strip() for name in target_modules.split(",") if name.strip()]
    return LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, lora_dropout=dropout,
                      target_modules=target_modules or "all-linear", bias="none", task_type="CAUSAL_LM")


def add_lora(model: PreTrainedModel, config, base: dict[str, Any] | None = None):
    """Wrap `model` in a fresh LoRA adapter named `default` (it starts equal to the base: B = 0).

    The fused LM head that scoring uses is added before wrapping (as TRL requires); `base` (the model
    path and GGUF file) is written next to each saved adapter so it can be loaded again."""
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    if not getattr(model, "_sera_fused_head", False):
        add_fused_lm_head(model)
        model._sera_fused_head = True
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise SeraInputError(f"--lora-target-modules: {_first_line(exc)}") from exc
    head = model.get_output_embeddings()
    if any(head is module.get_base_layer() for module in _lora_layers(peft_model)):
        raise SeraInputError("--lora-target-modules: the LM head cannot be adapted (TRL scores with its weight)")
    peft_model._sera_base = dict(base or {})
    return peft_model


def load_lora_policy(model: PreTrainedModel, directory: Path, base: dict[str, Any] | None = None):
    """The base `model` with the adapter saved in `directory` as its trainable `default` adapter (to go on
    training a LoRA policy, e.g. when a run resumes after iteration t)."""
    from peft import PeftModel
    from trl.trainer.utils import add_fused_lm_head

    if not getattr(model, "_sera_fused_head", False):
        add_fused_lm_head(model)
        model._sera_fused_head = True
    try:
        peft_model = PeftModel.from_pretrained(model, str(directory), adapter_name="default", is_trainable=True)
    except Exception as exc:
        raise SeraInputError(f"cannot load adapter {str(directory)!r}: {_first_line(exc)}") from exc
    peft_model._sera_base = dict(base or {})
    return peft_model


def is_lora(model: Any) -> bool:
    return _peft_parts(model)[0] is not None


class AdapterView:
    """The in-memory LoRA policy seen through one adapter, or through none (the base = the reference).

    It is what :class:`sera.scoring.LogProbBank` scores when a run uses LoRA: index 0 is the base with
    the adapter disabled, an older iterate t is the base with that iteration's saved adapter. Both
    share the policy's weights, so no second model is held in memory. Calls run inside a context that
    switches the adapter and restores the policy's own (`default`, trainable) afterwards."""

    def __init__(self, peft_model, adapter: str | None) -> None:
        self.peft_model = peft_model
        self.adapter = adapter
        self._sera_fused_head = True  # added to the base before wrapping (see add_lora)

    @contextmanager
    def active(self):
        if self.adapter is None:
            with self.peft_model.disable_adapter():
                yield
            return
        previous = self.peft_model.active_adapter
        self.peft_model.set_adapter(self.adapter, inference_mode=True)
        try:
            yield
        finally:
            self.peft_model.set_adapter(previous)

    def __call__(self, *args, **kwargs):
        with self.active():
            return self.peft_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with self.active():
            return self.peft_model.generate(*args, **kwargs)

    def parameters(self):
        return self.peft_model.parameters()

    def eval(self):
        self.peft_model.eval()
        return self

    def train(self, mode: bool = True):
        self.peft_model.train(mode)
        return self

    def __getattr__(self, name: str):
        return getattr(self.peft_model, name)


def iterate_view(peft_model, directory: Path | None, name: str | None = None) -> AdapterView:
    """The view for scoring: `directory=None` gives the base (adapter disabled); otherwise the adapter
    saved in `directory` is loaded (frozen) next to the policy's, replacing any iterate loaded before."""
    if directory is None:
        return AdapterView(peft_model, None)
    name = name or Path(directory).parent.name
    if name not in peft_model.peft_config:
        for other in [a for a in peft_model.peft_config if a.startswith("iter_")]:
            peft_model.delete_adapter(other)
        peft_model.load_adapter(str(directory), adapter_name=name, is_trainable=False)
        peft_model.set_adapter("default")  # load_adapter may leave the loaded one active in some PEFT versions
    return AdapterView(peft_model, name)


def _lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer

    return [module for module in peft_model.modules() if isinstance(module, LoraLayer)]


def _peft_parts(model: Any):
    """(PeftModel, adapter name or None for the bare base) of a LoRA policy or view; (None, None) otherwise."""
    if isinstance(model, AdapterView):
        return model.peft_model, model.adapter
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return None, None
    if isinstance(model, PeftModel):
        return model, model.active_adapter
    return None, None


def _save_adapter(peft_model, adapter: str, directory: Path) -> None:
    import copy

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(peft_model, adapter_name=adapter)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
              str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(peft_model.peft_config[adapter])
    config.inference_mode = True
    config.save_pretrained(str(directory))
    base = getattr(peft_model, "_sera_base", None) or {}
    (directory / "sera_base.json").write_text(json.dumps(base, indent=2) + "\n", encoding="utf-8")


def _save_merged(peft_model, adapter: str | None, directory: Path) -> None:
    """The base weights plus `scale * B @ A` of `adapter` (none: the base alone), computed without
    touching the policy, saved as a plain model. Each weight is rounded to the base's dtype once, after the
    sum, as PEFT's own merge does: in bf16 a merged save then loads to exactly the weights of the adapter folder
    loaded onto its base (:func:`load_model`)."""
    base = peft_model.get_base_model()
    deltas = {}
    if adapter is not None:
        for name, module in base.named_modules():
            if hasattr(module, "get_delta_weight") and adapter in getattr(module, "lora_A", {}):
                deltas[f"{name}.base_layer.weight"] = module.get_delta_weight(adapter)
    state = {}
    with torch.no_grad():
        for key, tensor in base.state_dict().items():
            if ".lora_" in key or ".lora_magnitude_vector" in key:
                continue
            if key in deltas:  # one rounding to the base's dtype, as PEFT's merge: fp32 adapter on bf16 weights
                tensor = (tensor + deltas[key]).to(tensor.dtype).contiguous()
            state[key.replace(".base_layer.", ".")] = tensor
    base.save_pretrained(directory, state_dict=state, safe_serialization=True)


def _load_adapter_merged(directory: Path, *, dtype: str, trust_remote_code: bool) -> PreTrainedModel:
    from peft import PeftModel

    base_info = {}
    if (directory / "sera_base.json").is_file():
        base_info = json.loads((directory / "sera_base.json").read_text(encoding="utf-8"))
    if not base_info.get("model"):
        config = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
        base_info = {"model": config.get("base_model_name_or_path")}
    if not base_info.get("model"):
        raise SeraInputError(f"cannot load adapter {str(directory)!r}: it does not name its base model")
    base = load_model(base_info["model"], dtype=dtype, trust_remote_code=trust_remote_code,
                      gguf_file=base_info.get("gguf_file"))
    try:
        model = PeftModel.from_pretrained(base, str(directory))
    except Exception as exc:
        raise SeraInputError(f"cannot load adapter {str(directory)!r}: {_first_line(exc)}") from exc
    return model.merge_and_unload()


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

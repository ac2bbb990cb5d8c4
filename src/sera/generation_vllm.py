"""Sampling with vLLM (extra `[vllm]`, GPU only), weights refreshed from the policy in place.

SeRA samples N responses per prompt from the current iterate at every iteration (`sera train
--generation-backend vllm`). With vLLM the engine is started once, on a copy of the SFT model, and
before each later sampling the policy's current weights are pushed into it (`refresh`): no restart,
no checkpoint reload. This is the same mechanism as TRL's colocated vLLM generation
(`trl/generation/vllm_generation.py`): `model_runner.model.load_weights([(name, tensor)])` on the
in-process driver worker, then the prefix cache is reset. A LoRA policy is merged for the push and unmerged afterwards.

UNTESTED here: vLLM is on none of this project's machines (GPU ones included); the benchmark
(`benchmarks/perf.py --gpu-part`) runs it where both are present and records the result.
Without vLLM or CUDA, constructing :class:`VLLMGenerator` raises :class:`SeraInputError`.
"""

from __future__ import annotations

import os
import tempfile

import torch

from sera.errors import SeraInputError
from sera.generation import Completion, SamplingParams


def vllm_available() -> str | None:
    """None when vLLM can run here, else the reason it cannot."""
    if not torch.cuda.is_available():
        return "the vLLM backend needs a CUDA GPU; none is visible (use the default HF backend)"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "the vLLM backend needs vLLM: pip install 'sera[vllm]' (GPU machines only)"
    return None


class VLLMGenerator:
    """A colocated vLLM engine that samples like :func:`sera.generation.generate_completions`."""

    def __init__(self, model, tokenizer, *, gpu_memory_utilization: float = 0.3, max_model_len: int | None = None,
                 seed: int = 0, dtype: str | None = None) -> None:
        reason = vllm_available()
        if reason:
            raise SeraInputError(reason)
        from vllm import LLM

        self.tokenizer = tokenizer
        # vLLM loads from a folder: save the starting weights once (refresh() replaces them in place after).
        self._folder = tempfile.TemporaryDirectory(prefix="sera-vllm-")
        base = _base_model(model)
        base.save_pretrained(self._folder.name, safe_serialization=True)
        tokenizer.save_pretrained(self._folder.name)
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                           ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(29500 + os.getpid() % 1000))):
            os.environ.setdefault(key, value)
        # Keep the worker in this process, so its model can be reached for in-place weight updates.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.llm = LLM(model=self._folder.name, tokenizer=self._folder.name, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       dtype=dtype or str(next(base.parameters()).dtype).removeprefix("torch."),
                       distributed_executor_backend="external_launcher", enable_prefix_caching=True)

    def _worker_model(self):
        engine = self.llm.llm_engine
        for path in ("model_executor.driver_worker.model_runner.model",
                     "model_executor.driver_worker.worker.model_runner.model"):
            obj = engine
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
                return obj
            except AttributeError:
                continue
        return None

    @torch.no_grad()
    def refresh(self, model) -> None:
        """Push the policy's current weights into the running engine (no restart)."""
        peft = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
        if peft:
            model.merge_adapter()
        try:
            weights = [(_vllm_name(name), param.data) for name, param in _named_weights(model, peft)]
            target = self._worker_model()
            if target is not None:
                target.load_weights(weights)
            else:  # newer vLLM: reach the worker through an RPC run in-process
                self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(weights))
        finally:
            if peft:
                model.unmerge_adapter()
        self.llm.reset_prefix_cache()

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, *, seed: int | None = None
                 ) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSampling

        sampling = VLLMSampling(n=params.num_samples, temperature=params.temperature,
                                top_p=params.top_p if params.temperature > 0 else 1.0,
                                max_tokens=params.max_new_tokens, seed=seed,
                                stop_token_ids=[self.tokenizer.eos_token_id], skip_special_tokens=True)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling, use_tqdm=False)
        results = []
        for out in outputs:
            results.append([Completion(text=o.text, num_tokens=len(o.token_ids) - int(o.finish_reason == "stop"),
                                       finished=o.finish_reason == "stop") for o in out.outputs])
        return results

    def close(self) -> None:
        del self.llm
        self._folder.cleanup()


def _base_model(model):
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        raise SeraInputError("the vLLM backend starts from a plain model; start it before wrapping the policy in LoRA")
    return model


def _named_weights(model, peft: bool):
    for name, param in model.named_parameters():
        if peft:
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if "lora_" in name or "original_module" in name:
                continue
            name = name.replace("modules_to_save.default.", "")
        yield name, param


def _vllm_name(name: str) -> str:
    return name.removeprefix("_checkpoint_wrapped_module.")


__all__ = ["VLLMGenerator", "vllm_available"]

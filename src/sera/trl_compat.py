"""Every hook of `sera` into a private name of TRL, transformers or accelerate, in one place.

SeRA builds on TRL's public API wherever one exists (the trainer's `optimizers=` argument, its callbacks,
its configs). Where none does, the hook lives here, with the reason it exists; `check_hooks()` verifies
each private name is still there and shaped as expected, and `tests/test_trl_compat.py` runs it, so a TRL
release that moves one fails with a message naming the hook instead of somewhere deep in a run.

Supported: trl>=1.16,<1.17 (pyproject.toml), the one TRL release these hooks are tested against
(docs/trl-compat.md says how a new release is checked).

| hook | private name | why |
|---|---|---|
| PretokenizedDPOTrainer | DPOTrainer._prepare_dataset | SeRA tokenizes once with TRL's rules and scores exactly those ids; TRL has no public switch to take token ids as they are (its own skip is for vision datasets only) |
| PretokenizedDPOTrainer | DPOTrainer._precompute_ref_logps | SeRA hands the trainer the reference log-probs it already scored and cached; `precompute_ref_log_probs=True` is the public flag that keeps TRL from building a reference model, and this hook stops it from recomputing them |
| compact_lm_head | trl.trainer.utils._use_triton, _CHUNKED_LOGPROB_CHUNK_SIZE, trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE | on a device without Triton TRL's fused head projects every position in 512 MiB tiles; SeRA switches it to response positions and cache-sized tiles (same arithmetic, ~1.7x faster on CPU, docs/performance.md) |
| without_autocast_wrapper, drop_autocast_wrapper | accelerate's `_original_forward` and `_is_accelerate_prepared` model attributes | a mixed-precision trainer leaves its autocast wrapper on the policy; SeRA must score and sample the iterate as its saved weights load |
| zero3_switched_off | transformers.integrations.deepspeed._hf_deepspeed_config_weak_ref | models SeRA loads for scoring must stay whole after a ZeRO-3 trainer has set the global switch (the public `unset_hf_deepspeed_config` cannot restore it afterwards) |

Removed in the library redesign, now public: `create_scheduler`/`create_optimizer` monkeypatches (the run's
optimizer and schedule go through `optimizers=`), `_compute_loss` and `_set_signature_columns_if_needed`
overrides (SPA's per-pair label smoothing overrides the public `compute_loss` and keeps its column with
the public `remove_unused_columns=False`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import trl.trainer.utils as _trl_utils
from trl import DPOTrainer

try:
    import trl.kernels.chunked_logprob as _trl_kernel
except ImportError:  # pragma: no cover - other TRL layouts: the head then runs as TRL ships it
    _trl_kernel = None

SUPPORTED_TRL = ">=1.16,<1.17"


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer fed with pre-tokenized rows that already carry `ref_chosen_logps`/`ref_rejected_logps`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset

    def _precompute_ref_logps(self, dataset, name, batch_size):
        return dataset


CPU_TOKEN_TILE = 1024
CPU_VOCAB_TILE = 8192
"""Tile of the fused LM head on devices without Triton: 1024 x 8192 fp32 = 32 MiB, instead of TRL's 512 MiB."""


@contextmanager
def compact_lm_head(device: torch.device | str, *, token_tile: int = CPU_TOKEN_TILE,
                    vocab_tile: int = CPU_VOCAB_TILE) -> Iterator[None]:
    """Within this context, TRL's fused LM head projects response positions only, in small tiles, on a
    device without Triton (CPU). TRL projects every position there (to keep tile shapes fixed for
    compilers such as Neuron's); on CPU that wastes the prompt's and the padding's share of the head,
    and its 512 MiB tiles thrash the cache. The per-token arithmetic is TRL's own (`_forward_tile`,
    and its backward under autograd), so the values and gradients are unchanged. On CUDA/XPU with Triton
    TRL is already compact, and the context does nothing. It patches TRL module globals and restores
    them on exit; it is not thread-safe."""
    device = torch.device(device)
    if _trl_kernel is None or _trl_utils._use_triton(device) or not hasattr(_trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE") \
            or not hasattr(_trl_kernel, "TOKEN_CHUNK_SIZE"):
        yield
        return
    saved = (_trl_utils._use_triton, _trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, _trl_kernel.TOKEN_CHUNK_SIZE)
    original_use_triton = saved[0]
    # Only the trainer-side `compact` decision is switched; the kernel module keeps its own `_use_triton`
    # and so folds tiles with torch ops, as it does on this device anyway.
    _trl_utils._use_triton = lambda d: True if torch.device(d).type == device.type else original_use_triton(d)
    _trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = vocab_tile
    _trl_kernel.TOKEN_CHUNK_SIZE = token_tile
    try:
        yield
    finally:
        _trl_utils._use_triton, _trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, _trl_kernel.TOKEN_CHUNK_SIZE = saved



@contextmanager
def without_autocast_wrapper(model) -> Iterator[None]:
    """Score through the model's own forward, in its own dtypes. A trainer run in mixed precision (`bf16`: on a
    GPU with `--dtype auto`) leaves accelerate's autocast wrapper on the model it trained (`forward`, the
    original kept as `_original_forward`), and nothing removes it. Scored through it, the iterate in memory
    would get other log-probs than the same weights loaded from disk (a resumed run, the SFT model, an older
    iterate): with LoRA its fp32 adapter would run in bf16. The wrapper is set aside while scoring."""
    module = getattr(model, "peft_model", model)  # an adapter view (sera.models.AdapterView): the model it views
    original, wrapped = module.__dict__.get("_original_forward"), module.__dict__.get("forward")
    if original is None or wrapped is None:
        yield
        return
    module.forward = original
    try:
        yield
    finally:
        module.forward = wrapped



def drop_autocast_wrapper(model) -> None:
    """Accelerate wraps a model's `forward` in an autocast for bf16/fp16 training (keeping the forward it wrapped as
    `_original_forward`) and leaves it there. SeRA samples and scores the policy next, and must see it as its saved
    weights load (a resumed run has no wrapper): the forward accelerate wrapped is put back as it was (TRL's fused
    head included), and the model is marked unprepared, so the next iteration's trainer wraps it afresh. A no-op
    on an fp32 run. (GPU path: diagnosed from accelerate's code, docs/scale.md; shown on a CPU in bf16.)"""
    original = model.__dict__.pop("_original_forward", None)
    if original is not None:
        model.forward = original
    model.__dict__.pop("_is_accelerate_prepared", None)


@contextmanager
def zero3_switched_off() -> Iterator[None]:
    """transformers' global ZeRO-3 switch off for the block and restored after (model loading stays whole)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def check_hooks() -> list[str]:
    """What no longer matches in the installed TRL/transformers/accelerate, one line per hook (empty: all fine)."""
    problems = []

    def expect(ok: bool, hook: str, what: str) -> None:
        if not ok:
            problems.append(f"{hook}: {what} (sera supports trl{SUPPORTED_TRL}; docs/trl-compat.md)")

    for name, params in (("_prepare_dataset", ["self", "dataset", "processing_class", "args", "dataset_name"]),
                         ("_precompute_ref_logps", ["self", "dataset", "name", "batch_size"])):
        method = getattr(DPOTrainer, name, None)
        expect(method is not None and list(inspect.signature(method).parameters) == params,
               "PretokenizedDPOTrainer", f"DPOTrainer.{name}{tuple(params[1:])} is gone or changed")
    expect(_trl_kernel is not None and hasattr(_trl_kernel, "TOKEN_CHUNK_SIZE"), "compact_lm_head",
           "trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE is gone")
    expect(callable(getattr(_trl_utils, "_use_triton", None)) and hasattr(_trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"),
           "compact_lm_head", "trl.trainer.utils._use_triton / _CHUNKED_LOGPROB_CHUNK_SIZE are gone")
    from accelerate import Accelerator
    from transformers.integrations import deepspeed as hf_deepspeed

    source = inspect.getsource(Accelerator.prepare_model)
    expect("_original_forward" in source and "_is_accelerate_prepared" in inspect.getsource(Accelerator),
           "drop_autocast_wrapper", "accelerate no longer keeps the wrapped forward as `_original_forward`")
    expect(hasattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref"), "zero3_switched_off",
           "transformers.integrations.deepspeed._hf_deepspeed_config_weak_ref is gone")
    return problems

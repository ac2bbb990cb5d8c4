"""Where a test's models and batches are when a GPU is visible, and how closely numbers computed there agree.

The suite hides GPUs unless SERA_TEST_GPU=1 (conftest.py). With one visible, TRL's trainer moves the model it is
given to cuda when it is built (`Trainer._move_model_to_device`), while a batch from its collator is still on the
CPU until `_prepare_inputs`; `sera.models.load_model` puts models on cuda, in bf16 with `--dtype auto` on a
bf16-capable GPU. A test that compares numbers computed on both sides says where it computes them with these.
"""

from __future__ import annotations

import torch


def trainer_device() -> torch.device:
    """The device TRL's trainer puts a model on: `TrainingArguments.device` of sera's DPO config in one process
    (`use_cpu` unless CUDA is available), cuda:0 when a GPU is visible."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def tolerance(device: torch.device | str, dtype: torch.dtype = torch.float32, *, rtol: float, atol: float) -> dict:
    """`rtol`/`atol`, a test's CPU fp32 tolerance for two code paths that compute the same numbers, widened to
    what `dtype` on `device` holds. fp32 on a GPU (other kernels, other reduction orders; no TF32, PyTorch's
    default): 1e-4 relative. Weights in bf16/fp16 that the two paths round differently (LoRA merged into the
    weights or kept beside them): 1e-3 relative, 1e-2 absolute (on the CPU that moved log-prob sums of 5 to 18
    tokens by up to 3.3e-3)."""
    if dtype in (torch.bfloat16, torch.float16):
        return {"rtol": max(rtol, 1e-3), "atol": max(atol, 1e-2)}
    if torch.device(device).type != "cpu":
        return {"rtol": max(rtol, 1e-4), "atol": max(atol, 1e-5)}
    return {"rtol": rtol, "atol": atol}


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype

"""Multi-process runs (`accelerate launch` / `torchrun`): each process takes a share, results meet.

TRL's trainer spreads training over the processes itself. SeRA's own stages -- scoring and
sampling -- split their items across ranks (`shard`) and gather the results back in order
(`gather`), so every rank holds the same margins and selects the same pairs. Only rank 0
writes files (:mod:`sera.io`, :func:`sera.models.save_model`); `barrier` waits for its writes.
A single process is the degenerate case: every function below is then a no-op.

Engines that shard the parameters themselves (DeepSpeed ZeRO-3, FSDP) train a copy of the policy;
after each pass its full weights are gathered into the whole policy every rank keeps for scoring
and sampling (:func:`sera.training.train_pass`, :func:`broadcast_module`). That path has run on one
GPU (FSDP and ZeRO-3 selected what a plain run selects) but not yet across several, so it is opt-in:
`SERA_EXPERIMENTAL_SHARDED=1`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

EXPERIMENTAL_SHARDED = "SERA_EXPERIMENTAL_SHARDED"


def init() -> None:
    """Join the process group a launcher described in the environment (gloo on CPU, NCCL on GPU)."""
    _check_sharded_engine()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def shard(count: int) -> list[int]:
    """This rank's share of `count` items (strided, so length-sorted work stays balanced)."""
    return list(range(rank(), count, world_size()))


def gather(indices: list[int], values: list[Any], count: int) -> list[Any]:
    """Every rank's (indices, values) reassembled into one list of `count` values, on every rank."""
    if world_size() == 1:
        return list(values)
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, (list(indices), list(values)))
    result: list = [None] * count
    for part_indices, part_values in parts:
        for index, value in zip(part_indices, part_values):
            result[index] = value
    return result


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value`, on every rank (picklable objects; the value itself in a one-process run)."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_module(module: torch.nn.Module) -> None:
    """Every rank's `module` takes rank 0's parameter and buffer values (in place)."""
    if world_size() == 1:
        return
    seen: set[int] = set()
    for tensor in module.state_dict().values():
        if tensor.data_ptr() not in seen:  # tied weights travel once
            seen.add(tensor.data_ptr())
            dist.broadcast(tensor, src=0)


def shards_parameters() -> bool:
    """Does the launcher's engine shard the parameters (FSDP, DeepSpeed ZeRO-3), not just optimizer state?"""
    return _uses_fsdp() or _zero_stage() == 3


def _uses_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def _zero_stage() -> int | None:
    """The ZeRO stage `accelerate launch` was given, as a flag or inside a DeepSpeed JSON config."""
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if stage is None and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return None
    stage = stage or _deepspeed_json().get("zero_optimization", {}).get("stage")
    try:
        return int(stage)
    except (TypeError, ValueError):
        return None


def _deepspeed_json() -> dict:
    """The DeepSpeed JSON config named by the launcher ({} when none, or unreadable: accelerate reports that)."""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if not path or path.lower() == "none":
        return {}
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


@contextmanager
def whole_model_loading() -> Iterator[None]:
    """Models SeRA loads to score and sample stay whole on every rank. Once a ZeRO-3 trainer exists,
    transformers would build them partitioned (zero.Init), and under FSDP's `cpu_ram_efficient_loading`
    only rank 0 would get weights (the others an empty shell): ranks scoring different items with such
    a model would wait on each other forever, or score garbage."""
    from sera.trl_compat import zero3_switched_off

    saved_loading = os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING")
    if saved_loading is not None:
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    try:
        with zero3_switched_off():
            yield
    finally:
        if saved_loading is not None:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = saved_loading


def end_sharded_pass() -> None:
    """Turn transformers' global ZeRO-3 switch off once a sharded pass is over. The trainer's arguments turn it
    on, and accelerate's state keeps it on; but the models SeRA then scores, samples and saves are whole, and
    code that reads the switch (TRL's fused LM head, `generate`) would treat their weights as partitioned
    (on a GPU: `'Parameter' object has no attribute 'ds_status'`). The next pass's arguments turn it on again."""
    from transformers.integrations import deepspeed as hf_deepspeed

    hf_deepspeed.unset_hf_deepspeed_config()


def _check_sharded_engine() -> None:
    """FSDP and ZeRO-3 run only when opted into, and ZeRO-3 only when it can hand back whole weights."""
    from sera.errors import SeraInputError

    if not shards_parameters():
        return
    engine = "FSDP" if _uses_fsdp() else "DeepSpeed ZeRO-3"
    if os.environ.get(EXPERIMENTAL_SHARDED, "") != "1":
        raise SeraInputError(
            f"{engine} shards the parameters SeRA scores and samples with. sera trains a copy under it and gathers "
            f"the weights back after each pass; that path has run on one GPU but not yet across several: set "
            f"{EXPERIMENTAL_SHARDED}=1 to use it, or use DDP or DeepSpeed ZeRO-2 (examples/accelerate/).")
    if engine == "DeepSpeed ZeRO-3" and not _zero3_gathers_weights():
        raise SeraInputError(
            "DeepSpeed ZeRO-3: sera gathers the trained weights after each pass and needs "
            "stage3_gather_16bit_weights_on_model_save: true in the DeepSpeed config (accelerate config: "
            "zero3_save_16bit_model: true); see examples/accelerate/deepspeed_zero3.yaml.")


def _zero3_gathers_weights() -> bool:
    config = _deepspeed_json()
    if config:
        gather = config.get("zero_optimization", {}).get("stage3_gather_16bit_weights_on_model_save", False)
        return gather in (True, "true", "auto")
    return os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "").lower() == "true"

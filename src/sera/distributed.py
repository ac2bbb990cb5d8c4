"""Multi-process runs (`accelerate launch` / `torchrun`): each process takes a share, results meet.

TRL's trainer spreads training over the processes itself. SeRA's own stages -- scoring and
sampling -- split their items across ranks (`shard`) and gather the results back in order
(`gather`), so every rank holds the same margins and selects the same pairs. Only rank 0
writes files (:mod:`sera.io`, :func:`sera.models.save_model`); `barrier` waits for its writes.
A single process is the degenerate case: every function below is then a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def init() -> None:
    """Join the process group a launcher described in the environment (gloo on CPU, NCCL on GPU)."""
    _refuse_sharded_parameters()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        import torch
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


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _refuse_sharded_parameters() -> None:
    """SeRA scores and samples with the policy outside the trainer, which needs whole parameters on
    every rank: DDP and DeepSpeed ZeRO-1/2 keep them whole; ZeRO-3 and FSDP shard them."""
    from sera.errors import SeraInputError

    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise SeraInputError("FSDP shards the parameters SeRA scores and samples with; it is not supported yet. "
                             "Use DDP or DeepSpeed ZeRO-2 (examples/accelerate/).")
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3":
        raise SeraInputError("DeepSpeed ZeRO-3 shards the parameters SeRA scores and samples with; it is not "
                             "supported yet. Use DDP or ZeRO-2 (examples/accelerate/).")

"""The scoring engine: summed log-probs of responses, batched, and cached per model.

Every implicit reward SeRA computes comes from here. Sequences are sorted by length so a batch
wastes little padding, and log-probs are taken with TRL's fused LM head on response positions
only -- the same kernel the trainer's loss uses. (On a device without Triton, TRL's head projects
every position, prompt and padding included, through 4096 x 32768 fp32 tiles; scoring switches it
to response positions and cache-sized tiles there, see :func:`compact_lm_head`: same kernel, same
values, ~1.5x faster on CPU -- `docs/performance.md`.) Each model's results are cached by token
sequence, so a fixed reference is scored once per distinct (prompt, response) for the whole run,
and an iterate's scores are reused when the next iteration ensembles it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from transformers import PreTrainedModel
from trl.trainer.utils import add_fused_lm_head

from sera import distributed
from sera.trl_compat import CPU_TOKEN_TILE, CPU_VOCAB_TILE, compact_lm_head, without_autocast_wrapper  # noqa: F401
from sera.progress import track
from sera.tokenization import sequence_key

Sequence = tuple[list[int], list[int]]
"""(prompt_ids, completion_ids)"""


@torch.no_grad()
def sequence_logps(model: PreTrainedModel, sequences: list[Sequence], *, batch_size: int = 16,
                   description: str = "scoring", compact_head: bool = True,
                   share_prompts: bool = True) -> np.ndarray:
    """Sum of log pi(completion | prompt) over completion tokens, for each sequence (float64).

    With `share_prompts` (default), the completions of one prompt (a pair's chosen and rejected, a
    prompt's N samples) go through the model in one row: the prompt once, then each completion
    attending to the prompt and to itself only (a block attention mask, positions restarting after
    the prompt) -- the same log-probs as scoring each (prompt, completion) alone, for a fraction of
    the prompt's compute. Models whose attention cannot take such a mask are scored one sequence per
    row. `compact_head=False` runs TRL's fused head exactly as TRL ships it (both for benchmarks)."""
    _ensure_fused_head(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with compact_lm_head(device) if compact_head else _nothing(), without_autocast_wrapper(model):
        if share_prompts and _can_share_prompts(model):
            result = _score_shared_prompts(model, sequences, batch_size, description, device)
        else:
            result = _score_sorted(model, sequences, batch_size, description, device)
    model.train(was_training)
    return result


def _can_share_prompts(model) -> bool:
    config = model.config.get_text_config()
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False  # flash/flex kernels take no arbitrary 4-D mask
    if getattr(config, "sliding_window", None) or getattr(config, "layer_types", None) and any(
            t != "full_attention" for t in config.layer_types):
        return False  # a custom mask would override the sliding window
    return not getattr(config, "is_encoder_decoder", False)


def _score_shared_prompts(model, sequences: list[Sequence], batch_size: int, description: str,
                          device: torch.device) -> np.ndarray:
    """One row per distinct prompt: prompt[:-1] once, then for each completion c a segment
    [prompt[-1], c[:-1]] at positions len(prompt)-1 ... that predicts c, seeing the prompt and itself."""
    result = np.zeros(len(sequences), dtype=np.float64)
    groups: dict[tuple[int, ...], list[int]] = {}
    alone = []
    for index, (prompt, completion) in enumerate(sequences):
        if not completion:
            continue  # nothing to score: log-prob 0
        if not prompt:
            alone.append(index)  # no position predicts the first token; score as the plain path does
        else:
            groups.setdefault(tuple(prompt), []).append(index)
    rows = sorted(groups.items(), key=lambda item: len(item[0]) - 1 + sum(len(sequences[i][1]) for i in item[1]))
    batches, current, count = [], [], 0
    for row in rows:  # about `batch_size` sequences per forward, as the plain path
        current.append(row)
        count += len(row[1])
        if count >= batch_size:
            batches.append(current)
            current, count = [], 0
    if current:
        batches.append(current)
    config = model.config.get_text_config()
    pad_id = config.pad_token_id or 0
    dtype = next(model.parameters()).dtype
    for batch in track(batches, description, total=len(batches)):
        input_ids, position_ids, mask, labels, owners = _pack(batch, sequences, pad_id, dtype)
        out = model(input_ids=input_ids.to(device), position_ids=position_ids.to(device),
                    attention_mask=mask.to(device), shift_labels=labels.to(device), fused_lm_head=True,
                    use_cache=False)
        token_logps = out.log_probs.float().cpu()
        sums = torch.zeros(len(sequences) + 1, dtype=torch.float64)
        sums.index_add_(0, owners.flatten(), token_logps.flatten().double())
        touched = torch.unique(owners[owners < len(sequences)])
        result[touched.numpy()] = sums[touched].numpy()
    if alone:
        result[alone] = _score_sorted(model, [sequences[i] for i in alone], batch_size, description, device)
    return result


def _pack(batch, sequences: list[Sequence], pad_id: int, dtype: torch.dtype):
    """Token ids, position ids, an additive 4-D attention mask, pre-shifted labels, and for every
    position the index of the sequence whose log-prob it adds to (len(sequences) for none)."""
    lengths = [len(prompt) - 1 + sum(len(sequences[i][1]) for i in members) for prompt, members in batch]
    width = max(lengths)
    rows = len(batch)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((rows, width), dtype=torch.long)
    labels = torch.full((rows, width), -100, dtype=torch.long)
    owners = torch.full((rows, width), len(sequences), dtype=torch.long)
    segment = torch.full((rows, width), -2, dtype=torch.long)  # -1 shared prefix, k completion k, -2 padding
    for row, (prompt, members) in enumerate(batch):
        prefix = len(prompt) - 1
        input_ids[row, :prefix] = torch.tensor(prompt[:-1], dtype=torch.long)
        position_ids[row, :prefix] = torch.arange(prefix)
        segment[row, :prefix] = -1
        start = prefix
        for k, index in enumerate(members):
            completion = sequences[index][1]
            end = start + len(completion)
            input_ids[row, start:end] = torch.tensor([prompt[-1]] + completion[:-1], dtype=torch.long)
            position_ids[row, start:end] = torch.arange(prefix, prefix + len(completion))
            labels[row, start:end] = torch.tensor(completion, dtype=torch.long)
            owners[row, start:end] = index
            segment[row, start:end] = k
            start = end
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & ((key == -1) | (key == query)) & (query != -2)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves: no empty softmax
    mask = torch.zeros((rows, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return input_ids, position_ids, mask, labels, owners


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _score_sorted(model, sequences: list[Sequence], batch_size: int, description: str,
                  device: torch.device) -> np.ndarray:
    pad_id = model.config.get_text_config().pad_token_id or 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]) + len(sequences[i][1]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    result = np.zeros(len(sequences), dtype=np.float64)
    for batch in track(batches, description, total=len(batches)):
        input_ids, attention_mask, labels = _right_pad([sequences[i] for i in batch], pad_id)
        out = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                    labels=labels.to(device), fused_lm_head=True, use_cache=False)
        logps = out.log_probs.float().sum(dim=1).cpu().numpy()
        result[batch] = logps
    return result


def _right_pad(batch: list[Sequence], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(p) + len(c) for p, c in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (prompt, completion) in enumerate(batch):
        ids = prompt + completion
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        labels[row, len(prompt):len(ids)] = torch.tensor(completion)
    return input_ids, attention_mask, labels


def _ensure_fused_head(model: PreTrainedModel) -> None:
    if not getattr(model, "_sera_fused_head", False):
        add_fused_lm_head(model)
        model._sera_fused_head = True


class LogProbBank:
    """Log-probs of sequences under each model of a run, computed once per (model, sequence).

    Models are named by an integer: 0 is the SFT model, t the iterate after iteration t. A model
    held in memory is registered with `hold`; any other is loaded with `load(index)` when it has
    uncached sequences to score, and released afterwards.
    """

    def __init__(self, load: Callable[[int], PreTrainedModel], batch_size: int) -> None:
        self._load = load
        self._batch_size = batch_size
        self._held: dict[int, PreTrainedModel] = {}
        self._cache: dict[int, dict[str, float]] = {}
        self.seconds = 0.0

    def hold(self, index: int, model: PreTrainedModel) -> None:
        self._held = {index: model}

    def logps(self, index: int, sequences: list[Sequence]) -> np.ndarray:
        import time

        cache = self._cache.setdefault(index, {})
        keys = [sequence_key(p, c) for p, c in sequences]
        missing = {k: s for k, s in zip(keys, sequences) if k not in cache}
        if missing:
            start = time.perf_counter()
            model = self._held.get(index)
            loaded = model is None
            if loaded:
                model = self._load(index)
            todo = list(missing.values())
            mine = distributed.shard(len(todo))  # each process scores its share; all get every value
            values = sequence_logps(model, [todo[i] for i in mine], batch_size=self._batch_size,
                                    description=f"scoring with {'SFT' if index == 0 else f'iterate {index}'}")
            cache.update(zip(missing.keys(), distributed.gather(mine, values.tolist(), len(todo))))
            if loaded:
                del model
                gc.collect()
            self.seconds += time.perf_counter() - start
        return np.array([cache[k] for k in keys], dtype=np.float64)

    def forget(self, index: int) -> None:
        """Drop a model's cache once no later step can need it."""
        self._cache.pop(index, None)

"""The scoring engine: summed log-probs of responses, batched, and cached per model.

Every implicit reward SeRA computes comes from here. Sequences are sorted by length so a batch
wastes little padding, and log-probs are taken with TRL's fused LM head on response positions
only -- the same kernel the trainer's loss uses. Each model's results are cached by token
sequence, so a fixed reference is scored once per distinct (prompt, response) for the whole run,
and an iterate's scores are reused when the next iteration ensembles it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np
import torch
from transformers import PreTrainedModel
from trl.trainer.utils import add_fused_lm_head

from sera.progress import track
from sera.tokenization import sequence_key

Sequence = tuple[list[int], list[int]]
"""(prompt_ids, completion_ids)"""


@torch.no_grad()
def sequence_logps(model: PreTrainedModel, sequences: list[Sequence], *, batch_size: int = 16,
                   description: str = "scoring") -> np.ndarray:
    """Sum of log pi(completion | prompt) over completion tokens, for each sequence (float64)."""
    _ensure_fused_head(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
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
    model.train(was_training)
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
            values = sequence_logps(model, list(missing.values()), batch_size=self._batch_size,
                                    description=f"scoring with {'SFT' if index == 0 else f'iterate {index}'}")
            cache.update(zip(missing.keys(), values.tolist()))
            if loaded:
                del model
                gc.collect()
            self.seconds += time.perf_counter() - start
        return np.array([cache[k] for k in keys], dtype=np.float64)

    def forget(self, index: int) -> None:
        """Drop a model's cache once no later step can need it."""
        self._cache.pop(index, None)

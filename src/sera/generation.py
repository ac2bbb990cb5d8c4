"""Sampling responses from the policy: batched Hugging Face `generate` with left padding.

Used by bootstrapping (N samples per prompt) and by `sera generate`. Prompts arrive already
tokenized by :class:`sera.tokenization.PairTokenizer`, so generation starts from exactly the
context that scoring and training see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sera.progress import track


@dataclass(frozen=True)
class SamplingParams:
    """How responses are sampled (paper: 4 samples, temperature 0.7, top-p 0.95)."""

    num_samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 128


@dataclass(frozen=True)
class Completion:
    """One sampled response: its text (special tokens removed), token count, and whether it hit EOS."""

    text: str
    num_tokens: int
    finished: bool


@torch.no_grad()
def generate_completions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                         prompt_ids: list[list[int]], params: SamplingParams, *, batch_size: int = 16,
                         seed: int | None = None, description: str = "generating") -> list[list[Completion]]:
    """Sample `params.num_samples` completions for each prompt; returns them in prompt order.

    Prompts are sorted by length so that a batch wastes little padding; `batch_size` counts
    sequences (prompts x samples), so memory use does not grow with `num_samples`.
    """
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    prompts_per_batch = max(1, batch_size // params.num_samples)
    batches = [order[i:i + prompts_per_batch] for i in range(0, len(order), prompts_per_batch)]
    results: list[list[Completion]] = [[] for _ in prompt_ids]
    for batch in track(batches, description, total=len(batches)):
        input_ids, attention_mask = _left_pad([prompt_ids[i] for i in batch], tokenizer.pad_token_id, device)
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=params.max_new_tokens,
            do_sample=params.temperature > 0, temperature=params.temperature if params.temperature > 0 else None,
            top_p=params.top_p if params.temperature > 0 else None, top_k=None,
            num_return_sequences=params.num_samples, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        for row, tokens in enumerate(new_tokens):
            results[batch[row // params.num_samples]].append(_to_completion(tokens, tokenizer))
    model.train(was_training)
    return results


def _left_pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _to_completion(tokens: list[int], tokenizer: PreTrainedTokenizerBase) -> Completion:
    eos = tokenizer.eos_token_id
    finished = eos in tokens
    if finished:
        tokens = tokens[:tokens.index(eos)]
    else:
        tokens = [t for t in tokens if t != tokenizer.pad_token_id]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return Completion(text=text, num_tokens=len(tokens), finished=finished)

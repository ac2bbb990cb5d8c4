"""Supervised fine-tuning from scratch on demonstrations: a plain torch loop for the tiny world model.

Sequences are tokenized exactly as the DAA trainer sees a pair: prompt tokens, then response tokens
and EOS; the loss covers the response and EOS only.
"""

from __future__ import annotations

import math
import random

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sera.data import PreferencePair
from sera.tokenization import PairTokenizer


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The prompt's token ids as `sera train` sees them (TRL's rules, :class:`sera.tokenization.PairTokenizer`)."""
    return PairTokenizer(tokenizer, max_length=10**6).prompt_ids(prompt)


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(input ids, labels): the pair tokenization of `sera train` (response + EOS), prompt masked (-100)."""
    pair = PreferencePair(id="sft", prompt=prompt, chosen=response, rejected=response)
    tokens = PairTokenizer(tokenizer, max_length=10**6).pair(pair)
    return tokens.prompt_ids + tokens.chosen_ids, [-100] * len(tokens.prompt_ids) + tokens.chosen_ids


def train_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[tuple[str, str]], *,
              steps: int, batch_size: int = 64, learning_rate: float = 3e-3, seed: int = 0,
              warmup_steps: int = 20) -> list[float]:
    """Train `model` in place on (prompt, response) demonstrations; returns the loss per step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [encode_example(tokenizer, p, r) for p, r in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses = []
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(encoded)), len(encoded))
        batch = [encoded[i] for i in order[:batch_size]]
        del order[:batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(labs)] = torch.tensor(labs)
            mask[row, :len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses

"""Turning pairs into token ids exactly as TRL's DPOTrainer does, once, for scoring, sampling and training.

TRL tokenizes inside the trainer; SeRA must score the very sequences the loss will see. So SeRA
tokenizes here with TRL's own rules (chat template with the generation prompt, EOS appended to
string responses, the completion starting where prompt and prompt+response diverge) and hands the
trainer these ids directly (see :mod:`sera.training`). A test checks the ids against TRL's.

Truncation is decided here too, so the trainer's collator never truncates: the response is cut so
that prompt + response fits `max_length` (TRL's `keep_start`), and a pair whose prompt alone fills
`max_length` is reported as skipped (TRL would drop it silently).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase
from trl.data_utils import common_prefix_length

from sera.data import PreferencePair, Text


@dataclass(frozen=True)
class TokenizedPair:
    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


class PairTokenizer:
    """Tokenizes prompts and (prompt, response) pairs the way TRL's DPOTrainer does."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def prompt_ids(self, prompt: Text) -> list[int]:
        """The context a response is generated from (with the chat template's generation prompt)."""
        if isinstance(prompt, list):
            return self._chat(prompt, add_generation_prompt=True)
        return self.tokenizer(text=prompt)["input_ids"]

    def pair(self, pair: PreferencePair) -> TokenizedPair | None:
        """Token ids of a pair, or None when its prompt alone fills `max_length`."""
        prompt_ids = self.prompt_ids(pair.prompt)
        with_chosen = self._full(pair.prompt, pair.chosen)
        with_rejected = self._full(pair.prompt, pair.rejected)
        start = min(common_prefix_length(prompt_ids, with_chosen), common_prefix_length(prompt_ids, with_rejected))
        if start >= self.max_length:
            return None
        room = self.max_length - start
        return TokenizedPair(pair.id, prompt_ids[:start], with_chosen[start:][:room], with_rejected[start:][:room])

    def _full(self, prompt: Text, response: Text) -> list[int]:
        if isinstance(prompt, list):
            return self._chat(prompt + response)
        eos = self.tokenizer.eos_token
        text = response if response.endswith(eos) else response + eos
        return self.tokenizer(text=prompt + text)["input_ids"]

    def _chat(self, messages: list[dict], **kwargs) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]


def sequence_key(prompt_ids: list[int], completion_ids: list[int]) -> str:
    """A stable key for a (prompt, completion) token sequence, for the log-prob caches."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(prompt_ids).to_bytes(4, "little"))
    for token in prompt_ids + completion_ids:
        digest.update(int(token).to_bytes(4, "little", signed=True))
    return digest.hexdigest()

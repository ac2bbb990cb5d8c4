"""Who labels bootstrapped pairs: the paper's implicit reward, or a safeguard a user picks.

A labeller gives every candidate response of every prompt a reward (higher = better); bootstrapping
pairs the best with the worst (:mod:`sera.bootstrap`). Specs (`--bootstrap-labeller`):

    implicit          the paper: the ensembled implicit reward r_ens of the current iterate
    likelihood        the policy's own log-likelihood log pi_t(y|x): self-distillation toward its mode
    blend:<lambda>    r_ens + lambda * log pi_ref(y|x): damps likelihood displacement
    judge:<spec>      any judge of `sera eval` (gold:..., rm:..., llm:...): on-policy DPO with a trusted labeller

`docs/self-review.md` reports how each fared in the gold worlds.
"""

from __future__ import annotations

import itertools

import numpy as np

from sera.data import PreferencePair, Text
from sera.rewards import ImplicitReward
from sera.scoring import Sequence
from sera.tokenization import PairTokenizer


class Labeller:
    """Base for labellers that read log-probs of (prompt, response) token sequences."""

    name = "labeller"

    def __init__(self, pair_tokenizer: PairTokenizer) -> None:
        self.pair_tokenizer = pair_tokenizer

    def __call__(self, iterate: int, prompts: list[Text], candidates: list[list[Text]]) -> list[np.ndarray]:
        sequences, owners = candidate_sequences(self.pair_tokenizer, prompts, candidates)
        rewards = self.sequence_rewards(iterate, sequences)
        return [rewards[owners == i] for i in range(len(prompts))]

    def sequence_rewards(self, iterate: int, sequences: list[Sequence]) -> np.ndarray:
        raise NotImplementedError


class ImplicitLabeller(Labeller):
    name = "implicit"

    def __init__(self, pair_tokenizer: PairTokenizer, reward: ImplicitReward, gamma: float) -> None:
        super().__init__(pair_tokenizer)
        self.reward, self.gamma = reward, gamma

    def sequence_rewards(self, iterate, sequences):
        return self.reward.ensembled(iterate, sequences, self.gamma)


class LikelihoodLabeller(Labeller):
    name = "likelihood"

    def __init__(self, pair_tokenizer: PairTokenizer, reward: ImplicitReward) -> None:
        super().__init__(pair_tokenizer)
        self.reward = reward

    def sequence_rewards(self, iterate, sequences):
        return self.reward.bank.logps(iterate, sequences)


class BlendLabeller(ImplicitLabeller):
    def __init__(self, pair_tokenizer: PairTokenizer, reward: ImplicitReward, gamma: float, weight: float) -> None:
        super().__init__(pair_tokenizer, reward, gamma)
        self.weight, self.name = weight, f"blend:{weight:g}"

    def sequence_rewards(self, iterate, sequences):
        reference = self.reward.bank.logps(self.reward.reference_index(iterate), sequences)
        return super().sequence_rewards(iterate, sequences) + self.weight * reference


class JudgeLabeller:
    """Labels with a judge: pointwise scores, or (pairwise judges) wins in a round robin."""

    def __init__(self, judge) -> None:
        self.judge, self.name = judge, f"judge:{judge.spec}"

    def __call__(self, iterate: int, prompts: list[Text], candidates: list[list[Text]]) -> list[np.ndarray]:
        if self.judge.pointwise:
            flat_prompts = [prompt_text(p) for p, cands in zip(prompts, candidates) for _ in cands]
            flat = [response_text(c) for cands in candidates for c in cands]
            scores = np.array(self.judge.score(flat_prompts, flat), dtype=np.float64)
            bounds = np.cumsum([0] + [len(c) for c in candidates])
            return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return [self._round_robin(p, cands) for p, cands in zip(prompts, candidates)]

    def _round_robin(self, prompt: Text, candidates: list[Text]) -> np.ndarray:
        pairs = list(itertools.combinations(range(len(candidates)), 2))
        texts = [response_text(c) for c in candidates]
        outcomes = self.judge.compare([prompt_text(prompt)] * len(pairs), [texts[a] for a, _ in pairs],
                                      [texts[b] for _, b in pairs])
        wins = np.zeros(len(candidates))
        for (a, b), outcome in zip(pairs, outcomes):
            wins[a] += (outcome + 1) / 2
            wins[b] += (1 - outcome) / 2
        return wins


def candidate_sequences(pair_tokenizer: PairTokenizer, prompts: list[Text], candidates: list[list[Text]]
                        ) -> tuple[list[Sequence], np.ndarray]:
    """Token sequences of every (prompt, candidate), and the index of the prompt each belongs to."""
    sequences, owners = [], []
    for index, (prompt, responses) in enumerate(zip(prompts, candidates)):
        for response in responses:
            tokens = pair_tokenizer.pair(PreferencePair("", prompt, response, response))
            sequences.append((tokens.prompt_ids, tokens.chosen_ids))
            owners.append(index)
    return sequences, np.array(owners, dtype=int)


def build_labeller(spec: str, pair_tokenizer: PairTokenizer, reward: ImplicitReward, gamma: float):
    if spec == "implicit":
        return ImplicitLabeller(pair_tokenizer, reward, gamma)
    if spec == "likelihood":
        return LikelihoodLabeller(pair_tokenizer, reward)
    if spec.startswith("blend:"):
        return BlendLabeller(pair_tokenizer, reward, gamma, float(spec.split(":", 1)[1]))
    from sera.eval.judges import build_judge

    return JudgeLabeller(build_judge(spec.split(":", 1)[1]))


def prompt_text(prompt: Text) -> str:
    """A prompt as judges read it: the text itself, or the transcript of a chat."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def response_text(response: Text) -> str:
    return response if isinstance(response, str) else "".join(m["content"] for m in response)

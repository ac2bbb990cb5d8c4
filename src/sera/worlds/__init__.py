"""Synthetic worlds with a programmatic gold reward, where SeRA's claims can be measured on a CPU.

The one world shipped (``sorting``) is behind ``sera demo``: a character-level task (sort the
letters), a tiny Llama-style policy trained from scratch on imperfect demonstrations, offline
preference pairs that are partly off-policy and labelled by a simulated annotator with label
noise and a length bias, and the gold reward to grade any response. :func:`build_world` makes
all of it in a directory that ``sera train`` can read:

    WORLD/sft/               the SFT policy (also the reference), a normal model folder
    WORLD/pairs.jsonl        offline pairs: id, prompt, chosen, rejected (what training sees)
    WORLD/pairs_meta.jsonl   the hidden truth of each pair (flipped? length-driven? sources, gold)
    WORLD/prompts.json       held-out validation and test prompts
    WORLD/world.json         the world's options and summary numbers
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sera.io import read_jsonl, write_json, write_jsonl
from sera.worlds.preferences import DEMONSTRATOR, OTHER_WRITERS, build_pairs
from sera.worlds.sorting import ALPHABET, gold_reward, sample_prompts


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines one world; the same options and seed give the same world."""

    seed: int = 1
    noise: float = 0.3  # share of offline labels flipped
    length_bias: float = 0.2  # probability the annotator prefers the longer response whatever its quality
    off_policy: float = 0.5  # share of pairs with one response from another model (strong or weak writer)
    pair_prompts: int = 1000
    validation_prompts: int = 200
    test_prompts: int = 400
    sft_demonstrations: int = 3000
    sft_steps: int = 800
    sft_batch_size: int = 64
    sft_learning_rate: float = 3e-3
    hidden_size: int = 48
    layers: int = 2
    heads: int = 2
    min_letters: int = 4
    max_letters: int = 12
    sft_sample_temperature: float = 1.0  # how the SFT policy's responses in the pairs are sampled

    def validate(self) -> WorldConfig:
        from sera.errors import SeraInputError

        for name in ("noise", "length_bias", "off_policy"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SeraInputError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if min(self.pair_prompts, self.validation_prompts, self.test_prompts, self.sft_demonstrations) < 1:
            raise SeraInputError("world sizes must be at least 1")
        return self


@dataclass
class World:
    """A built world: where its files are, and its held-out prompts."""

    root: Path
    config: WorldConfig
    validation_prompts: list[str]
    test_prompts: list[str]

    @property
    def sft_dir(self) -> Path:
        return self.root / "sft"

    @property
    def pairs_path(self) -> Path:
        return self.root / "pairs.jsonl"

    @property
    def meta_path(self) -> Path:
        return self.root / "pairs_meta.jsonl"

    def meta(self) -> dict[str, dict]:
        return {row["id"]: row for row in read_jsonl(self.meta_path)}

    @classmethod
    def load(cls, root: str | Path) -> World:
        """A world that :func:`build_world` made earlier."""
        root = Path(root)
        info = json.loads((root / "world.json").read_text(encoding="utf-8"))
        prompts = json.loads((root / "prompts.json").read_text(encoding="utf-8"))
        return cls(root, WorldConfig(**info["config"]), prompts["validation"], prompts["test"])


LABEL_OPTIONS = ("noise", "length_bias", "off_policy")
"""World options that change only the offline pairs, not the prompts, demonstrations or SFT policy."""


def build_world(config: WorldConfig, root: str | Path, *, reuse_sft: str | Path | None = None, log=print) -> World:
    """Make the world in `root`: SFT policy from scratch, offline pairs and their truth, held-out prompts.

    `reuse_sft`: a world built earlier whose options differ from `config` in LABEL_OPTIONS only; its SFT
    policy is copied instead of trained again (the result is the same world, only faster)."""
    writers = {name: asdict(w) for name, w in {"demonstrator": DEMONSTRATOR, **OTHER_WRITERS}.items()}
    return _build_world(config, root, name="world", demonstrate=DEMONSTRATOR.write, make_pairs=build_pairs,
                        gold=gold_reward, describe=lambda demonstrations, meta: {"writers": writers},
                        reuse_sft=reuse_sft, log=log)


def _build_world(config: WorldConfig, root: str | Path, *, name: str,
                 demonstrate: Callable[[str, random.Random], str], make_pairs: Callable[..., tuple[list, list]],
                 gold: Callable[[str, str], float], describe: Callable[[list, list[dict]], dict],
                 reuse_sft: str | Path | None = None, log=print) -> World:
    """The steps every sorting-task world shares, so that its variants (:func:`build_world`,
    :func:`sera.worlds.filler.build_filler_world`) differ only in what they pass here and cannot drift apart.

    `demonstrate(prompt, rng)` writes one SFT demonstration; `make_pairs` has the signature of
    :func:`sera.worlds.preferences.build_pairs`; `gold` grades the demonstrations; `describe(demonstrations,
    meta)` gives the world's own fields of world.json; `name` starts the log lines. All randomness comes,
    in a fixed order, from one ``random.Random(config.seed)``: the same config gives the same files."""
    from sera.generation import SamplingParams, generate_completions
    from sera.models import build_char_tokenizer
    from sera.worlds.sft import prompt_ids

    config.validate()
    root = Path(root)
    rng = random.Random(config.seed)
    lengths = {"min_len": config.min_letters, "max_len": config.max_letters}
    test = sample_prompts(config.test_prompts, rng, **lengths)
    validation = sample_prompts(config.validation_prompts, rng, exclude=set(test), **lengths)
    pair_prompts = sample_prompts(config.pair_prompts, rng, exclude=set(test) | set(validation), **lengths)
    demo_prompts = sample_prompts(config.sft_demonstrations, rng, exclude=set(test) | set(validation), **lengths)
    demonstrations = [(p, demonstrate(p, rng)) for p in demo_prompts]

    tokenizer = build_char_tokenizer(ALPHABET)
    model, losses, sft_seconds = _sft_policy(config, root, tokenizer, demonstrations, reuse_sft, name, log)
    params = SamplingParams(num_samples=4, temperature=config.sft_sample_temperature, top_p=1.0,
                            max_new_tokens=2 * config.max_letters + 4)
    samples = generate_completions(model, tokenizer, [prompt_ids(tokenizer, p) for p in pair_prompts], params,
                                   batch_size=256, seed=config.seed, description="sampling SFT responses")
    pairs, meta = make_pairs(pair_prompts, [[c.text for c in s] for s in samples], off_policy=config.off_policy,
                             noise=config.noise, length_bias=config.length_bias, rng=rng)
    write_jsonl(root / "pairs.jsonl", pairs)
    write_jsonl(root / "pairs_meta.jsonl", meta)
    write_json(root / "prompts.json", {"validation": validation, "test": test})
    summary = {
        "config": asdict(config),
        "sft_seconds": sft_seconds,
        "sft_final_loss": losses[-1],
        "demonstration_gold": float(np.mean([gold(p, r) for p, r in demonstrations])),
        "pairs": len(pairs),
        "pairs_summary": pairs_summary(meta),
        **describe(demonstrations, meta),
    }
    write_json(root / "world.json", summary)
    return World(root, config, validation, test)


def _sft_policy(config: WorldConfig, root: Path, tokenizer, demonstrations: list, reuse_sft, name: str, log):
    """The world's SFT policy: trained from scratch on the demonstrations, or copied from `reuse_sft` (a world of
    the same seed and SFT options; loaded onto the CPU, where a fresh one samples). Returns it, its losses and
    the seconds its training took."""
    import shutil

    from sera.models import build_tiny_llama, load_model, save_model
    from sera.worlds.sft import train_sft

    start = time.perf_counter()
    donor = json.loads((Path(reuse_sft) / "world.json").read_text(encoding="utf-8")) if reuse_sft else None
    if donor and _sft_options(donor["config"]) == _sft_options(asdict(config)):
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(reuse_sft) / "sft", root / "sft", dirs_exist_ok=True)
        model = load_model(str(root / "sft"), dtype="float32").to("cpu")
        log(f"{name} seed {config.seed}: SFT policy copied from {Path(reuse_sft).name} (same seed and options)")
        return model, [donor["sft_final_loss"]], donor["sft_seconds"]
    model = build_tiny_llama(tokenizer, hidden_size=config.hidden_size, layers=config.layers,
                             heads=config.heads, max_positions=64, seed=config.seed)
    losses = train_sft(model, tokenizer, demonstrations, steps=config.sft_steps,
                       batch_size=config.sft_batch_size, learning_rate=config.sft_learning_rate, seed=config.seed)
    save_model(model, tokenizer, root / "sft")
    sft_seconds = time.perf_counter() - start
    log(f"{name} seed {config.seed}: SFT policy trained from scratch in {sft_seconds:.0f}s "
        f"({sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters, final loss {losses[-1]:.3f})")
    return model, losses, sft_seconds


def _sft_options(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in LABEL_OPTIONS}


def pairs_summary(meta: list[dict]) -> dict:
    """Rates of the hidden truth over a set of pairs (flipped, length-driven, label right by gold, sources)."""
    if not meta:
        return {"n": 0}
    decided = [m for m in meta if m["label_agrees_with_gold"] is not None]
    sources = {}
    for m in meta:
        key = "+".join(sorted((m["chosen_source"], m["rejected_source"])))
        sources[key] = sources.get(key, 0) + 1
    return {
        "n": len(meta),
        "flipped": float(np.mean([m["flipped"] for m in meta])),
        "length_driven": float(np.mean([m["length_driven"] for m in meta])),
        "label_agrees_with_gold": float(np.mean([m["label_agrees_with_gold"] for m in decided])) if decided else None,
        "gold_ties": len(meta) - len(decided),
        "chosen_longer": float(np.mean([m["len_chosen"] > m["len_rejected"] for m in meta])),
        "sources": sources,
    }


__all__ = ["World", "WorldConfig", "build_world", "pairs_summary"]

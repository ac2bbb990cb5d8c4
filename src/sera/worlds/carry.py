"""World C: column addition with carries -- a task family unlike sorting, with its own prompt stream.

Made for a preregistered test (docs/preregistration.md): a gold world that no `sera` option was chosen in.
It differs from the sorting worlds (:mod:`sera.worlds`, :mod:`sera.worlds.filler`) in what matters:

- **Task**: add two numbers of up to three digits. Digits are zero-padded to fixed columns and written
  least-significant first, so that a left-to-right model can carry as it writes: ``"740+580="`` is
  047 + 085, and the answer ``"2310"`` is 0132. The answer depends on
  both operands digit by digit (a carry links neighbouring columns), not on a multiset of letters.
- **Gold reward**, checked by code: ``0.5 ** edit_distance(response, answer)``, where ``answer`` is the sum
  computed by Python's integers. 1 for the right sum; each wrong, missing or extra digit halves it.
- **Writers** make the task's own mistake: a **forgotten carry** (one column written without the carry that
  came into it), besides dropped, repeated and replaced digits. The SFT demonstrator forgets carries most;
  the off-policy "strong" and "weak" writers mostly repeat digits (their answers run long, which the
  annotator's length bias rewards).
- **Prompts** come from their own stream, ``random.Random("sera.worlds.carry:<seed>")`` (Python seeds a
  string through SHA-512, so it is fixed across processes and unrelated to ``Random(seed)``, the stream of
  worlds A and B); the SFT model's initialisation and sampling seeds are derived from the same string.

`build_carry_world` writes the files of :func:`sera.worlds.build_world` (``sft/``, ``pairs.jsonl``,
``pairs_meta.jsonl``, ``prompts.json``, ``world.json``), so ``sera train`` and the benchmarks read it alike.
The gold reward for `sera eval` / ``--bootstrap-labeller judge:``: ``gold:sera.worlds.carry:gold_reward``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sera.io import write_json, write_jsonl
from sera.worlds import World, WorldConfig, pairs_summary
from sera.worlds.preferences import Annotator
from sera.worlds.sorting import edit_distance

DIGITS = "0123456789"
PLUS, EQUALS = "+", "="
ALPHABET = DIGITS + PLUS + EQUALS
GOLD_SPEC = "gold:sera.worlds.carry:gold_reward"
STREAM = "sera.worlds.carry"


def stream_seed(seed: int) -> str:
    """The string that seeds this world's random stream (never ``Random(seed)``: that is worlds A and B's)."""
    return f"{STREAM}:{seed}"


def derived_int(seed: int, purpose: str) -> int:
    """An integer seed for `purpose` (model initialisation, sampling), derived from this world's stream."""
    return int.from_bytes(hashlib.sha256(f"{stream_seed(seed)}:{purpose}".encode()).digest()[:4], "big")


def make_prompt(a: int, b: int, width: int = 3) -> str:
    """``a + b``, each operand zero-padded to `width` digits and written least-significant digit first:
    make_prompt(47, 85) == "740+580=". (Fixed columns let a two-layer model line the digits up.)"""
    return str(a).zfill(width)[::-1] + PLUS + str(b).zfill(width)[::-1] + EQUALS


def operands(prompt: str) -> tuple[int, int]:
    left, _, right = prompt.removesuffix(EQUALS).partition(PLUS)
    return int(left[::-1]), int(right[::-1])


def solve(prompt: str) -> str:
    """The right answer: the sum, zero-padded to one digit more than the operands, least-significant first
    (solve("740+580=") == "2310", i.e. 0132)."""
    a, b = operands(prompt)
    width = len(prompt.partition(PLUS)[0])
    return str(a + b).zfill(width + 1)[::-1]


def gold_reward(prompt: str, response: str) -> float:
    """How correct `response` is for `prompt`, in [0, 1]: 0.5 ** (edit distance to the right sum)."""
    return 0.5 ** edit_distance(response, solve(prompt))


def carry_columns(prompt: str) -> list[int]:
    """Positions (least-significant first) of the answer's digits that a carry flowed into."""
    a, b = operands(prompt)
    columns, carry = [], 0
    for position in range(len(solve(prompt))):
        if carry:
            columns.append(position)
        carry = (a % 10 + b % 10 + carry) // 10
        a, b = a // 10, b // 10
    return columns


def sample_prompts(count: int, rng: random.Random, *, min_digits: int = 1, max_digits: int = 3,
                   exclude: set[str] | None = None) -> list[str]:
    """`count` distinct prompts (none in `exclude`); each operand's digit count uniform in [min, max], written
    zero-padded to `max_digits`."""
    seen = set(exclude or ())
    prompts: list[str] = []
    while len(prompts) < count:
        numbers = []
        for _ in range(2):
            digits = rng.randint(min_digits, max_digits)
            numbers.append(rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1))
        prompt = make_prompt(*numbers, width=max_digits)
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


ERROR_KINDS = ("carry", "drop", "stutter", "substitute")
"""carry: one column written without the carry that came into it (its digit one too small); drop: a digit
left out; stutter: a digit written twice; substitute: a digit replaced."""


def corrupt(prompt: str, num_errors: int, weights: dict[str, float], rng: random.Random) -> str:
    """The right answer to `prompt` with `num_errors` mistakes, each of a kind drawn with `weights`."""
    text = list(solve(prompt))
    carries = carry_columns(prompt)
    kinds = [k for k in ERROR_KINDS if weights.get(k, 0) > 0]
    for _ in range(num_errors):
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        if kind == "carry" and not carries:
            kind = "substitute"
        if not text:
            kind = "stutter"
        if kind == "carry":
            column = carries.pop(rng.randrange(len(carries)))
            if column < len(text):
                text[column] = str((int(text[column]) - 1) % 10)
        elif kind == "stutter":
            if not text:
                text.append(rng.choice(DIGITS))
            else:
                i = rng.randrange(len(text))
                text.insert(i, text[i])
        elif kind == "drop":
            del text[rng.randrange(len(text))]
        else:
            i = rng.randrange(len(text))
            text[i] = rng.choice([c for c in DIGITS if c != text[i]])
    return "".join(text)


@dataclass(frozen=True)
class CarryWriter:
    """A programmatic writer: the right sum with a random number of mistakes of its kinds."""

    name: str
    error_counts: tuple[float, ...]  # P(0 mistakes), P(1), ...
    kinds: tuple[tuple[str, float], ...]

    def write(self, prompt: str, rng: random.Random) -> str:
        num_errors = rng.choices(range(len(self.error_counts)), weights=self.error_counts)[0]
        return corrupt(prompt, num_errors, dict(self.kinds), rng)


DEMONSTRATOR = CarryWriter("demonstrator", (0.4, 0.3, 0.2, 0.1),
                           (("carry", 0.5), ("drop", 0.15), ("stutter", 0.1), ("substitute", 0.25)))
"""Writes the SFT demonstrations: right 40% of the time; its typical mistake is a forgotten carry."""
STRONG = CarryWriter("strong", (0.7, 0.2, 0.1), (("carry", 0.1), ("stutter", 0.6), ("substitute", 0.3)))
WEAK = CarryWriter("weak", (0.1, 0.3, 0.3, 0.2, 0.1), (("carry", 0.1), ("stutter", 0.6), ("substitute", 0.3)))
OTHER_WRITERS = {"strong": STRONG, "weak": WEAK}


def build_carry_pairs(prompts: list[str], sft_samples: list[list[str]], *, off_policy: float, noise: float,
                      length_bias: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Offline pairs and their hidden truth, as :func:`sera.worlds.preferences.build_pairs` makes them (same
    annotator: label noise, length bias), with this world's writers and gold reward."""
    annotator = Annotator(noise=noise, length_bias=length_bias, rng=rng, gold=gold_reward)
    pairs, meta = [], []
    for index, (prompt, samples) in enumerate(zip(prompts, sft_samples)):
        first = samples[0]
        if rng.random() < off_policy:
            other_source = rng.choice(sorted(OTHER_WRITERS))
            writer = OTHER_WRITERS[other_source]
            second = next((r for r in (writer.write(prompt, rng) for _ in range(8)) if r != first), None)
        else:
            other_source = "sft"
            second = next((s for s in samples[1:] if s != first), None)
        if second is None:
            continue
        sources = {first: "sft", second: other_source}
        label = annotator.label(prompt, *((first, second) if rng.random() < 0.5 else (second, first)))
        pair_id = f"pair-{index:05d}"
        pairs.append({"id": pair_id, "prompt": prompt, "chosen": label.chosen, "rejected": label.rejected})
        gold_chosen, gold_rejected = gold_reward(prompt, label.chosen), gold_reward(prompt, label.rejected)
        meta.append({
            "id": pair_id, "flipped": label.flipped, "length_driven": label.length_driven,
            "chosen_source": sources[label.chosen], "rejected_source": sources[label.rejected],
            "gold_chosen": gold_chosen, "gold_rejected": gold_rejected,
            "label_agrees_with_gold": gold_chosen > gold_rejected if gold_chosen != gold_rejected else None,
            "len_chosen": len(label.chosen), "len_rejected": len(label.rejected),
        })
    return pairs, meta


@dataclass(frozen=True)
class CarryWorldConfig(WorldConfig):
    """World C's options: WorldConfig's (sizes, noise, length bias, off-policy share, model), plus the
    operands' digit counts (`min_letters`/`max_letters` are not used here)."""

    min_digits: int = 1
    max_digits: int = 3


def build_carry_world(config: CarryWorldConfig, root: str | Path, *, log=print) -> World:
    """Make world C in `root`: SFT policy from scratch on the demonstrator's sums, offline pairs, held-out prompts.

    Every random choice comes from this world's own stream (:func:`stream_seed`), in a fixed order."""
    from sera.generation import SamplingParams, generate_completions
    from sera.models import build_char_tokenizer, build_tiny_llama, save_model
    from sera.worlds.sft import prompt_ids, train_sft

    config.validate()
    root = Path(root)
    rng = random.Random(stream_seed(config.seed))
    digits = {"min_digits": config.min_digits, "max_digits": config.max_digits}
    test = sample_prompts(config.test_prompts, rng, **digits)
    validation = sample_prompts(config.validation_prompts, rng, exclude=set(test), **digits)
    held_out = set(test) | set(validation)
    pair_prompts = sample_prompts(config.pair_prompts, rng, exclude=held_out, **digits)
    demo_prompts = sample_prompts(config.sft_demonstrations, rng, exclude=held_out, **digits)
    demonstrations = [(p, DEMONSTRATOR.write(p, rng)) for p in demo_prompts]

    start = time.perf_counter()
    tokenizer = build_char_tokenizer(ALPHABET)
    model = build_tiny_llama(tokenizer, hidden_size=config.hidden_size, layers=config.layers, heads=config.heads,
                             max_positions=64, seed=derived_int(config.seed, "model"))
    losses = train_sft(model, tokenizer, demonstrations, steps=config.sft_steps, batch_size=config.sft_batch_size,
                       learning_rate=config.sft_learning_rate, seed=derived_int(config.seed, "sft"))
    root.mkdir(parents=True, exist_ok=True)
    save_model(model, tokenizer, root / "sft")
    sft_seconds = time.perf_counter() - start
    log(f"carry world seed {config.seed}: SFT policy trained from scratch in {sft_seconds:.0f}s "
        f"({sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters, final loss {losses[-1]:.3f})")

    params = SamplingParams(num_samples=4, temperature=config.sft_sample_temperature, top_p=1.0,
                            max_new_tokens=config.max_digits + 6)
    samples = generate_completions(model, tokenizer, [prompt_ids(tokenizer, p) for p in pair_prompts], params,
                                   batch_size=256, seed=derived_int(config.seed, "samples"),
                                   description="sampling SFT responses")
    pairs, meta = build_carry_pairs(pair_prompts, [[c.text for c in s] for s in samples],
                                    off_policy=config.off_policy, noise=config.noise,
                                    length_bias=config.length_bias, rng=rng)
    write_jsonl(root / "pairs.jsonl", pairs)
    write_jsonl(root / "pairs_meta.jsonl", meta)
    write_json(root / "prompts.json", {"validation": validation, "test": test})
    write_json(root / "world.json", {
        "config": asdict(config), "world": "carry", "gold": GOLD_SPEC, "stream": stream_seed(config.seed),
        "sft_seconds": sft_seconds, "sft_final_loss": losses[-1],
        "demonstration_gold": float(np.mean([gold_reward(p, r) for p, r in demonstrations])),
        "pairs": len(pairs), "pairs_summary": pairs_summary(meta),
        "writers": {w.name: asdict(w) for w in (DEMONSTRATOR, STRONG, WEAK)},
    })
    return World(root, config, validation, test)


def load_carry_world(root: str | Path) -> World:
    """A world :func:`build_carry_world` made earlier."""
    root = Path(root)
    info = json.loads((root / "world.json").read_text(encoding="utf-8"))
    prompts = json.loads((root / "prompts.json").read_text(encoding="utf-8"))
    return World(root, CarryWorldConfig(**info["config"]), prompts["validation"], prompts["test"])


__all__ = ["ALPHABET", "GOLD_SPEC", "CarryWorldConfig", "build_carry_world", "carry_columns", "corrupt",
           "gold_reward", "load_carry_world", "make_prompt", "sample_prompts", "solve", "stream_seed"]

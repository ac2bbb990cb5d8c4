"""Shared fixtures: a tiny Llama-style model and a character tokenizer, built in code (nothing downloaded)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from pathlib import Path

# The suite is a CPU suite: its expected numbers are fp32 numbers, and many tests build models in-process
# that TRL's trainer would move to a GPU when one is visible. So it hides GPUs (before torch starts CUDA),
# also from the CLI runs it spawns. SERA_TEST_GPU=1 leaves them visible (see docs/scale.md: on an H200 the
# CLI tests pass that way, and 13 in-process numeric tests do not).
if os.environ.get("SERA_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("SERA_NO_PROGRESS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

ALPHABET = "abcdefghijklmnopqrstuvwxyz ?.,!"
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _import_benchmark(filename: str):
    """Import a script of `benchmarks/` as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"sera_benchmark_{Path(filename).stem}", BENCHMARKS / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """`load_benchmark("perf.py")` imports that script of `benchmarks/`."""
    return _import_benchmark


@pytest.fixture(scope="session")
def tokenizer():
    from sera.models import build_char_tokenizer

    return build_char_tokenizer(ALPHABET)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """An SFT stand-in: a random tiny Llama saved with its tokenizer."""
    from sera.models import build_tiny_llama, save_model

    path = tmp_path_factory.mktemp("models") / "tiny-sft"
    save_model(build_tiny_llama(tokenizer, seed=0), tokenizer, path)
    return path


def make_pairs(n: int = 16, seed: int = 0, chat: bool = False) -> list[dict]:
    """Pairs of a toy task: the chosen response reverses the prompt's word, the rejected one is noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word = "".join(rng.choice("abcde") for _ in range(4))
        prompt, chosen = f"reverse {word} ?", " " + word[::-1] + "."
        rejected = " " + "".join(rng.choice("xyz") for _ in range(rng.randint(1, 6))) + "."
        if chat:
            rows.append({"id": f"p{i}", "prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
        else:
            rows.append({"id": f"p{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def pair_rows(tokenizer, n: int) -> list[dict]:
    """Trainer rows (token ids + fixed reference log-probs) of `make_pairs(n)`, as SeRA hands them to TRL."""
    from sera.data import PreferencePair
    from sera.tokenization import PairTokenizer

    pairs = PairTokenizer(tokenizer, 64)
    tokens = [pairs.pair(PreferencePair(r["id"], r["prompt"], r["chosen"], r["rejected"])) for r in make_pairs(n)]
    return [{"prompt_ids": t.prompt_ids, "chosen_ids": t.chosen_ids, "rejected_ids": t.rejected_ids,
             "ref_chosen_logps": -20.0, "ref_rejected_logps": -18.0} for t in tokens]


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    return path


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", make_pairs(16))

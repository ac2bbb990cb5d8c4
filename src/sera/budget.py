"""Training budget: optimiser steps and pair passes, and the plain-DAA baseline at the budget of a SeRA run.

"Is self-review better than just training longer, on my data?" A SeRA run trains on bootstrapped pairs
on top of the offline ones, so it takes more steps than `iterations` epochs of the plain DAA.
`sera train --method daa --match-budget RUN_DIR` trains the plain DAA for as many optimiser steps as the
finished run in RUN_DIR took, on the same data, hold-out and schedule, and both runs' summary.json
record their budget (`sera report A B` shows them side by side).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sera.config import SeraConfig, read_recipe
from sera.errors import SeraInputError

SAME_RUN_OPTIONS = ("model", "gguf_file", "dataset", "dataset_split", "dataset_format", "seed", "validation_ratio",
                    "max_validation_pairs", "max_length", "daa", "beta", "simpo_margin", "learning_rate",
                    "batch_size", "grad_accum", "lr_scheduler_type", "warmup_ratio", "lora_r")
"""Options a budget-matched baseline must share with the run it matches: data, hold-out and schedule shape."""


@dataclass(frozen=True)
class Budget:
    optimizer_steps: int
    """Optimiser steps over the whole run (all iterations, all processes together)."""
    pair_passes: int
    """Preference pairs trained on, counted once per epoch that saw them."""

    def to_dict(self) -> dict:
        return asdict(self)


def budget_of(iterations: list[dict]) -> Budget:
    """A finished run's budget, from its summary's iteration records."""
    return Budget(optimizer_steps=sum(int(it.get("train_steps") or 0) for it in iterations),
                  pair_passes=sum(int(it.get("pair_passes", it.get("selected") or 0)) for it in iterations))


def plain_pair_passes(steps: int, num_pairs: int, pairs_per_step: int) -> int:
    """Pairs a plain pass over `num_pairs` trains on in `steps` optimiser steps of `pairs_per_step` pairs."""
    steps_per_epoch = math.ceil(num_pairs / pairs_per_step)
    full, rest = divmod(steps, steps_per_epoch)
    return full * num_pairs + min(num_pairs, rest * pairs_per_step)


def matched_budget(config: SeraConfig) -> tuple[Budget, str]:
    """The budget of the finished run `config.match_budget` names, checked to share data, hold-out and schedule
    with `config`; also the run directory, as recorded."""
    root = Path(config.match_budget)
    summary_path, config_path = root / "summary.json", root / "config.yaml"
    if not summary_path.exists() or not config_path.exists():
        raise SeraInputError(f"--match-budget {root}: not a finished `sera train` run (no summary.json/config.yaml)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SeraInputError(f"--match-budget {summary_path}: not valid JSON ({exc})") from exc
    other = read_recipe(config_path)
    differ = [name for name in SAME_RUN_OPTIONS if other.get(name) != getattr(config, name)]
    if differ:
        shown = ", ".join(f"--{n.replace('_', '-')} {getattr(config, n)!r} vs {other.get(n)!r}" for n in differ)
        raise SeraInputError(f"--match-budget {root}: the baseline must share that run's data, hold-out and "
                             f"schedule; these differ: {shown}")
    budget = budget_of(summary.get("iterations", []))
    if budget.optimizer_steps < 1:
        raise SeraInputError(f"--match-budget {root}: its summary.json records no optimiser steps")
    return budget, str(root)

"""Everything a resumed run needs beyond its saved iterates: one dataclass, saved and restored whole.

A field added here is saved and restored with no other change, so resume cannot forget it (the way
the SFT model's held-out responses, which a pairwise judge guard compares every iterate with, were
once kept only in memory and a resumed run with `--guard judge:llm:...` failed).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sera.errors import SeraInputError
from sera.io import write_json


@dataclass
class RunState:
    """Progress of one run, written atomically to `OUT/state.json` after every completed iteration."""

    completed: int = 0
    """Iterations finished and saved (iter_<t>/model exists for each)."""
    iterations: list[dict] = field(default_factory=list)
    """Each completed iteration's record, as summary.json lists them."""
    warnings: list[str] = field(default_factory=list)
    sft_review: dict = field(default_factory=dict)
    """Held-out diagnostics of the SFT model (iterate 0)."""
    guard_scores: dict[int, float] = field(default_factory=dict)
    """The iteration guard's score of each iterate reviewed so far (0 = the SFT model)."""
    sft_responses: list[str] | None = None
    """The SFT model's greedy responses to the held-out prompts: a pairwise judge guard compares each iterate's
    responses with these."""
    crossfit: dict[str, float] | None = None
    """selection_mode=crossfit: the out-of-fold margin of every offline pair, computed once."""
    lr_steps_done: int = 0
    """lr_schedule=run: optimiser steps taken so far in the run's one schedule."""
    lr_warmup_steps: int | None = None
    """lr_schedule=run: the run's warm-up, fixed when the first iteration planned it."""
    seconds: float = 0.0
    """Wall time of the run before this process (earlier processes of a resumed run)."""

    def save(self, path: Path) -> None:
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "RunState":
        try:
            values: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SeraInputError(f"{path}: cannot read the run's state ({exc})") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SeraInputError(f"{path}: written by another version of sera (unknown fields: "
                                 f"{', '.join(unknown)}); start a new run")
        values["guard_scores"] = {int(k): v for k, v in values.get("guard_scores", {}).items()}
        return cls(**values)

"""Where a run writes what it decided, so a user can see why any pair was kept or dropped.

    OUT/config.yaml            the resolved options
    OUT/metrics.jsonl          trainer logs, and one line per iteration
    OUT/iter_<t>/selection.jsonl   every pool pair: id, source, margin, selected
    OUT/iter_<t>/generated.jsonl   bootstrapped pairs with their rewards
    OUT/iter_<t>/model/        the iterate after iteration t
    OUT/final/                 the model the run returns
    OUT/summary.json           per-iteration counts, margins, timings, losses
    OUT/state.json             progress so far, for `sera train --resume OUT`
    OUT/optimizer.safetensors  --carry-optimizer: the last iteration's optimizer state, for a resume
"""

from __future__ import annotations

from pathlib import Path


class RunDirectory:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def state(self) -> Path:
        """What a resumed run restores: completed iterations, their summaries, guard scores."""
        return self.root / "state.json"

    @property
    def optimizer(self) -> Path:
        """--carry-optimizer: the optimizer state after the last completed iteration (one file, overwritten)."""
        return self.root / "optimizer.safetensors"

    @property
    def final_model(self) -> Path:
        return self.root / "final"

    def iteration(self, t: int) -> Path:
        return self.root / f"iter_{t}"

    def model(self, t: int) -> Path:
        return self.iteration(t) / "model"

    def selection(self, t: int) -> Path:
        return self.iteration(t) / "selection.jsonl"

    def generated(self, t: int) -> Path:
        return self.iteration(t) / "generated.jsonl"

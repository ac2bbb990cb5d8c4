"""What each step of an iteration decided, as typed values, and the iteration's record built from them.

Every step returns one of these; nothing else passes between steps. An iteration's line in summary.json
(and metrics.jsonl, and the tracker) is :meth:`IterationRecord.to_dict` of the steps' results, so each
field there has exactly one producer, named here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sera.examples import Example


class StepResult(Protocol):
    seconds_scoring: float

    def summary(self) -> dict[str, Any]:
        """This step's fields of the iteration's record."""


@dataclass
class Bootstrapped:
    """Component 2: pairs of the policy's own samples, best vs worst by the labeller."""

    examples: list[Example]
    prompts: int
    skipped: dict[str, int]
    labeller: str
    sample_tokens_mean: float
    displacement_corr: float | None
    """Implicit labellers only: within-prompt rank correlation of the implicit reward with reference likelihood."""
    seconds_generating: float
    seconds_scoring: float

    def summary(self) -> dict[str, Any]:
        record = {"generated": len(self.examples), "bootstrap_prompts": self.prompts,
                  "bootstrap_skipped": self.skipped, "labeller": self.labeller,
                  "sample_tokens_mean": self.sample_tokens_mean, "seconds_generating": self.seconds_generating}
        if self.labeller == "implicit" or self.labeller.startswith("blend:"):
            record["displacement_corr"] = self.displacement_corr
        return record


@dataclass
class Selection:
    """Components 1 + 3: the pool ranked by the IRM of the ensembled reward, and the top K kept."""

    kept: list[Example]
    pool_size: int
    margins_kept_mean: float | None
    margins_dropped_mean: float | None
    kept_stats: dict[str, Any]
    """Who was kept: bootstrapped share, response lengths of kept and dropped pairs."""
    seconds_scoring: float
    seconds_crossfit: float | None = None

    def summary(self) -> dict[str, Any]:
        record = {"pool_size": self.pool_size, "selected": len(self.kept), "dropped": self.pool_size - len(self.kept),
                  "mean_margin_selected": self.margins_kept_mean, "mean_margin_dropped": self.margins_dropped_mean,
                  **self.kept_stats}
        if self.seconds_crossfit is not None:
            record["seconds_crossfit"] = self.seconds_crossfit
        return record


@dataclass
class Trained:
    """theta_t: one training pass (an epoch of an iteration, or a plain-DAA run's epochs)."""

    pairs: int
    steps: int
    final_loss: float
    seconds_training: float
    seconds_scoring: float
    """Scoring the reference log-probs the trainer is handed."""
    epochs: int | None = None
    """Plain DAA only: the epochs of its one pass."""
    pair_passes: int | None = None
    """Plain DAA only: pairs trained on, counted once per epoch that saw them."""

    def summary(self) -> dict[str, Any]:
        record: dict[str, Any] = {"seconds_training": self.seconds_training, "train_steps": self.steps,
                                  "final_loss": self.final_loss}
        if self.epochs is not None:
            record["epochs"] = self.epochs
        if self.pair_passes is not None:
            record["pair_passes"] = self.pair_passes
        return record


@dataclass
class Review:
    """Held-out diagnostics of an iterate (sera.review) and the guard's score of it."""

    values: dict[str, float]
    seconds_reviewing: float = 0.0
    seconds_scoring: float = 0.0

    def summary(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass
class IterationRecord:
    """One iteration's line of summary.json: its number and what each of its steps returned."""

    iteration: int
    steps: list[StepResult] = field(default_factory=list)
    trained: Trained | None = None
    review: Review | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"iteration": self.iteration}
        for step in self.steps:
            record.update(step.summary())
        if self.trained is not None:  # a pass without selection trained on its whole pool
            record.setdefault("pool_size", self.trained.pairs)
            record.setdefault("selected", self.trained.pairs)
            record.update(self.trained.summary())
        if self.review is not None:
            record.update(self.review.summary())
            record["seconds_reviewing"] = self.review.seconds_reviewing
        parts = [*self.steps, *([self.trained] if self.trained else [])]
        record["seconds_scoring"] = sum(p.seconds_scoring for p in parts)
        record.setdefault("seconds_generating", 0.0)
        return record

"""`SeraTrainer`: SeRA from Python, shaped like TRL's trainers.

    from sera import SeraConfig, SeraTrainer

    trainer = SeraTrainer(model=model, args=SeraConfig(output_dir="runs/sera", iterations=3),
                          train_dataset=dataset, processing_class=tokenizer)
    summary = trainer.train()          # the same run directory and summary.json as `sera train`

`sera train` is this class behind a command line. `model` may be a loaded `PreTrainedModel` (or a PEFT
model, used with its adapter merged in as the SFT model) or a folder / hub id; `train_dataset` a
`datasets.Dataset`, a list of dicts, or a path, in any format `sera train --dataset` reads.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sera.config import SeraConfig
from sera.errors import SeraInputError


class SeraTrainer:
    """Runs Algorithm 1 (or a baseline, `args.method`) and writes `args.output_dir`."""

    def __init__(self, model: Any, args: SeraConfig, train_dataset: Any,
                 processing_class: Any = None) -> None:
        if not isinstance(args, SeraConfig):
            raise SeraInputError(f"args must be a SeraConfig (got {type(args).__name__})")
        self.model = model
        self.train_dataset = train_dataset
        self.processing_class = processing_class
        self.args = dataclasses.replace(args, model=_model_name(model, args),
                                        dataset=_dataset_name(train_dataset, args)).validate()

    def train(self, resume: bool = False) -> dict:
        """Train, write the run directory, and return the run summary (summary.json's contents).

        With `resume`, continue the run in `args.output_dir` after its last completed iteration (pass the
        same model and data as the first time)."""
        from sera.loop import RunInputs, run

        rows = None if isinstance(self.train_dataset, (str, Path)) else self.train_dataset
        if isinstance(self.model, (str, Path)):
            return run(self.args, resume=resume, inputs=RunInputs(tokenizer=self.processing_class, rows=rows))
        scratch = Path(tempfile.mkdtemp(prefix="sera-sft-model-"))
        try:  # the run reloads the SFT weights (reference, fresh fold copies): keep them in a folder for its life
            _sft_weights(self.model).save_pretrained(scratch, safe_serialization=True)
            tokenizer = self.processing_class
            if tokenizer is None:
                raise SeraInputError("a model given in memory needs its tokenizer: pass processing_class=")
            return run(self.args, resume=resume,
                       inputs=RunInputs(model_path=str(scratch), tokenizer=tokenizer, rows=rows))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _model_name(model: Any, args: SeraConfig) -> str:
    """What config.yaml records as the model: the path or hub id it came from."""
    if isinstance(model, (str, Path)):
        return str(model)
    if args.model:
        return args.model
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return name or f"<in memory: {type(model).__name__}>"


def _dataset_name(dataset: Any, args: SeraConfig) -> str:
    if isinstance(dataset, (str, Path)):
        return str(dataset)
    if dataset is None:
        raise SeraInputError("train_dataset is required")
    return args.dataset or f"<in memory: {type(dataset).__name__}, {len(dataset)} rows>"


def _sft_weights(model: Any) -> Any:
    """The SFT model to start from: a PEFT model's adapter merged into a copy of its base."""
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        import copy

        return copy.deepcopy(model).merge_and_unload()
    return model

"""`sera sft`: supervised fine-tuning with TRL's SFTTrainer, the step before SeRA (the paper: UltraChat-200K).

Data: one row per example, either a chat (`messages`: a list of `{"role", "content"}`, as in
UltraChat-200K, whose splits `train_sft`/`test_sft` are picked by default) or a prompt/completion
pair (`prompt` + `completion`, strings or message lists). Conversations are trained on every token
(TRL's default for conversational data); prompt/completion rows on the completion only.
The output directory is a plain model folder (weights + tokenizer + `sft_summary.json`), ready for
`sera train --model OUT`. With LoRA the adapter is merged before saving.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import SchedulerType

from sera import run_lock
from sera import tracking  # [tracking hook]
from sera.errors import SeraInputError, SeraRuntimeError
from sera.io import write_json

SFT_SPLIT = "train_sft"


@dataclass
class SFTOptions:
    """Options of `sera sft` (the CLI flags, one for one)."""

    model: str
    dataset: str
    output_dir: str
    dataset_split: str | None = None
    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    max_samples: int | None = None
    logging_steps: int = 10
    seed: int = 42
    dtype: str = "auto"
    gguf_file: str | None = None
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    skip_invalid: bool = False
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_target_modules: str | None = None
    report_to: str = "none"  # [tracking hook] transformers' report_to (sera.tracking.sft_args)


@dataclass
class SFTData:
    rows: list[dict]
    kind: str  # "messages" or "prompt-completion"
    rows_read: int
    skipped: Counter


def load_sft_rows(source: str, *, split: str | None = None, skip_invalid: bool = False,
                  max_samples: int | None = None) -> SFTData:
    """Read and validate SFT examples (file, `save_to_disk` folder or hub id); errors name file, row, field."""
    from sera.data import _read_rows

    raw = _read_rows(source, split, "sft")
    rows, kind, skipped, read = [], None, Counter(), 0
    for line, row in raw:
        if max_samples is not None and len(rows) >= max_samples:
            break
        read += 1
        where = f"{source}, row {line}"
        try:
            row_kind, clean = _parse_sft_row(row, where)
            if kind is None:
                kind = row_kind
            elif row_kind != kind:
                raise SeraInputError(f"{where}: a {row_kind} row in a {kind} dataset (use one schema throughout)")
        except SeraInputError:
            if not skip_invalid:
                raise
            skipped["invalid"] += 1
            continue
        rows.append(clean)
    if not rows:
        raise SeraInputError(f"{source}: no usable SFT examples ({read} rows read, skipped: {dict(skipped) or 'none'})")
    return SFTData(rows=rows, kind=kind, rows_read=read, skipped=skipped)


def _parse_sft_row(row: Any, where: str) -> tuple[str, dict]:
    reason = getattr(row, "reason", None)
    if reason:
        raise SeraInputError(f"{where}: {reason}")
    if not isinstance(row, dict):
        raise SeraInputError(f"{where}: expected an object with `messages`, or `prompt` and `completion`")
    if "messages" in row and row["messages"] is not None:
        messages = row["messages"]
        if not (isinstance(messages, list) and messages and all(_is_message(m) for m in messages)):
            raise SeraInputError(f"{where}: field 'messages' must be a non-empty list of "
                                 "{'role': str, 'content': str} messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise SeraInputError(f"{where}: field 'messages' has no assistant turn to learn from")
        return "messages", {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    for name in ("prompt", "completion"):
        if name not in row or row[name] is None:
            raise SeraInputError(f"{where}: field {name!r} is missing (or give `messages`)")
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion.strip():
            raise SeraInputError(f"{where}: field 'completion' is empty")
        return "prompt-completion", {"prompt": prompt, "completion": completion}
    for name, value in (("prompt", prompt), ("completion", completion)):
        if not (isinstance(value, list) and value and all(_is_message(m) for m in value)):
            raise SeraInputError(f"{where}: field {name!r} must be a string or a non-empty message list, "
                                 "like the other field")
    return "prompt-completion", {"prompt": prompt, "completion": completion}


def _is_message(message: Any) -> bool:
    return (isinstance(message, dict) and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str))


def run_sft(options: SFTOptions) -> dict:
    """Fine-tune `options.model` on the dataset and save it (atomically) to `options.output_dir`."""
    _validate(options)
    out = Path(options.output_dir)
    _check_new_output_dir(out)  # before locking, so a finished model's directory is left as it is
    with run_lock.hold(out):
        _check_new_output_dir(out)  # again under the lock: another `sera sft` may have just finished there
        return _run_sft(options, out)


def _check_new_output_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(p.name != run_lock.LOCK_NAME for p in out.iterdir())):
        raise SeraInputError(f"--output-dir {out}: exists and is not empty; choose a new directory")


def _run_sft(options: SFTOptions, out: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from sera.models import load_model, load_tokenizer, lora_config, save_model

    start = time.perf_counter()
    data = load_sft_rows(options.dataset, split=options.dataset_split, skip_invalid=options.skip_invalid,
                         max_samples=options.max_samples)
    tokenizer = load_tokenizer(options.model, trust_remote_code=options.trust_remote_code,
                               gguf_file=options.gguf_file)
    conversational = data.kind == "messages" or isinstance(data.rows[0].get("prompt"), list)
    if conversational and not tokenizer.chat_template:
        raise SeraInputError(f"{options.model}: the tokenizer has no chat template, which conversational SFT "
                             "data needs (use prompt/completion strings, or a model with a chat template)")
    model = load_model(options.model, dtype=options.dtype, trust_remote_code=options.trust_remote_code,
                       gguf_file=options.gguf_file)
    peft_config = None
    if options.lora_r:
        peft_config = lora_config(options.lora_r, options.lora_alpha, options.lora_dropout,
                                  options.lora_target_modules)
    use_bf16 = options.dtype in ("bfloat16", "bf16") or (
        options.dtype == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    with tempfile.TemporaryDirectory(prefix="sera-sft-") as scratch, tracking.sft_environment(out, options.report_to):
        args = SFTConfig(
            output_dir=scratch, num_train_epochs=options.epochs, max_steps=options.max_steps,
            per_device_train_batch_size=options.batch_size, gradient_accumulation_steps=options.grad_accum,
            learning_rate=options.learning_rate, lr_scheduler_type=options.lr_scheduler_type,
            warmup_steps=options.warmup_ratio, max_length=options.max_length,
            gradient_checkpointing=options.gradient_checkpointing, bf16=use_bf16, fp16=False,
            logging_steps=options.logging_steps, save_strategy="no", seed=options.seed,
            data_seed=options.seed, dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
            packing=False, disable_tqdm=False, **tracking.sft_args(out, options.report_to),  # [tracking hook]
        )
        try:
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data.rows),
                                 processing_class=tokenizer, peft_config=peft_config)
        except (ValueError, KeyError) as exc:
            raise SeraInputError(f"{options.dataset}: TRL's SFTTrainer rejected the data ({exc})") from exc
        output = trainer.train()
    loss = float(output.training_loss)
    if not math.isfinite(loss):
        raise SeraRuntimeError(f"SFT training loss is {loss}; nothing was saved")
    trained = trainer.model
    if options.lora_r:
        trained = trained.merge_and_unload()
    trained.eval()
    save_model(trained, tokenizer, out)
    tracking.sft_collect(out)  # [tracking hook] the tracker output, staged beside OUT, moves into it
    summary = {
        "model": options.model, "dataset": options.dataset, "data_kind": data.kind,
        "rows_read": data.rows_read, "examples": len(data.rows), "skipped": dict(data.skipped),
        "train_steps": output.global_step, "train_loss": loss,
        "log_history": trainer.state.log_history, "seconds_total": time.perf_counter() - start,
        "options": asdict(options),
    }
    write_json(out / "sft_summary.json", summary)
    return summary


_SCHEDULERS = tuple(kind.value for kind in SchedulerType)
"""transformers' learning-rate schedules, checked before any work (the trainer would fail only after loading)."""


def _validate(options: SFTOptions) -> None:
    checks = [
        (options.learning_rate > 0, "--learning-rate must be positive"),
        (options.epochs > 0 or options.max_steps > 0, "--epochs (or --max-steps) must be positive"),
        (options.batch_size >= 1 and options.grad_accum >= 1, "--batch-size and --grad-accum must be at least 1"),
        (options.max_length >= 2, "--max-length must be at least 2"),
        (options.max_samples is None or options.max_samples >= 1, "--max-samples must be at least 1"),
        (0.0 <= options.warmup_ratio < 1.0, "--warmup-ratio must be in [0, 1)"),
        (options.lora_r is None or options.lora_r >= 1, "--lora-r must be at least 1"),
        (options.lr_scheduler_type in _SCHEDULERS, f"--lr-scheduler-type {options.lr_scheduler_type!r}: choose "
                                                   f"one of {', '.join(_SCHEDULERS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise SeraInputError(message)
    tracking.check_trackers(options.report_to)  # [tracking hook] exit 2, before any work

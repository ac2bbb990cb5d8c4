"""One DAA training pass with TRL's DPOTrainer, on SeRA's token ids and cached reference log-probs.

SeRA has already tokenized every pair (:mod:`sera.tokenization`, TRL's rules) and scored every
response under the reference (:mod:`sera.scoring`). The trainer below takes both as they are:
it skips its own tokenization and reference precompute, so the loss sees exactly the sequences
SeRA reviewed and the reference model need not sit in memory while training.

Under an engine that shards parameters (FSDP, DeepSpeed ZeRO-3) the trainer gets a copy of the
policy to shard, and the trained weights are gathered back into the whole policy at each epoch's
end (:class:`_GatherTrainedWeights`): every rank keeps one whole copy of the weights for SeRA's
scoring and sampling, while gradients and optimizer state stay sharded.
"""

from __future__ import annotations

import copy
import gc
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback
from transformers.trainer_pt_utils import get_parameter_names
from trl import DPOConfig, DPOTrainer

from sera import distributed
from sera.config import TrainConfig
from sera.daa import DAA
from sera.errors import SeraRuntimeError
from sera.io import append_jsonl
from sera.trl_compat import PretokenizedDPOTrainer, compact_lm_head, drop_autocast_wrapper

SeraDPOTrainer = PretokenizedDPOTrainer
"""TRL's DPOTrainer on SeRA's token ids and cached reference log-probs (its two private hooks: sera.trl_compat)."""


class LabelSmoothedDPOTrainer(SeraDPOTrainer):
    """SeraDPOTrainer whose rows also carry a per-pair `label_smoothing` eps (SPA's refined labels).

    Each pair's loss is the conservative (label-smoothed) DPO loss
        -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d),   d = log-ratio chosen - log-ratio rejected,
    which equals TRL's sigmoid loss -log sigmoid(beta d) plus eps * beta * d (as log sigmoid(-x) =
    log sigmoid(x) - x). TRL computes the first term, this class adds the second from the same forward pass
    (its summed response log-probs are read back from the model's output), so eps = 0 is TRL's loss exactly.
    TRL's own `label_smoothing` is one eps for every pair; this one is per pair. Plain DPO only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (self.loss_types != ["sigmoid"] or list(self.loss_weights) != [1.0] or self.f_divergence_type != "reverse_kl"
                or self.ld_alpha is not None or self.use_weighting or self.label_smoothing != 0.0):
            raise ValueError("per-pair label smoothing needs TRL's plain sigmoid (DPO) loss")
        self.data_collator = _WithLabelSmoothing(self.data_collator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        eps = inputs.pop("label_smoothing", None)
        if eps is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        captured = {}
        hook = model.register_forward_hook(lambda module, args, output: captured.setdefault("output", output))
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            hook.remove()
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = captured["output"].log_probs[:, -seq_len:].sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        delta = (chosen_logps - inputs["ref_chosen_logps"]) - (rejected_logps - inputs["ref_rejected_logps"])
        smoothing_term = (eps.to(delta.dtype) * self.beta * delta).mean()
        if return_outputs:
            return result[0] + smoothing_term, result[1]
        return result + smoothing_term


class _WithLabelSmoothing:
    """TRL's preference collator, plus a `label_smoothing` tensor when the rows carry one."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        if examples and "label_smoothing" in examples[0]:
            batch["label_smoothing"] = torch.tensor([float(e["label_smoothing"]) for e in examples])
        return batch


@dataclass(frozen=True)
class RunSchedule:
    """One learning-rate schedule across a run's iterations (`--lr-schedule run`): warm-up over the first
    `warmup` optimiser steps of the run, then `kind` decay to zero at step `total`. Each iteration's trainer
    follows it from step `offset` on, instead of warming up and decaying on its own."""

    kind: str
    warmup: int
    total: int
    offset: int = 0

    def multiplier(self, step: int) -> float:
        """Learning-rate factor at the trainer's `step` (0-based, within this iteration)."""
        run_step = self.offset + step
        if run_step < self.warmup:
            return run_step / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (run_step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine


def optimiser_steps(config: TrainConfig, epochs: int, num_rows: int) -> int:
    """Optimiser steps of a pass over `num_rows` pairs (all processes together)."""
    per_step = config.batch_size * distributed.world_size()
    return epochs * math.ceil(math.ceil(num_rows / per_step) / config.grad_accum)


@dataclass
class TrainResult:
    final_loss: float
    steps: int
    seconds: float


class _MetricsToJsonl(TrainerCallback):
    def __init__(self, path: Path, iteration: int | str) -> None:
        self.path, self.iteration = path, iteration

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            append_jsonl(self.path, {"iteration": self.iteration, "step": state.global_step, **logs})


def dpo_config(config: TrainConfig, daa: DAA, epochs: int, output_dir: str, num_rows: int | None = None,
               max_steps: int | None = None) -> DPOConfig:
    """The TRL config for one pass (`max_steps`, when given, ends it earlier or later than `epochs`);
    CPU-friendly (fp32, no checkpointing) unless asked otherwise."""
    use_bf16 = config.dtype in ("bfloat16", "bf16") or (
        config.dtype == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if max_steps is not None:
        warmup = int(config.warmup_ratio * max_steps)
    else:
        warmup = config.warmup_ratio if num_rows is None else warmup_steps(config, epochs, num_rows)
    with warnings.catch_warnings():  # TRL still sets the renamed `gradient_checkpointing` field itself
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
        args = _dpo_config(config, daa, epochs, output_dir, use_bf16, warmup)
    if max_steps is not None:
        args.max_steps = max_steps
    return args


def warmup_steps(config: TrainConfig, epochs: int, num_rows: int) -> int:
    """Warm-up as whole optimiser steps, rounded down: a pass of one or a few steps gets no warm-up.

    (A ratio is rounded up by transformers, so a one-step iteration would run its only step at
    learning rate 0 and leave the policy where it was.)"""
    return int(config.warmup_ratio * optimiser_steps(config, epochs, num_rows))


def _dpo_config(config: TrainConfig, daa: DAA, epochs: int, output_dir: str, use_bf16: bool,
                warmup: float) -> DPOConfig:
    return DPOConfig(
        output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=warmup, beta=config.beta,
        loss_type=[daa.loss_type], max_length=None, precompute_ref_log_probs=True,
        gradient_checkpointing=config.gradient_checkpointing, bf16=use_bf16, fp16=False,
        logging_steps=config.logging_steps, save_strategy="no", report_to=[], seed=config.seed,
        data_seed=config.seed, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )


def train_pass(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict],
               config: TrainConfig, daa: DAA, *, epochs: int, iteration: int | str, metrics_path: Path,
               callbacks: list[TrainerCallback] = (), schedule: RunSchedule | None = None,
               optimizer: torch.optim.Optimizer | None = None, max_steps: int | None = None) -> TrainResult:
    """Train `model` in place on `rows` (prompt_ids, chosen_ids, rejected_ids, ref_*_logps; with a
    `label_smoothing` column, DPO's per-pair label-smoothed loss, see :class:`LabelSmoothedDPOTrainer`),
    with the trainer's own warm-up and decay, or following the run-wide `schedule`. `optimizer` (the run's one
    optimizer, :func:`build_optimizer`, with `--carry-optimizer`) goes on from its state; without it the pass
    starts a fresh one. Both reach the trainer through its public `optimizers=` argument."""
    start = time.perf_counter()
    trainer_class = LabelSmoothedDPOTrainer if rows and "label_smoothing" in rows[0] else SeraDPOTrainer
    gather = _GatherTrainedWeights(model) if distributed.shards_parameters() else None
    with tempfile.TemporaryDirectory(prefix="sera-trainer-") as scratch:
        args = dpo_config(config, daa, epochs, scratch, num_rows=len(rows), max_steps=max_steps)
        args.remove_unused_columns = trainer_class is SeraDPOTrainer  # SPA's `label_smoothing` column reaches the batch
        if optimizer is None and schedule is not None:
            optimizer = build_optimizer(model, args)
        trainer = trainer_class(
            model=copy.deepcopy(model) if gather else model,  # the engine shards the copy in place
            args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            callbacks=[_MetricsToJsonl(metrics_path, iteration), *([gather] if gather else []), *callbacks],
            optimizers=(optimizer, None if schedule is None else LambdaLR(optimizer, schedule.multiplier)),
        )
        _drop_reference_adapter(trainer.model)
        if gather:
            gather.trainer = trainer
        with compact_lm_head(trainer.args.device):  # CPU: project response positions only (TRL's own arithmetic)
            output = trainer.train()
        loss = float(output.training_loss)
        final_loss = _last_logged_loss(trainer, loss)
        if not gather:
            drop_autocast_wrapper(model)
        if gather:
            gather.finish()
            trainer.accelerator.free_memory()  # the sharded copy, its optimizer and engine go before SeRA samples
            trainer = gather.trainer = None
            distributed.end_sharded_pass()
            _empty_caches()
    if not math.isfinite(loss):
        raise SeraRuntimeError(f"iteration {iteration}: training loss is {loss}; stopping "
                               "(the last good iterate is kept in the run directory)")
    model.eval()
    return TrainResult(final_loss=final_loss, steps=output.global_step, seconds=time.perf_counter() - start)


def build_optimizer(model: PreTrainedModel, args: DPOConfig) -> torch.optim.Optimizer:
    """The optimizer a transformers Trainer creates for `model` under `args`: its class and arguments from the
    public `Trainer.get_optimizer_cls_and_kwargs`, weight decay on every trainable weight but biases and norms
    (`Trainer.get_decay_parameter_names`'s rule; tests/test_lr_schedule.py checks the groups match). SeRA builds
    it itself to hand one optimizer, or a run-wide schedule, to each iteration's trainer (`optimizers=`)."""
    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], DECAY_EXEMPT_PATTERNS))
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for name, p in trainable if name in decay], "weight_decay": args.weight_decay},
              {"params": [p for name, p in trainable if name not in decay], "weight_decay": 0.0}]
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_cls(groups, **optimizer_kwargs)


DECAY_EXEMPT_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
"""Parameter names transformers' Trainer exempts from weight decay (its `get_decay_parameter_names`)."""


def _empty_caches() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _GatherTrainedWeights(TrainerCallback):
    """Copies the sharded model's trained weights into the whole `policy`, on every rank, at each epoch's end
    (before later callbacks, such as per-epoch saving, look at the policy) and once more if steps followed."""

    def __init__(self, policy: PreTrainedModel) -> None:
        self.policy = policy
        self.trainer: DPOTrainer | None = None
        self._gathered_at: int | None = None

    def on_epoch_end(self, args, state, control, **kwargs):
        self._gather(state.global_step)

    def finish(self) -> None:
        if self._gathered_at != self.trainer.state.global_step:
            self._gather(self.trainer.state.global_step)

    def _gather(self, step: int) -> None:
        trainer = self.trainer
        engine = trainer.deepspeed if getattr(trainer, "is_deepspeed_enabled", False) else trainer.model_wrapped
        state = trainer.accelerator.get_state_dict(engine)  # collective; rank 0 receives the full weights
        if distributed.is_main():
            load_full_weights(self.policy, state)
        distributed.broadcast_module(self.policy)
        self._gathered_at = step


def load_full_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`state` (a full state dict of the same architecture) copied into `model`; a key may be absent only
    where it names a tensor tied to one that is present (e.g. lm_head.weight = embed_tokens.weight)."""
    own = model.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {own[key].data_ptr() for key in state if key in own}
    untied = [key for key in missing if own[key].data_ptr() not in loaded]
    if untied or unexpected:
        raise SeraRuntimeError(f"the weights gathered from the sharded trainer do not match the policy "
                               f"(missing: {untied[:5]}, unexpected: {list(unexpected)[:5]})")


def _drop_reference_adapter(model) -> None:
    """TRL copies a LoRA policy's adapter into a frozen `ref` adapter to serve as the reference. SeRA feeds
    the reference log-probs itself (the base with the adapter disabled, scored once and cached), so
    the copy would only cost memory and leak into saved checkpoints: remove it."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and "ref" in peft_config and hasattr(model, "delete_adapter"):
        model.delete_adapter("ref")


def _last_logged_loss(trainer: DPOTrainer, fallback: float) -> float:
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return fallback

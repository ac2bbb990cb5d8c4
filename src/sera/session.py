"""`RunSession`: what one run holds for its whole life, and its bookkeeping.

The data (offline and validation examples), the models (the policy in training; earlier iterates and the
SFT model loaded on demand by the log-prob bank), the implicit reward and labeller, the run directory and
the resumable `RunState`. The steps of Algorithm 1 (:mod:`sera.steps`), the self-review
(:mod:`sera.review`) and the baselines read it; only :meth:`RunSession.end_iteration` writes the progress.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from transformers import set_seed

from sera import distributed, model_card, tracking
from sera.budget import Budget, budget_of, matched_budget
from sera.config import SeraConfig
from sera.daa import get_daa
from sera.data import load_pairs
from sera.diagnostics import warnings_for
from sera.errors import SeraInputError
from sera.examples import Example, hold_out, tokenize
from sera.generation import SamplingParams, generate_completions
from sera.io import append_jsonl, load_optimizer_state, write_json, write_yaml
from sera.labellers import build_labeller
from sera.models import add_lora, iterate_view, load_lora_policy, load_model, load_tokenizer, lora_config, save_model
from sera.progress import console
from sera.records import IterationRecord
from sera.rewards import ImplicitReward
from sera.run_dir import RunDirectory
from sera.scoring import LogProbBank
from sera.state import RunState
from sera.tokenization import PairTokenizer
from sera.training import build_optimizer, dpo_config


@dataclass(frozen=True)
class RunInputs:
    """What a run reads when the caller hands it over in memory (:class:`sera.SeraTrainer`) instead of naming it
    in `config.model` / `config.dataset`, which then only record where it came from."""

    model_path: str | None = None
    """Folder holding the SFT model's weights (the policy's start and the reference), instead of `config.model`."""
    tokenizer: Any = None
    """The tokenizer (TRL's `processing_class`), instead of loading `config.model`'s."""
    rows: Any = None
    """Preference rows (a `datasets.Dataset` or a list of dicts, any format `config.dataset` could hold)."""


class RunSession:
    """The resources and progress of one run (see the module docstring)."""

    def __init__(self, config: SeraConfig, resume: bool = False, inputs: RunInputs = RunInputs()) -> None:
        _check_engine(config)
        self.config = config
        self.budget_to_match: Budget | None = matched_budget(config)[0] if config.match_budget else None
        self._clock = time.perf_counter()  # wall time not yet counted in state.seconds
        self.dir = RunDirectory(config.output_dir)
        self._prepare_output_dir(resume)
        set_seed(config.seed)
        self.daa = get_daa(config.daa)
        self.model_path = inputs.model_path or config.model
        self.tokenizer = inputs.tokenizer or load_tokenizer(self.model_path, trust_remote_code=config.trust_remote_code,
                                                            gguf_file=config.gguf_file)
        self.pair_tokenizer = PairTokenizer(self.tokenizer, config.max_length)
        self._load_data(inputs.rows)
        self.policy = self.load_base()  # with --lora-r: the base wrapped in a fresh adapter (= the SFT model)
        self.bank = LogProbBank(self.load, config.scoring_batch_size)
        self.bank.hold(0, self.policy)
        self.reward = ImplicitReward(self.daa, config.beta, self.bank, config.reference)
        self.labeller = build_labeller(config.bootstrap_labeller, self.pair_tokenizer, self.reward,
                                       config.ensemble_gamma)
        self.bootstraps = config.method == "sera" and config.bootstrap
        self.optimizer = None  # --carry-optimizer: the run's one optimizer, handed to every iteration's trainer
        self.vllm = None  # the vLLM engine, started at the first sampling (generation_backend=vllm)
        self.guard_judge = None  # --guard judge:SPEC: the judge, built at its first use
        self.state = RunState.load(self.dir.state) if resume and self.dir.state.exists() else RunState()
        if self.state.completed:
            self._resume_models()
        self.tracker = tracking.RunTracker([])  # none until open_tracker(), after the SFT model's review

    def open_tracker(self) -> None:
        """The run's experiment tracker (--report-to), its step axis going on after a resumed run's iterations."""
        self.tracker = tracking.start(self.config, self.dir.root, iterations=self.state.iterations,
                                      warnings=self.state.warnings, sft_review=self.state.sft_review)

    # -- data and models --------------------------------------------------------------------------

    def _load_data(self, rows: Any) -> None:
        cfg = self.config
        loaded = load_pairs(cfg.dataset if rows is None else rows, split=cfg.dataset_split,
                            skip_invalid=cfg.skip_invalid, dataset_format=cfg.dataset_format, seed=cfg.seed,
                            ultrafeedback_pairs="all" if cfg.method == "curri-dpo" else "best-vs-random")
        self.pair_meta = loaded.meta  # ratings by pair id, where the data has them (Curri-DPO's curriculum)
        skipped = Counter(loaded.skipped)
        examples = tokenize(self.pair_tokenizer, loaded.pairs, skipped)
        if not examples:
            raise SeraInputError(f"{cfg.dataset}: every pair's prompt is longer than --max-length {cfg.max_length}")
        self.offline, self.validation = hold_out(examples, cfg.validation_ratio, cfg.max_validation_pairs, cfg.seed,
                                                 cfg.dataset)
        self.data_report = {"format": loaded.format, "rows_read": loaded.rows_read, "skipped": dict(skipped),
                            "offline_pairs": len(self.offline), "validation_pairs": len(self.validation)}

    def examples(self, pairs) -> list[Example]:
        """New pairs (bootstrapped ones) with their token ids; those too long to score are dropped."""
        return tokenize(self.pair_tokenizer, pairs, Counter())

    def load(self, index: int):
        """Iterate `index` (0 = the SFT model) for scoring: LoRA views share the one model in memory."""
        if self.config.lora_r:
            return iterate_view(self.policy, None if index == 0 else self.dir.model(index), f"iter_{index}")
        path = self.model_path if index == 0 else str(self.dir.model(index))
        model = load_model(path, dtype=self.config.dtype, trust_remote_code=self.config.trust_remote_code,
                           gguf_file=self.config.gguf_file if index == 0 else None)
        model.eval()
        return model

    def load_base(self, adapter=None):
        """The SFT model; with --lora-r wrapped in a fresh adapter, or in `adapter` (a saved iterate's, to resume)."""
        cfg = self.config
        model = load_model(self.model_path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                           gguf_file=cfg.gguf_file)
        base = {"model": cfg.model, "gguf_file": cfg.gguf_file}
        if cfg.lora_r and adapter is not None:
            model = load_lora_policy(model, adapter, base)
        elif cfg.lora_r:
            model = add_lora(model, lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules),
                             base)
        model.eval()
        return model

    def run_optimizer(self):
        """With --carry-optimizer: the run's one optimizer (built at its first use), which every iteration's
        trainer goes on with, as one T-epoch run would; without it each pass starts a fresh one."""
        if self.config.carry_optimizer and self.optimizer is None:
            self.optimizer = build_optimizer(self.policy, dpo_config(self.config, self.daa, 1, str(self.dir.root)))
        return self.optimizer

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, *, seed: int, description: str):
        """Sample from the policy; in a multi-process run each rank samples its share of the prompts."""
        mine = distributed.shard(len(prompt_ids))
        seed = seed + 7919 * distributed.rank()
        if self.config.generation_backend == "vllm":
            samples = self._vllm_engine().generate([prompt_ids[i] for i in mine], params, seed=seed)
        else:
            samples = generate_completions(self.policy, self.tokenizer, [prompt_ids[i] for i in mine], params,
                                           batch_size=self.config.generation_batch_size, seed=seed,
                                           description=description)
        return distributed.gather(mine, samples, len(prompt_ids))

    def _vllm_engine(self):
        """The vLLM engine, started once; it samples from the policy's current weights, pushed in each time."""
        if self.vllm is None:
            from sera.generation_vllm import VLLMGenerator

            self.vllm = VLLMGenerator(self.policy, self.tokenizer, seed=self.config.seed,
                                      gpu_memory_utilization=self.config.vllm_gpu_memory_utilization)
        else:
            self.vllm.refresh(self.policy)
        return self.vllm

    # -- progress -----------------------------------------------------------------------------------

    def save_iterate(self, t: int) -> None:
        """iter_<t>/model (and the carried optimizer state), before state.json names iteration t completed."""
        from sera.io import save_optimizer_state

        save_model(self.policy, self.tokenizer, self.dir.model(t))
        if self.optimizer is not None:
            save_optimizer_state(self.dir.optimizer, self.optimizer.state_dict())
        distributed.barrier()

    def hold_iterate(self, t: int) -> None:
        """The policy is now iterate t, for scoring; iterates no later reward needs are forgotten."""
        self.bank.hold(t, self.policy)
        needed = {0, t, t - 1} if self.config.reference == "sft" or self.daa.reference_free else {t, t - 1}
        for index in range(t + 1):
            if index not in needed:
                self.bank.forget(index)

    def end_iteration(self, record: IterationRecord) -> dict:
        """Record iteration t: warnings, metrics.jsonl, the tracker, and state.json (written last)."""
        t = record.iteration
        entry = record.to_dict()
        for warning in warnings_for(entry, labeller=self.config.bootstrap_labeller):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
            self.state.warnings.append(warning)
        self.state.iterations.append(entry)
        self.tracker.log_iteration(entry, self.state.warnings)  # at the run-wide step where iteration t ended
        append_jsonl(self.dir.metrics, {"event": "iteration_end", **entry})
        self.state.completed = t
        self.state.seconds += time.perf_counter() - self._clock
        self._clock = time.perf_counter()
        self.state.save(self.dir.state)
        return entry

    def finish(self, final_iterate: int) -> dict:
        """Write final/ (iterate `final_iterate`), summary.json and the model card; return the summary."""
        last = self.state.iterations[-1]["iteration"]
        save_model(self.policy if final_iterate == last else self.load(final_iterate), self.tokenizer,
                   self.dir.final_model, merge=self.config.merge)
        budget = budget_of(self.state.iterations).to_dict()
        if self.budget_to_match:
            budget["matched_to"] = {"run": self.config.match_budget, **self.budget_to_match.to_dict()}
        summary = {
            "method": self.config.method, "daa": self.config.daa, "data": self.data_report,
            "sft_review": self.state.sft_review, "iterations": self.state.iterations, "budget": budget,
            "guard": self.config.guard, "final_iterate": final_iterate, "final_model": str(self.dir.final_model),
            "warnings": self.state.warnings,
            "seconds_total": self.state.seconds + time.perf_counter() - self._clock,
        }
        write_json(self.dir.summary, summary)
        model_card.write_model_card(self.dir.final_model / "README.md", summary, self.config.to_dict())
        self.tracker.close(summary)
        if self.vllm is not None:
            self.vllm.close()
        return summary

    def _resume_models(self) -> None:
        completed = self.state.completed
        if self.config.method != "daa":
            self.policy = self.load_base(adapter=self.dir.model(completed)) if self.config.lora_r \
                else self.load(completed)
            self.bank.hold(completed, self.policy)
            if self.config.carry_optimizer:
                self.run_optimizer().load_state_dict(load_optimizer_state(self.dir.optimizer))
        append_jsonl(self.dir.metrics, {"event": "resumed", "after_iteration": completed})
        console.print(f"resuming {self.dir.root} after iteration {completed}", highlight=False)

    def _prepare_output_dir(self, resume: bool) -> None:
        root = self.dir.root
        if resume:
            if self.dir.summary.exists():
                raise SeraInputError(f"--resume {root}: the run already finished (summary.json)")
            return
        if self.dir.summary.exists():
            raise SeraInputError(f"--output-dir {root}: already holds a finished run (summary.json); "
                                 "choose a new directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
            if distributed.is_main():
                self.dir.metrics.unlink(missing_ok=True)
            write_yaml(self.dir.config, self.config.to_dict())
        except OSError as exc:
            raise SeraInputError(f"--output-dir {root}: cannot write ({exc.strerror})") from exc


def _check_engine(config: SeraConfig) -> None:
    """Refuse, before any work, what the launch engine cannot run."""
    distributed.init()
    if distributed.shards_parameters():
        refused = ("--lora-r" if config.lora_r else "--carry-optimizer" if config.carry_optimizer
                   else "--lr-schedule run" if config.lr_schedule == "run" else None)
        if refused:  # the last two hand the trainer an optimizer (optimizers=), which these engines must build
            raise SeraInputError(f"{refused} under FSDP or DeepSpeed ZeRO-3 is not supported; use DDP or ZeRO-2 "
                                 "(examples/accelerate/)")
        if distributed.is_main():
            console.print("[yellow]experimental:[/] parameter-sharding engine: each pass trains a sharded copy and "
                          "gathers its weights back into the whole policy (docs/scale.md)", highlight=False)
    if config.generation_backend == "vllm":
        from sera.generation_vllm import vllm_available

        reason = vllm_available()
        if reason is None and distributed.world_size() > 1:
            reason = "it runs in one process; launch without accelerate/torchrun, or use the hf backend"
        if reason:
            raise SeraInputError(f"--generation-backend vllm: {reason}")

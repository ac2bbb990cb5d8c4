"""Every option of `sera train`, declared once with its documentation (as TRL's config dataclasses do).

Resolution order: dataclass defaults < YAML recipe (`--config`, or a shipped `--preset`) < command-line
flags. The resolved config is written to `OUT/config.yaml`, so a run is reproducible from its directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sera.errors import SeraInputError


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, *, panel: str) -> Any:
    metadata = {"help": help, "panel": panel}
    if choices:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


# The panels of `sera train --help`: each option names its own where it is declared (metadata "panel")
RUN = "Run"
DATA = "Data"
MODEL = "Model loading"
ALGORITHM = "The paper's algorithm"
BASELINES = "Baselines"
SAFEGUARDS = "Self-review safeguards"
ONE_RUN = "One optimiser run"
OPTIMISATION = "Optimisation"
TRACKING = "Tracking"
ENGINE = "Engine"
LORA = "LoRA"


@dataclass
class SeraConfig:
    """Options of a SeRA (or plain DAA) run. Defaults follow the paper where it is explicit.

    The public name (`from sera import SeraConfig`); `TrainConfig` is the same class under its old name."""

    # What to train on
    model: str = _opt(None, "SFT model: a local directory or a hub id. It is also the fixed reference.", panel=RUN)
    dataset: str = _opt(None, "Preference data: a local .jsonl/.json/.parquet file or a hub dataset id with "
                              "`prompt`, `chosen`, `rejected` (strings or chat message lists) and an optional `id`.",
                        panel=RUN)
    output_dir: str = _opt(None, "Run directory; receives config.yaml, metrics.jsonl, iter_<t>/, final/, summary.json.",
                           panel=RUN)
    dataset_split: str | None = _opt(None, "Split to read when `dataset` is a hub id or a `save_to_disk` folder "
                                           "(default: `train`; `train_prefs` for ultrafeedback-binarized).", panel=DATA)
    dataset_format: str = _opt("auto", "Schema of `dataset`: `pairs` (prompt/chosen/rejected), `hh-rlhf` (whole "
                                       "transcripts, split at the last Assistant turn), `ultrafeedback-binarized`, "
                                       "`ultrafeedback` (original: best-rated vs a random lower-rated completion), "
                                       "`tldr` (summarize-from-feedback comparisons); `auto` detects it from the "
                                       "columns.", ("auto", "pairs", "hh-rlhf", "ultrafeedback-binarized",
                                                    "ultrafeedback", "tldr"), panel=DATA)
    gguf_file: str | None = _opt(None, "GGUF checkpoint to load from the model's folder or hub repo, de-quantised "
                                       "to --dtype; the model may also be given as the path of the .gguf file itself.",
                                 panel=MODEL)
    method: str = _opt("sera", "`sera`: Algorithm 1. Baselines (docs/baselines.md), same data and `iterations`: "
                               "`daa`: the plain DAA for `iterations` epochs on all pairs; `curri-dpo`: Curri-DPO, "
                               "best-vs-each-other pairs of rated responses, largest rating gap first, one stage "
                               "per iteration; `spa`: SPA, a labelled seed, then the policy's own samples labelled "
                               "by its DPO implicit reward, low-confidence labels smoothed. curri-dpo and spa always "
                               "use the previous iterate as the reference.", ("sera", "daa", "curri-dpo", "spa"),
                       panel=BASELINES)
    ablation: str = _opt("none", "SeRA ablations (the paper's): `selection-only` (= --no-bootstrap), "
                                 "`bootstrap-only` (= --no-selection), `no-ensemble` (= --ensemble-gamma 0); "
                                 "`none` leaves those options as set.",
                         ("none", "selection-only", "bootstrap-only", "no-ensemble"), panel=BASELINES)

    # The DAA
    daa: str = _opt("dpo", "Direct alignment algorithm; its loss trains and its implicit reward reviews.",
                    ("dpo", "ipo", "slic", "simpo"), panel=ALGORITHM)
    beta: float = _opt(0.1, "DAA temperature beta (paper: 0.2 DPO/SLiC-HF, 1.0 IPO on TinyLlama; 0.01 on Mistral).",
                       panel=ALGORITHM)
    simpo_margin: float = _opt(0.0, "SimPO's target reward margin (its gamma); SimPO only.", panel=ALGORITHM)

    # SeRA
    iterations: int = _opt(3, "T: number of iterations, one epoch each (paper: 3). The first is the warm-up.",
                           panel=ALGORITHM)
    selection_ratio: float = _opt(0.7, "K as a proportion of the pool kept by implicit reward margin (paper: 0.7).",
                                  panel=ALGORITHM)
    selection_count: int | None = _opt(None, "K as an absolute number of pairs; overrides `selection_ratio`.",
                                       panel=ALGORITHM)
    ensemble_gamma: float = _opt(0.3, "gamma: weight of the previous iterate's implicit reward in "
                                      "r_ens = (1 - gamma) r_t + gamma r_{t-1} (paper: 0.3; 0 disables the ensemble).",
                                 panel=ALGORITHM)
    selection: bool = _opt(True, "Component 1, IRM-based selection (False = keep the whole pool; ablation).",
                           panel=ALGORITHM)
    bootstrap: bool = _opt(True, "Component 2, preference bootstrapping from the policy's samples (ablation).",
                           panel=ALGORITHM)
    selection_pool: str = _opt("pool", "What selection ranks: `pool` = offline and generated pairs jointly (paper); "
                                       "`offline` = rank offline pairs only and keep every generated pair. "
                                       "Experimental: `offline` still ranks by IRM, and every measured mode that "
                                       "kept IRM selection lost to plain DPO (docs/self-review.md).",
                               ("pool", "offline"), panel=SAFEGUARDS)
    reference: str = _opt("sft", "Reference policy: `sft` (fixed, default) or `previous` iterate.", ("sft", "previous"),
                          panel=ALGORITHM)
    warmup: bool = _opt(True, "Train iteration 1 on all offline pairs before any selection (Algorithm 1). "
                              "False starts selecting at iteration 1 (with a reference-based DAA every margin is 0 "
                              "there, so ties are broken by id).", panel=ALGORITHM)

    # Baselines (docs/baselines.md)
    match_budget: str | None = _opt(None, "method=daa: a finished SeRA run directory; train the plain DAA for as many "
                                          "optimiser steps as it took (same data, hold-out and schedule, checked), "
                                          "to ask whether self-review beats just training longer. summary.json "
                                          "records both budgets; `sera report RUN BASELINE` compares them.",
                                    panel=BASELINES)
    curri_order: str = _opt("per-prompt", "curri-dpo: curriculum order. `per-prompt` (Curri-DPO): each prompt's pairs "
                                          "ranked by rating gap, rank r of every prompt in the same stage; `global`: "
                                          "all pairs by rating gap, cut into `iterations` equal stages.",
                            ("per-prompt", "global"), panel=BASELINES)
    spa_seed_ratio: float = _opt(0.033, "spa: share of prompts whose labelled pairs form the seed (SPA: 3.3% of "
                                        "UltraFeedback); the other prompts' labels are never used.", panel=BASELINES)
    spa_smooth_lowest: float = _opt(0.1, "spa: the share of each iteration's self-labelled pairs, the least confident "
                                         "(confidence = sigmoid(r_chosen - r_rejected)), that train with label "
                                         "smoothing.", panel=BASELINES)
    spa_confidence_threshold: float | None = _opt(None, "spa: instead of `spa_smooth_lowest`, smooth every pair whose "
                                                        "confidence is below this probability (in [0.5, 1]).",
                                                  panel=BASELINES)
    spa_label_smoothing: float = _opt(0.1, "spa: eps of the label-smoothed DPO loss on low-confidence pairs, "
                                           "-(1-eps) log sigmoid(beta d) - eps log sigmoid(-beta d).", panel=BASELINES)

    # Self-review safeguards (see docs/self-review.md)
    bootstrap_labeller: str = _opt("implicit", "Who labels bootstrapped pairs: `implicit` (the paper: ensembled implicit "
                                               "reward), `likelihood` (the policy's own log-likelihood), "
                                               "`blend:<lambda>` (implicit + lambda x reference log-likelihood; "
                                               "experimental: it lost to plain DPO in both measured worlds), or "
                                               "`judge:<spec>` with any `sera eval` judge (gold:..., rm:..., llm:...).",
                                   panel=SAFEGUARDS)
    selection_mode: str = _opt("joint", "How the pool is ranked: `joint` (the paper: one ranking), `quota` (top "
                                        "`offline_quota` of offline and top `generated_quota` of generated pairs), "
                                        "`crossfit` (offline pairs ranked by out-of-fold IRM from `crossfit_folds` "
                                        "warm-up models, fixed after iteration 1). `quota` and `crossfit` are "
                                        "experimental: each lost to plain DPO in both measured worlds "
                                        "(docs/self-review.md).", ("joint", "quota", "crossfit"),
                               panel=SAFEGUARDS)
    offline_quota: float = _opt(0.7, "Experimental (selection_mode=quota): share of offline pairs kept.",
                                panel=SAFEGUARDS)
    generated_quota: float = _opt(0.5, "Experimental (selection_mode=quota): share of generated pairs kept.",
                                  panel=SAFEGUARDS)
    crossfit_folds: int = _opt(2, "Experimental (selection_mode=crossfit): number of folds (each costs one extra "
                                  "warm-up epoch on (k-1)/k of the pairs).", panel=SAFEGUARDS)
    validation_ratio: float = _opt(0.1, "Share of offline pairs held out (never trained on or bootstrapped from) "
                                        "for the diagnostics and the iteration guard; 0 disables both.",
                                   panel=SAFEGUARDS)
    max_validation_pairs: int = _opt(256, "Cap on the held-out validation pairs.", panel=SAFEGUARDS)
    guard: str = _opt("none", "Iteration guard: `none` (final/ = last iterate, as the paper), `irm` (keep the "
                              "iterate with the best held-out IRM accuracy), or `judge:<spec>` (keep the iterate, "
                              "SFT included, whose greedy responses to held-out prompts the judge scores best).",
                      panel=SAFEGUARDS)

    # Bootstrapping samples
    num_samples: int = _opt(4, "N: responses sampled per prompt for bootstrapping (paper: 4).", panel=ALGORITHM)
    temperature: float = _opt(0.7, "Sampling temperature for bootstrapping (paper: 0.7).", panel=ALGORITHM)
    top_p: float = _opt(0.95, "Nucleus sampling p for bootstrapping (paper: 0.95).", panel=ALGORITHM)
    max_new_tokens: int = _opt(128, "Longest sampled response, in tokens.", panel=ALGORITHM)
    max_bootstrap_prompts: int | None = _opt(None, "Bootstrap from at most this many offline prompts per iteration "
                                                   "(default: all; a fixed-seed random subset otherwise).",
                                             panel=ALGORITHM)

    # Optimisation (handed to TRL)
    learning_rate: float = _opt(3e-6, "Peak learning rate (paper: 3e-6 full fine-tuning, 5e-6 LoRA).",
                                panel=OPTIMISATION)
    batch_size: int = _opt(8, "Per-device train batch size, in pairs (paper: 8 on TinyLlama).", panel=OPTIMISATION)
    grad_accum: int = _opt(2, "Gradient accumulation steps (paper: 2 on TinyLlama).", panel=OPTIMISATION)
    lr_scheduler_type: str = _opt("cosine", "Learning-rate schedule (alignment-handbook: cosine).", panel=OPTIMISATION)
    warmup_ratio: float = _opt(0.1, "Share of each iteration's steps spent warming up the learning rate (a float in [0, 1)).",
                               panel=OPTIMISATION)
    lr_schedule: str = _opt("per-iteration", "`per-iteration` (each iteration's trainer warms up and decays its own "
                                             "learning rate, as separate TRL runs do) or `run` (one warm-up and one "
                                             "decay across all T iterations, as a plain T-epoch DAA run has; "
                                             "`lr_scheduler_type` cosine, linear or constant).",
                            ("per-iteration", "run"), panel=ONE_RUN)
    carry_optimizer: bool = _opt(False, "Start each iteration's optimizer from the previous iteration's state (Adam "
                                        "moments), as one T-epoch run would, instead of afresh. The last state is "
                                        "kept in OUT/optimizer.safetensors for --resume. Not with FSDP/ZeRO-3.",
                                 panel=ONE_RUN)
    max_length: int = _opt(1024, "Longest prompt + response in tokens; longer responses are truncated, "
                                 "pairs whose prompt alone is this long are skipped and counted.", panel=DATA)
    gradient_checkpointing: bool = _opt(False, "Trade compute for memory in training.", panel=ENGINE)
    logging_steps: int = _opt(10, "Log training metrics every this many optimiser steps.", panel=TRACKING)
    report_to: str = _opt("none", "Experiment tracker(s) for the whole run (transformers' report_to): `none`, "
                                  "`tensorboard`, `wandb`, `trackio`, `mlflow`, `all` (every one of these installed) "
                                  "or a comma-separated list. One tracker run per `sera train` run: the trainers' logs "
                                  "at run-wide steps, each iteration's record under sera/, IRM histograms; output "
                                  "under the run directory (docs/tracking.md). Each tracker is an extra of sera of "
                                  "the same name.", panel=TRACKING)
    seed: int = _opt(42, "Seed for shuffling, sampling and subset choice.", panel=RUN)

    # Engine
    scoring_batch_size: int = _opt(16, "Sequences per forward pass when scoring log-probs.", panel=ENGINE)
    generation_batch_size: int = _opt(32, "Sequences per `generate` call when bootstrapping.", panel=ENGINE)
    generation_backend: str = _opt("hf", "Sampling engine: `hf` (batched Hugging Face `generate`, CPU or GPU) or "
                                         "`vllm` (a vLLM engine in this process, started once; before each sampling "
                                         "the policy's current weights are pushed into it, no restart). vllm: one "
                                         "GPU process, full fine-tuning, the vllm extra of sera installed.", ("hf", "vllm"),
                                   panel=ENGINE)
    vllm_gpu_memory_utilization: float = _opt(0.3, "generation_backend=vllm: share of the GPU's memory vLLM may "
                                                   "take (the policy, its optimizer and the scorer need the rest).",
                                              panel=ENGINE)
    dtype: str = _opt("auto", "Model dtype: auto (bf16 on a capable GPU, fp32 on CPU), float32, bfloat16, float16.",
                      panel=MODEL)
    trust_remote_code: bool = _opt(False, "Allow model code from the hub to run (off unless you trust the source).",
                                   panel=MODEL)

    # LoRA (PEFT); off unless lora_r is set
    lora_r: int | None = _opt(None, "Train a LoRA adapter of this rank instead of all weights (paper: 8 on Mistral-7B). "
                                    "The reference is the base with the adapter disabled (no second model in memory); "
                                    "each iteration saves its adapter in iter_<t>/model.", panel=LORA)
    lora_alpha: float | None = _opt(None, "LoRA scaling alpha (default: 2 x lora_r).", panel=LORA)
    lora_dropout: float = _opt(0.0, "Dropout on the LoRA branch.", panel=LORA)
    lora_target_modules: str | list[str] | None = _opt(None, "Modules that get adapters: comma-separated names "
                                                             "(q_proj,v_proj) or `all-linear` (default; the LM head "
                                                             "is never adapted).", panel=LORA)
    merge: bool = _opt(False, "LoRA: write final/ as merged full weights instead of the adapter.", panel=LORA)
    skip_invalid: bool = _opt(False, "Skip malformed dataset rows (counted in summary.json) instead of stopping.",
                              panel=DATA)

    def validate(self) -> "SeraConfig":
        for name in ("model", "dataset", "output_dir"):
            if not getattr(self, name):
                raise SeraInputError(f"--{name.replace('_', '-')} is required (on the command line or in the recipe)")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise SeraInputError(f"--{_flag(f.name)}: {getattr(self, f.name)!r} is not one of {', '.join(choices)}")
        _check(self.iterations >= 1, "--iterations must be at least 1")
        _check(0.0 < self.selection_ratio <= 1.0, "--selection-ratio must be in (0, 1]")
        _check(self.selection_count is None or self.selection_count >= 1, "--selection-count must be at least 1")
        _check(0.0 <= self.ensemble_gamma < 1.0, "--ensemble-gamma must be in [0, 1)")
        _check(self.beta > 0, "--beta must be positive")
        _check(self.num_samples >= 2, "--num-samples must be at least 2 (best vs worst)")
        _check(self.temperature >= 0 and 0 < self.top_p <= 1, "--temperature must be >= 0 and --top-p in (0, 1]")
        _check(self.max_new_tokens >= 1 and self.max_length >= 2, "--max-new-tokens and --max-length must be positive")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "--batch-size and --grad-accum must be at least 1")
        _check(self.learning_rate > 0, "--learning-rate must be positive")
        _check(self.lora_r is None or self.lora_r >= 1, "--lora-r must be at least 1")
        _check(self.lora_alpha is None or self.lora_alpha > 0, "--lora-alpha must be positive")
        _check(0.0 <= self.lora_dropout < 1.0, "--lora-dropout must be in [0, 1)")
        _check(not self.merge or self.lora_r is not None, "--merge needs LoRA (--lora-r)")
        _check(self.lora_r is None or getattr(self, "selection_mode", None) != "crossfit",
               "--selection-mode crossfit needs full fine-tuning (it trains fresh copies of the SFT model); "
               "drop --lora-r or choose another selection mode")
        from transformers import SchedulerType

        _check(self.lr_scheduler_type in {kind.value for kind in SchedulerType},
               f"--lr-scheduler-type {self.lr_scheduler_type!r}: not one of transformers' schedules "
               f"({', '.join(kind.value for kind in SchedulerType)})")
        _check(self.lr_schedule == "per-iteration" or self.lr_scheduler_type in ("cosine", "linear", "constant"),
               "--lr-schedule run supports --lr-scheduler-type cosine, linear or constant")
        _check(0.0 < self.vllm_gpu_memory_utilization < 1.0, "--vllm-gpu-memory-utilization must be in (0, 1)")
        _check(self.generation_backend != "vllm" or self.lora_r is None,
               "--generation-backend vllm samples from full weights; with --lora-r use the hf backend")
        _check(0.0 <= self.validation_ratio < 0.5, "--validation-ratio must be in [0, 0.5)")
        _check(0.0 < self.offline_quota <= 1.0 and 0.0 < self.generated_quota <= 1.0,
               "--offline-quota and --generated-quota must be in (0, 1]")
        _check(self.crossfit_folds >= 2, "--crossfit-folds must be at least 2")
        _check(self.method != "spa" or self.daa == "dpo", "--method spa needs --daa dpo (its labels are DPO's "
               "implicit reward and its refined labels DPO's label-smoothed loss)")
        _check(0.0 < self.spa_seed_ratio < 1.0, "--spa-seed-ratio must be in (0, 1)")
        _check(self.spa_confidence_threshold is None or 0.5 <= self.spa_confidence_threshold <= 1.0,
               "--spa-confidence-threshold must be in [0.5, 1] (the confidence of a best-vs-worst label is at least 0.5)")
        _check(0.0 <= self.spa_label_smoothing < 0.5, "--spa-label-smoothing must be in [0, 0.5)")
        _check(0.0 <= self.spa_smooth_lowest <= 1.0, "--spa-smooth-lowest must be in [0, 1]")
        _check(self.method == "sera" or self.ablation == "none", "--ablation applies to --method sera only")
        _check(self.match_budget is None or self.method == "daa", "--match-budget applies to --method daa only")
        _check(self.ablation == "none" or _ablation_consistent(self),
               f"--ablation {self.ablation}: contradicted by --selection/--bootstrap/--ensemble-gamma")
        _check_spec(self.bootstrap_labeller, ("implicit", "likelihood"), ("blend:", "judge:"), "--bootstrap-labeller")
        _check_spec(self.guard, ("none", "irm"), ("judge:",), "--guard")
        from sera.tracking import check_trackers  # [tracking hook]: exit 2, before any work, if one is not installed

        check_trackers(self.report_to)
        if self.guard != "none" and self.validation_ratio == 0:
            raise SeraInputError("--guard needs held-out pairs: set --validation-ratio > 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TrainConfig = SeraConfig


def option_help(name: str) -> str:
    """The documentation of an option, for the CLI's --help (declared once, above)."""
    return TrainConfig.__dataclass_fields__[name].metadata["help"]


def resolve_config(recipe: str | Path | None, overrides: dict[str, Any], preset: str | None = None) -> TrainConfig:
    """Defaults < preset (a shipped recipe, see :mod:`sera.presets`) < recipe < overrides (None values in
    `overrides` mean "not given"). A `beta` given per DAA (`{dpo: 0.2, ipo: 1.0}`) is resolved for the chosen DAA."""
    values: dict[str, Any] = {}
    if preset is not None:
        from sera.presets import preset_values

        values.update(preset_values(preset))
    if recipe is not None:
        recipe_values = read_recipe(recipe)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(recipe_values) - known)
        if unknown:
            raise SeraInputError(f"{recipe}: unknown option(s) {', '.join(unknown)}")
        values.update(recipe_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SeraInputError(f"{recipe or preset}: unknown option(s) {', '.join(unknown)}")
    if isinstance(values.get("beta"), dict):
        values["beta"] = _beta_for(values["beta"], values.get("daa", "dpo"), preset or recipe)
    values.update(ABLATIONS.get(values.get("ablation", "none"), {}))  # over a preset; --ablation's own check below
    explicit = {**(recipe_values if recipe is not None else {}), **{k: v for k, v in overrides.items() if v is not None}}
    for name, value in ABLATIONS.get(values.get("ablation", "none"), {}).items():
        if name in explicit and explicit[name] != value:
            raise SeraInputError(f"--ablation {values['ablation']} sets --{_flag(name)} {value}, but it is also "
                                 f"given as {explicit[name]!r}")
    return TrainConfig(**values).validate()


ABLATIONS: dict[str, dict[str, Any]] = {
    "selection-only": {"bootstrap": False},
    "bootstrap-only": {"selection": False},
    "no-ensemble": {"ensemble_gamma": 0.0},
}
"""What each `--ablation` sets (the paper's ablations of SeRA's components)."""


def _ablation_consistent(config: TrainConfig) -> bool:
    return all(getattr(config, name) == value for name, value in ABLATIONS.get(config.ablation, {}).items())


def _beta_for(betas: dict, daa: str, source: Any) -> float:
    if daa not in betas:
        raise SeraInputError(f"{source}: gives beta for {', '.join(map(str, betas))} only; pass --beta for --daa {daa}")
    return float(betas[daa])


def read_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SeraInputError(f"{path}: cannot read recipe ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise SeraInputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise SeraInputError(yaml_error_line(path, exc)) from exc
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise SeraInputError(f"{path}: a recipe must be a mapping of option: value")
    return {key.replace("-", "_"): value for key, value in data.items()}


def yaml_error_line(path: str | Path, exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message (with a source excerpt and a caret) as one line: file:line:column: what was
    expected, and where in the structure (1-based line and column, as editors count)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_spec(value: str, names: tuple[str, ...], prefixes: tuple[str, ...], flag: str) -> None:
    if value in names or any(value.startswith(p) and len(value) > len(p) for p in prefixes):
        if value.startswith("blend:"):
            try:
                float(value.split(":", 1)[1])
            except ValueError:
                raise SeraInputError(f"{flag}: {value!r}: the blend weight must be a number") from None
        return
    raise SeraInputError(f"{flag}: {value!r} is not one of {', '.join(names)}, "
                         f"{', '.join(p + '...' for p in prefixes)}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SeraInputError(message)

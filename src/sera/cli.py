"""The `sera` command line. Each command is a thin shell over a library function.

Errors the user can fix (SeraInputError) exit with code 2 and one clear line; runtime faults
(SeraRuntimeError) exit with code 1. Neither prints a traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape  # a message's own [brackets] (sera[vllm], a file name) are text

from sera.config import RUN, TrainConfig
from sera.config import option_help as h
from sera.errors import SeraInputError, SeraRuntimeError
from sera.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SeRA: Self-Reviewing and Alignment of LLMs using Implicit Reward Margins.")


def _panel(name: str) -> str:
    """The --help panel of an option, declared with its help text in sera.config."""
    return TrainConfig.__dataclass_fields__[name].metadata["panel"]


def _train_option(name: str, *flags: str) -> Any:
    """An option of `sera train`: None unless given (so a recipe's or preset's value stands), with the help text
    and panel declared in sera.config."""
    return typer.Option(None, *flags, help=h(name), rich_help_panel=_panel(name))


# One model-loading vocabulary, declared once: train, sft, generate, score and eval (for an rm: judge's model) take
# these options with the same help. No default is shown: each command gives its own (None in train: the recipe's).
Dtype = Annotated[Optional[str], typer.Option("--dtype", help=h("dtype"), rich_help_panel=_panel("dtype"),
                                              show_default=False)]
GgufFile = Annotated[Optional[str], typer.Option("--gguf-file", help=h("gguf_file"),
                                                 rich_help_panel=_panel("gguf_file"), show_default=False)]
TrustRemoteCode = Annotated[Optional[bool], typer.Option("--trust-remote-code", help=h("trust_remote_code"),
                                                         rich_help_panel=_panel("trust_remote_code"),
                                                         show_default=False)]


@app.callback()
def _group() -> None:
    """SeRA: Self-Reviewing and Alignment of LLMs using Implicit Reward Margins."""


@app.command()
def train(
    # Run
    model: Optional[str] = _train_option("model", "--model"),
    dataset: Optional[str] = _train_option("dataset", "--dataset"),
    output_dir: Optional[Path] = _train_option("output_dir", "--output-dir"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML recipe; flags override its values.",
                                          rich_help_panel=RUN),
    preset: Optional[str] = typer.Option(None, "--preset", help="The paper's Table 4 settings (`sera presets` lists "
                                         "them); --config and flags override it. You still name the model.",
                                         rich_help_panel=RUN),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory after its "
                                          "last completed iteration, with its own config.yaml (no other options).",
                                          rich_help_panel=RUN),
    seed: Optional[int] = _train_option("seed"),
    # Data
    dataset_split: Optional[str] = _train_option("dataset_split"),
    dataset_format: Optional[str] = _train_option("dataset_format"),
    max_length: Optional[int] = _train_option("max_length"),
    skip_invalid: Optional[bool] = _train_option("skip_invalid", "--skip-invalid"),
    # Model loading: the options sft, generate, score and eval (rm: judge) share
    dtype: Dtype = None,
    gguf_file: GgufFile = None,
    trust_remote_code: TrustRemoteCode = None,
    # The paper's algorithm
    daa: Optional[str] = _train_option("daa"),
    beta: Optional[float] = _train_option("beta"),
    simpo_margin: Optional[float] = _train_option("simpo_margin"),
    iterations: Optional[int] = _train_option("iterations"),
    selection_ratio: Optional[float] = _train_option("selection_ratio"),
    selection_count: Optional[int] = _train_option("selection_count"),
    ensemble_gamma: Optional[float] = _train_option("ensemble_gamma"),
    selection: Optional[bool] = _train_option("selection", "--selection/--no-selection"),
    bootstrap: Optional[bool] = _train_option("bootstrap", "--bootstrap/--no-bootstrap"),
    reference: Optional[str] = _train_option("reference"),
    warmup: Optional[bool] = _train_option("warmup", "--warmup/--no-warmup"),
    num_samples: Optional[int] = _train_option("num_samples"),
    temperature: Optional[float] = _train_option("temperature"),
    top_p: Optional[float] = _train_option("top_p"),
    max_new_tokens: Optional[int] = _train_option("max_new_tokens"),
    max_bootstrap_prompts: Optional[int] = _train_option("max_bootstrap_prompts"),
    # Self-review safeguards (docs/self-review.md)
    bootstrap_labeller: Optional[str] = _train_option("bootstrap_labeller"),
    guard: Optional[str] = _train_option("guard"),
    validation_ratio: Optional[float] = _train_option("validation_ratio"),
    max_validation_pairs: Optional[int] = _train_option("max_validation_pairs"),
    selection_mode: Optional[str] = _train_option("selection_mode"),
    offline_quota: Optional[float] = _train_option("offline_quota"),
    generated_quota: Optional[float] = _train_option("generated_quota"),
    crossfit_folds: Optional[int] = _train_option("crossfit_folds"),
    selection_pool: Optional[str] = _train_option("selection_pool"),
    # One optimiser run
    lr_schedule: Optional[str] = _train_option("lr_schedule"),
    carry_optimizer: Optional[bool] = _train_option("carry_optimizer", "--carry-optimizer/--no-carry-optimizer"),
    # Baselines (docs/baselines.md)
    method: Optional[str] = _train_option("method"),
    ablation: Optional[str] = _train_option("ablation"),
    match_budget: Optional[str] = _train_option("match_budget"),
    curri_order: Optional[str] = _train_option("curri_order"),
    spa_seed_ratio: Optional[float] = _train_option("spa_seed_ratio"),
    spa_confidence_threshold: Optional[float] = _train_option("spa_confidence_threshold"),
    spa_label_smoothing: Optional[float] = _train_option("spa_label_smoothing"),
    spa_smooth_lowest: Optional[float] = _train_option("spa_smooth_lowest"),
    # Optimisation
    learning_rate: Optional[float] = _train_option("learning_rate"),
    batch_size: Optional[int] = _train_option("batch_size"),
    grad_accum: Optional[int] = _train_option("grad_accum"),
    lr_scheduler_type: Optional[str] = _train_option("lr_scheduler_type"),
    warmup_ratio: Optional[float] = _train_option("warmup_ratio"),
    # Engine
    scoring_batch_size: Optional[int] = _train_option("scoring_batch_size"),
    generation_batch_size: Optional[int] = _train_option("generation_batch_size"),
    generation_backend: Optional[str] = _train_option("generation_backend"),
    vllm_gpu_memory_utilization: Optional[float] = _train_option("vllm_gpu_memory_utilization"),
    gradient_checkpointing: Optional[bool] = _train_option("gradient_checkpointing",
                                                           "--gradient-checkpointing/--no-gradient-checkpointing"),
    # LoRA
    lora_r: Optional[int] = _train_option("lora_r"),
    lora_alpha: Optional[float] = _train_option("lora_alpha"),
    lora_dropout: Optional[float] = _train_option("lora_dropout"),
    lora_target_modules: Optional[str] = _train_option("lora_target_modules"),
    merge: Optional[bool] = _train_option("merge", "--merge"),
    # Tracking
    logging_steps: Optional[int] = _train_option("logging_steps"),
    report_to: Optional[str] = _train_option("report_to"),  # [tracking hook]
) -> None:
    """Align a model with SeRA (or the plain DAA) on a preference dataset."""
    from sera.config import resolve_config
    from sera.report import print_summary
    from sera.trainer import SeraTrainer

    overrides = {k: v for k, v in locals().items()
                 if k not in ("config", "preset", "resume", "resolve_config", "print_summary", "SeraTrainer")}
    if resume is not None:
        given = sorted(k for k, v in overrides.items() if v is not None)
        if given or config or preset:
            raise SeraInputError(f"--resume takes no other options (got --{', --'.join(given) or 'config/preset'}): "
                                 "a run resumes with the config.yaml it started with")
        if not (resume / "config.yaml").exists():
            raise SeraInputError(f"--resume {resume}: no config.yaml there (not a `sera train` run directory)")
        args = resolve_config(resume / "config.yaml", {"output_dir": str(resume)})
    else:
        if overrides["output_dir"] is not None:
            overrides["output_dir"] = str(overrides["output_dir"])
        args = resolve_config(config, overrides, preset=preset)
    trainer = SeraTrainer(model=args.model, args=args, train_dataset=args.dataset)
    print_summary(trainer.train(resume=resume is not None))


@app.command()
def generate(
    model: str = typer.Option(..., "--model", help="Model to sample from: a local directory or a hub id."),
    prompts: str = typer.Option(..., "--prompts", help="Prompts: a .jsonl/.json/.txt/.csv/.parquet file or a hub "
                                "dataset (plain list, `prompt` column, Vicuna-80, Evol-Instruct, AlpacaEval, "
                                "or a preference test split)."),
    output: Path = typer.Option(..., "--output", help="Where to write the responses (JSONL, or JSON with "
                                "--format alpaca_eval)."),
    backend: str = typer.Option("hf", help="`hf` (Hugging Face generate) or `vllm` (GPU, needs the vllm extra of sera)."),
    num_samples: int = typer.Option(1, help="Responses per prompt."),
    temperature: float = typer.Option(0.7, help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(0.95, help="Nucleus sampling p."),
    max_new_tokens: int = typer.Option(512, help="Most tokens per response."),
    batch_size: int = typer.Option(16, help="Sequences per generation batch (hf backend)."),
    seed: int = typer.Option(0, help="Random seed for sampling."),
    output_format: str = typer.Option("jsonl", "--format", help="`jsonl` ({id, prompt, output, generator} "
                                      "per line) or `alpaca_eval` (AlpacaEval's model-outputs JSON)."),
    generator: Optional[str] = typer.Option(None, help="Name written in the `generator` field "
                                            "(default: the model directory's name)."),
    split: Optional[str] = typer.Option(None, help="Dataset split for a hub or save_to_disk dataset "
                                        "(default: the test split)."),
    prompt_field: Optional[str] = typer.Option(None, help="Field holding the prompt, when it is not detected."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N prompts."),
    dtype: Dtype = "auto",
    gguf_file: GgufFile = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Generate a model's responses to evaluation prompts (for `sera eval`)."""
    from sera.eval.generate import generate as run_generate
    from sera.generation import SamplingParams

    params = SamplingParams(num_samples=num_samples, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens)
    result = run_generate(model, prompts, output, backend=backend, params=params, batch_size=batch_size, seed=seed,
                          output_format=output_format, generator=generator, split=split,
                          prompt_field=prompt_field, limit=limit, dtype=dtype, gguf_file=gguf_file,
                          trust_remote_code=bool(trust_remote_code))
    console.print(f"wrote {result.num_responses} responses to {result.num_prompts} prompts to {result.output}"
                  + (f" ({result.num_unfinished} hit --max-new-tokens)" if result.num_unfinished else ""),
                  highlight=False)


@app.command("eval")
def eval_(
    candidate: Path = typer.Option(..., "--candidate", help="Outputs of the model being evaluated "
                                   "(`sera generate` JSONL or AlpacaEval JSON)."),
    baseline: Path = typer.Option(..., "--baseline", help="Outputs of the baseline (e.g. the SFT or DPO model)."),
    judge: str = typer.Option(..., "--judge", help="gold:<module>:<function>, rm:<reward model>, or "
                              "llm:<model>@<base_url> (OpenAI-compatible; key from SERA_JUDGE_API_KEY or "
                              "OPENAI_API_KEY)."),
    output: Path = typer.Option(..., "--output", help="Where to write report.json."),
    cache: Optional[Path] = typer.Option(None, help="llm judge: JSONL cache of verdicts "
                                         "(default: judge_cache.jsonl next to --output)."),
    concurrency: int = typer.Option(4, help="llm judge: requests in flight at once."),
    timeout: float = typer.Option(60.0, help="llm judge: seconds per request."),
    max_retries: int = typer.Option(5, help="llm judge: retries of a failed request (backoff doubles each time)."),
    backoff_base: float = typer.Option(1.0, help="llm judge: first retry delay in seconds."),
    batch_size: int = typer.Option(8, help="rm judge: sequences per batch."),
    bootstrap_samples: int = typer.Option(2000, help="Bootstrap resamples for the 95% interval."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    dtype: Dtype = None,
    gguf_file: GgufFile = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Win rate of a candidate against a baseline, judged pairwise; writes report.json and prints a table.

    --dtype, --gguf-file and --trust-remote-code load an rm: judge's model; other judges refuse them."""
    from sera.eval.evaluate import evaluate, print_report

    if cache is None:
        cache = output.parent / "judge_cache.jsonl"
    report = evaluate(candidate, baseline, judge, output=output, bootstrap_samples=bootstrap_samples, seed=seed,
                      cache=cache, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                      backoff_base=backoff_base, batch_size=batch_size, dtype=dtype, gguf_file=gguf_file,
                      trust_remote_code=trust_remote_code)
    print_report(report)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A `sera train` output directory."),
           other: Optional[Path] = typer.Argument(None, help="A second run to put beside RUN_DIR, e.g. the plain DAA "
                                                  "at its budget (`sera train --method daa --match-budget RUN_DIR`)."),
           ) -> None:
    """Summarise a finished run: iterations, self-review diagnostics, warnings; plots to OUT/report.png.
    With two runs (A B): side by side, budget, held-out IRM accuracy per iteration, the other diagnostics and
    warnings (nothing written)."""
    from sera.report import report_pair, report_run

    if other is not None:
        report_pair(run_dir, other)
        return
    console.print(f"plots: {report_run(run_dir)}", highlight=False)


@app.command()
def score(
    model: str = typer.Option(..., "--model", help="The policy whose implicit reward scores the pairs (a folder, a hub "
                              "id or a .gguf file); with --crossfit, the SFT model the fold models start from."),
    dataset: str = typer.Option(..., "--dataset", help="Preference data, any input `sera train` reads: a .jsonl/"
                                ".json/.parquet file, a save_to_disk folder or a hub id."),
    output: Path = typer.Option(..., "--output", help="The scored rows: .jsonl or .parquet (by suffix). Beside it: "
                                "<stem>.summary.json and <stem>.histogram.png."),
    reference: Optional[str] = typer.Option(None, "--reference", help="The reference policy (the SFT model) of "
                                            "--model; needed by dpo, ipo and slic unless --crossfit."),
    daa: str = typer.Option("dpo", "--daa", help="Whose implicit reward: dpo, ipo, slic or simpo (reference-free, "
                            "length-normalised); the reward the DAA's own loss uses."),
    beta: float = typer.Option(0.1, help=h("beta")),
    simpo_margin: float = typer.Option(0.0, help=h("simpo_margin")),
    crossfit: Optional[int] = typer.Option(None, "--crossfit", help="Out-of-fold margins: train K fold models from "
                                           "--model (the SFT model, also the reference), one epoch each on the other "
                                           "folds, and score each pair with the one that never saw it."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", help="Share of pairs to keep, largest margins "
                                               "first (with --filtered-output)."),
    filtered_output: Optional[Path] = typer.Option(None, "--filtered-output", help="Where the kept pairs go (.jsonl "
                                                   "or .parquet), as a file `sera train --dataset` reads unchanged."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="A boolean column of the data (e.g. "
                                               "known flipped labels): the summary adds the AUC of a low margin for "
                                               "flagging its true rows."),
    max_length: int = typer.Option(1024, help=h("max_length")),
    scoring_batch_size: int = typer.Option(16, help=h("scoring_batch_size")),
    dataset_format: str = typer.Option("auto", help=h("dataset_format")),
    dataset_split: Optional[str] = typer.Option(None, help=h("dataset_split")),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=h("skip_invalid")),
    seed: int = typer.Option(42, help=h("seed")),
    dtype: Dtype = "auto",
    gguf_file: GgufFile = None,
    trust_remote_code: TrustRemoteCode = False,
    learning_rate: Optional[float] = typer.Option(None, help="--crossfit fold models: " + h("learning_rate")),
    batch_size: Optional[int] = typer.Option(None, help="--crossfit fold models: " + h("batch_size")),
    grad_accum: Optional[int] = typer.Option(None, help="--crossfit fold models: " + h("grad_accum")),
    lr_scheduler_type: Optional[str] = typer.Option(None, help="--crossfit fold models: " + h("lr_scheduler_type")),
    warmup_ratio: Optional[float] = typer.Option(None, help="--crossfit fold models: " + h("warmup_ratio")),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                          help="--crossfit fold models: " + h("gradient_checkpointing")),
    logging_steps: Optional[int] = typer.Option(None, help="--crossfit fold models: " + h("logging_steps")),
) -> None:
    """Audit a preference dataset: every pair's implicit reward margin, its rank, a summary and a histogram."""
    from sera.audit import TRAIN_OPTIONS, score_dataset, summary_lines

    options = locals()
    train_options = {name: options[name] for name in TRAIN_OPTIONS}
    given = sorted(name for name, value in train_options.items() if value is not None)
    if given and crossfit is None:
        raise SeraInputError(f"--{', --'.join(n.replace('_', '-') for n in given)}: training options apply to "
                             "--crossfit only")
    result = score_dataset(model, dataset, output, reference=reference, daa=daa, beta=beta, simpo_margin=simpo_margin,
                           crossfit=crossfit, keep_ratio=keep_ratio, filtered_output=filtered_output,
                           label_column=label_column, max_length=max_length, scoring_batch_size=scoring_batch_size,
                           dataset_format=dataset_format, dataset_split=dataset_split, skip_invalid=skip_invalid,
                           seed=seed, dtype=dtype, gguf_file=gguf_file, trust_remote_code=trust_remote_code,
                           train_options=train_options)
    for line in summary_lines(result.summary):
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
def sft(
    model: str = typer.Option(..., "--model", help="Base model: a local directory, a hub id, or a .gguf file."),
    dataset: str = typer.Option(..., "--dataset", help="SFT data: `messages` (chat, e.g. UltraChat-200K) or "
                                "`prompt` + `completion` rows; a .jsonl/.json/.parquet file, a save_to_disk folder "
                                "or a hub id."),
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the fine-tuned model is saved (a new "
                                    "directory); use it as `sera train --model`."),
    dataset_split: Optional[str] = typer.Option(None, help="Split of a hub/saved dataset (default: train_sft "
                                                "if present, else train)."),
    learning_rate: float = typer.Option(2e-5, help="Peak learning rate (Zephyr's SFT: 2e-5)."),
    epochs: float = typer.Option(1.0, help="Training epochs."),
    max_steps: int = typer.Option(-1, help="Stop after this many optimiser steps (overrides --epochs when > 0)."),
    batch_size: int = typer.Option(8, help="Per-device batch size, in examples."),
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
    max_length: int = typer.Option(1024, help="Longest tokenized example; longer ones are truncated."),
    lr_scheduler_type: str = typer.Option("cosine", help="Learning-rate schedule."),
    warmup_ratio: float = typer.Option(0.1, help="Share of steps spent warming up the learning rate."),
    max_samples: Optional[int] = typer.Option(None, help="Use only the first N examples."),
    logging_steps: int = typer.Option(10, help="Log every this many optimiser steps."),
    report_to: str = typer.Option("none", help="Experiment tracker(s), as transformers' report_to: none, tensorboard, "
                                  "wandb, trackio, mlflow, all, or a comma-separated list; output under "
                                  "--output-dir (docs/tracking.md)."),  # [tracking hook]
    seed: int = typer.Option(42, help="Random seed."),
    dtype: Dtype = "auto",
    gguf_file: GgufFile = None,
    trust_remote_code: TrustRemoteCode = False,
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help=h("gradient_checkpointing")),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip malformed rows (counted) instead of "
                                      "stopping."),
    lora_r: Optional[int] = typer.Option(None, help="Train a LoRA adapter of this rank (merged before saving)."),
    lora_alpha: Optional[float] = typer.Option(None, help=h("lora_alpha")),
    lora_dropout: float = typer.Option(0.0, help=h("lora_dropout")),
    lora_target_modules: Optional[str] = typer.Option(None, help=h("lora_target_modules")),
) -> None:
    """Supervised fine-tuning with TRL's SFTTrainer (base model -> SFT model for `sera train`)."""
    from sera.sft import SFTOptions, run_sft

    options = SFTOptions(**{k: v for k, v in locals().items() if k not in ("SFTOptions", "run_sft")})
    options.output_dir = str(output_dir)
    summary = run_sft(options)
    console.print(f"SFT: {summary['examples']} examples, {summary['train_steps']} steps, loss "
                  f"{summary['train_loss']:.4f}, {summary['seconds_total']:.0f} s; model saved to {output_dir}",
                  highlight=False)


@app.command()
def presets() -> None:
    """List the shipped presets (the paper's Table 4, and the evidence-chosen `recommended`) and their options."""
    from rich.table import Table

    from sera.presets import describe_presets, format_value

    for name, description, values in describe_presets():
        table = Table(title=f"{name}: {description}", title_justify="left", show_header=True)
        table.add_column("option")
        table.add_column("value", overflow="fold")
        for key, value in values.items():
            table.add_row(f"--{key.replace('_', '-')}", format_value(value))
        console.print(table)
    console.print("Use: sera train --preset NAME --model <your model> --dataset ... --output-dir ...; "
                  "--config and flags override a preset. A beta given per DAA follows --daa.", highlight=False)


@app.command()
def demo(
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the worlds, runs, results.json and plots go."),
    quick: bool = typer.Option(False, "--quick", help="One seed, DPO only, no noise sweep, with the recommended "
                                                      "preset beside the paper's SeRA: a few minutes on a 2-core "
                                                      "CPU. Without it: the full benchmark."),
    daa: Optional[str] = typer.Option(None, "--daa", help="dpo, ipo, slic, simpo, all, or a comma-separated list "
                                                          "(default: dpo with --quick, all otherwise)."),
    noise: float = typer.Option(0.3, "--noise", help="Share of offline labels the annotator flips."),
    length_bias: float = typer.Option(0.2, "--length-bias", help="Probability the annotator prefers the longer "
                                                                 "response whatever its quality."),
    off_policy: float = typer.Option(0.5, "--off-policy", help="Share of pairs whose second response comes from "
                                                               "another model (a strong or a weak writer)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated world/training seeds "
                                                              "(default: 1 with --quick, 1,2,3 otherwise)."),
    betas: Optional[str] = typer.Option(None, "--betas", help="beta grid searched on validation prompts, the same "
                                                              "for every method (default: 0.05,0.2,1.0)."),
    noise_sweep: Optional[str] = typer.Option(None, "--noise-sweep", help="Extra noise rates run with DPO "
                                                                          "(default: none with --quick, 0,0.2,0.4 "
                                                                          "otherwise)."),
    jobs: int = typer.Option(2, "--jobs", help="Runs in parallel processes, one thread each."),
    variants: Optional[str] = typer.Option(None, "--variants", help="Extra SeRA variants to measure, comma-separated: "
                                                                    "selection-only, bootstrap-only, "
                                                                    "likelihood-labeller, offline-pool, no-ensemble, "
                                                                    "no-review (control: both components off), recommended (--preset recommended), "
                                                                    "daa-matched (the plain DAA at the recommended "
                                                                    "run's budget, --match-budget); default "
                                                                    "recommended,daa-matched, \"\" for none; "
                                                                    "and the baseline spa (DPO only)."),
) -> None:
    """Measure SeRA against its plain DAA in a synthetic world with a known gold reward (CPU, minutes)."""
    from sera.demo import DemoOptions, run_demo

    run_demo(DemoOptions(output_dir=str(output_dir), quick=quick, daa=daa, seeds=seeds, noise=noise,
                         length_bias=length_bias, off_policy=off_policy, betas=betas, noise_sweep=noise_sweep,
                         jobs=jobs, variants=variants))


def _click_exception_classes(name: str) -> tuple[type[BaseException], ...]:
    """`name` from every click that typer may parse with: typer 0.2x ships its own copy (`typer._click`), whose
    exceptions are not click's; older typer releases use click itself. Catching both keeps a typo an exit-2
    usage message under every typer release pyproject.toml allows."""
    classes = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


_USAGE_ERRORS = _click_exception_classes("ClickException")
_ABORTS = _click_exception_classes("Abort")

def main() -> None:
    """Entry point: run the app and turn SeRA's errors into exit codes without tracebacks."""
    try:
        code = app(standalone_mode=False)
    except SeraInputError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, emoji=False)
        sys.exit(exc.exit_code)
    except SeraRuntimeError as exc:
        console.print(f"[bold red]failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, emoji=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except _USAGE_ERRORS as exc:  # click's usage errors (unknown option, bad value, ...) carry their own exit code
        exc.show()
        sys.exit(exc.exit_code)
    except _ABORTS:
        sys.exit(1)
    if code == INTERRUPTED:
        console.print("[bold red]interrupted[/]: outputs written so far are complete; "
                      "a `sera train` run continues with --resume OUT", highlight=False, soft_wrap=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


INTERRUPTED = 130
"""What typer returns (instead of raising) when Ctrl-C stops a command; SeRA reports it as a runtime fault."""


if __name__ == "__main__":
    main()

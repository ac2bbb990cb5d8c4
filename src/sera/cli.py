"""The `sera` command line. Each command is a thin shell over a library function.

Errors the user can fix (SeraInputError) exit with code 2 and one clear line; runtime faults
(SeraRuntimeError) exit with code 1. Neither prints a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from sera.config import option_help as h
from sera.errors import SeraInputError, SeraRuntimeError
from sera.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SeRA: Self-Reviewing and Alignment of LLMs using Implicit Reward Margins.")


@app.callback()
def _group() -> None:
    """SeRA: Self-Reviewing and Alignment of LLMs using Implicit Reward Margins."""


@app.command()
def train(
    model: Optional[str] = typer.Option(None, "--model", help=h("model")),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=h("dataset")),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help=h("output_dir")),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML recipe; flags override its values."),
    dataset_split: Optional[str] = typer.Option(None, help=h("dataset_split")),
    method: Optional[str] = typer.Option(None, help=h("method")),
    daa: Optional[str] = typer.Option(None, help=h("daa")),
    beta: Optional[float] = typer.Option(None, help=h("beta")),
    simpo_margin: Optional[float] = typer.Option(None, help=h("simpo_margin")),
    iterations: Optional[int] = typer.Option(None, help=h("iterations")),
    selection_ratio: Optional[float] = typer.Option(None, help=h("selection_ratio")),
    selection_count: Optional[int] = typer.Option(None, help=h("selection_count")),
    ensemble_gamma: Optional[float] = typer.Option(None, help=h("ensemble_gamma")),
    selection: Optional[bool] = typer.Option(None, "--selection/--no-selection", help=h("selection")),
    bootstrap: Optional[bool] = typer.Option(None, "--bootstrap/--no-bootstrap", help=h("bootstrap")),
    selection_pool: Optional[str] = typer.Option(None, help=h("selection_pool")),
    reference: Optional[str] = typer.Option(None, help=h("reference")),
    warmup: Optional[bool] = typer.Option(None, "--warmup/--no-warmup", help=h("warmup")),
    num_samples: Optional[int] = typer.Option(None, help=h("num_samples")),
    temperature: Optional[float] = typer.Option(None, help=h("temperature")),
    top_p: Optional[float] = typer.Option(None, help=h("top_p")),
    max_new_tokens: Optional[int] = typer.Option(None, help=h("max_new_tokens")),
    max_bootstrap_prompts: Optional[int] = typer.Option(None, help=h("max_bootstrap_prompts")),
    learning_rate: Optional[float] = typer.Option(None, help=h("learning_rate")),
    batch_size: Optional[int] = typer.Option(None, help=h("batch_size")),
    grad_accum: Optional[int] = typer.Option(None, help=h("grad_accum")),
    lr_scheduler_type: Optional[str] = typer.Option(None, help=h("lr_scheduler_type")),
    warmup_ratio: Optional[float] = typer.Option(None, help=h("warmup_ratio")),
    max_length: Optional[int] = typer.Option(None, help=h("max_length")),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                          help=h("gradient_checkpointing")),
    logging_steps: Optional[int] = typer.Option(None, help=h("logging_steps")),
    seed: Optional[int] = typer.Option(None, help=h("seed")),
    scoring_batch_size: Optional[int] = typer.Option(None, help=h("scoring_batch_size")),
    generation_batch_size: Optional[int] = typer.Option(None, help=h("generation_batch_size")),
    dtype: Optional[str] = typer.Option(None, help=h("dtype")),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help=h("trust_remote_code")),
    skip_invalid: Optional[bool] = typer.Option(None, "--skip-invalid", help=h("skip_invalid")),
) -> None:
    """Align a model with SeRA (or the plain DAA) on a preference dataset."""
    from sera.config import resolve_config
    from sera.loop import run
    from sera.report import print_summary

    overrides = {k: v for k, v in locals().items() if k not in ("config", "resolve_config", "run", "print_summary")}
    if overrides["output_dir"] is not None:
        overrides["output_dir"] = str(overrides["output_dir"])
    summary = run(resolve_config(config, overrides))
    print_summary(summary)


def main() -> None:
    """Entry point: run the app and turn SeRA's errors into exit codes without tracebacks."""
    try:
        app(standalone_mode=False)
    except SeraInputError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except SeraRuntimeError as exc:
        console.print(f"[bold red]failed:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()

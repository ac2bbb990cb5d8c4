"""`--help` that reads: `sera train`'s options in panels, the experimental ones marked as such, and one
model-loading vocabulary (--dtype, --gguf-file, --trust-remote-code) with the same help in every command that
loads a model. Through the real `sera` executable, on a wide terminal."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from sera.cli import app
from sera.config import TrainConfig, option_help

SERA = str(Path(sys.executable).parent / "sera")
ENV = {**{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}, "COLUMNS": "200",
       "HF_HUB_OFFLINE": "1", "SERA_NO_PROGRESS": "1"}
PANELS = ("Run", "Data", "Model loading", "The paper's algorithm", "Self-review safeguards", "One optimiser run",
          "Baselines", "Optimisation", "Engine", "LoRA", "Tracking")
EXPERIMENTAL = ("--selection-mode", "--offline-quota", "--generated-quota", "--crossfit-folds", "--selection-pool",
                "--bootstrap-labeller")  # quota/crossfit selection, the blend: labeller, selection_pool
MODEL_OPTIONS = {"dtype": "--dtype", "gguf_file": "--gguf-file", "trust_remote_code": "--trust-remote-code"}
LOADING_COMMANDS = ("train", "sft", "generate", "eval", "score")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    texts = {}
    for command in LOADING_COMMANDS:
        result = subprocess.run([SERA, command, "--help"], capture_output=True, text=True, env=ENV, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        texts[command] = ANSI.sub("", result.stdout)
    return texts


def parse_panels(text: str) -> dict[str, dict[str, str]]:
    """{panel title: {option: its help, as one line}} from rich's boxed --help."""
    panels: dict[str, dict[str, str]] = {}
    panel = option = None
    for line in text.splitlines():
        title = re.match(r"\s*╭─ (.+?) ─", line)
        if title:
            panel, option = title.group(1), None
            panels[panel] = {}
            continue
        if line.strip().startswith("╰"):
            panel = option = None
            continue
        if panel is None:
            continue
        cells = line.strip().strip("│").strip()
        row = re.match(r"(--[\w-]+)\s*(?:--[\w-]+\s*)?(?:<\w+>\s*)?(.*)", cells)
        if row:
            option = row.group(1)
            panels[panel][option] = row.group(2)
        elif option is not None and cells:
            panels[panel][option] += " " + cells
    return {name: {opt: " ".join(text.split()) for opt, text in options.items()} for name, options in panels.items()}


def _flags(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]
    return {param.opts[0] for param in click_command.params if param.name != "help"}


def test_train_help_groups_every_option_into_a_panel(helps):
    panels = parse_panels(helps["train"])
    assert set(PANELS) <= set(panels), f"missing panels: {set(PANELS) - set(panels)}"
    placed = [option for name in PANELS for option in panels[name]]
    assert len(placed) == len(set(placed)), "an option shows in two panels"
    assert set(placed) == _flags("train"), set(placed) ^ _flags("train")
    assert set(panels) - set(PANELS) <= {"Options"} and set(panels.get("Options", {})) <= {"--help"}
    declared = {"--" + field.name.replace("_", "-") for field in dataclasses.fields(TrainConfig)}
    assert declared <= set(placed), f"options without a flag: {declared - set(placed)}"  # none removed


def test_train_help_marks_the_options_that_did_not_help_as_experimental(helps):
    options = {option: text for panel in parse_panels(helps["train"]).values() for option, text in panel.items()}
    for option in EXPERIMENTAL:
        assert "experimental" in options[option].lower(), option
    assert "blend:<lambda>" in options["--bootstrap-labeller"]
    marked = {option for option, text in options.items() if "experimental" in text.lower()}
    assert marked == set(EXPERIMENTAL)


def test_model_loading_options_are_declared_once_with_the_same_help_everywhere(helps):
    """train, sft, generate, eval (an rm: judge's model) and score: the same flags, help text and panel."""
    group = typer.main.get_command(app)
    for command in LOADING_COMMANDS:
        params = {param.name: param for param in group.commands[command].params}
        for name, flag in MODEL_OPTIONS.items():
            assert params[name].opts == [flag] and params[name].help == option_help(name), (command, name)
        panel = parse_panels(helps[command])["Model loading"]
        assert set(panel) == set(MODEL_OPTIONS.values()), command
        for name, flag in MODEL_OPTIONS.items():
            assert " ".join(option_help(name).split()) in panel[flag], (command, flag, panel[flag])


def test_no_help_text_loses_words_to_rich_markup():
    """rich reads `[word]` as a style tag and drops it (`sera[vllm]` once rendered as `sera`): no option help of
    any command may hold one."""
    tagged = {(command.name, param.name): param.help for command in typer.main.get_command(app).commands.values()
              for param in command.params if param.help and re.search(r"\[[A-Za-z_/ ]+\]", param.help)}
    assert not tagged

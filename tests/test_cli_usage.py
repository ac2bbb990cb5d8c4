"""Every command-line usage error, in every subcommand, through the real `sera` executable: the usage
message (or SeRA's one line), exit code 2, never a traceback.

typer 0.2x parses with its own copy of click, whose exceptions are not click's: before cli.main caught
both, each of these printed a traceback and exited 1 (test_unknown_option_of_train is that report).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SERA = str(Path(sys.executable).parent / "sera")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SERA_NO_PROGRESS": "1"}


def sera(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SERA, *args], capture_output=True, text=True, env=ENV, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("usage")
    outputs = root / "outputs.jsonl"
    outputs.write_text('{"id": "1", "prompt": "p", "output": "o"}\n')
    return {"root": str(root), "outputs": str(outputs)}


def _cases(files: dict[str, str]) -> dict[str, list[tuple[str, list[str], str]]]:
    """(kind, arguments, what the message must say), per subcommand."""
    root, outputs = files["root"], files["outputs"]
    out = f"{root}/out"
    gen = ["--model", "m", "--prompts", outputs, "--output", f"{root}/g.jsonl"]
    ev = ["--candidate", outputs, "--baseline", outputs, "--output", f"{root}/r.json"]
    sft = ["--model", "m", "--dataset", "d.jsonl", "--output-dir", out]
    train = ["--model", "m", "--dataset", "d.jsonl", "--output-dir", out]
    return {
        "train": [("unknown option", ["--bogus", "1"], "No such option"),
                  ("wrong type", [*train, "--beta", "abc"], "Invalid value for '--beta'"),
                  ("missing required", ["--dataset", "d.jsonl", "--output-dir", out], "--model is required"),
                  ("bad choice", [*train, "--daa", "foo"], "--daa: 'foo' is not one of")],
        "generate": [("unknown option", [*gen, "--gguf-files", "x"], "No such option"),
                     ("wrong type", [*gen, "--num-samples", "x"], "Invalid value for '--num-samples'"),
                     ("missing required", gen[:4], "Missing option '--output'"),
                     ("bad choice", [*gen, "--backend", "foo"], "--backend 'foo': choose one of")],
        "eval": [("unknown option", [*ev, "--judge", "gold:a:b", "--bogus"], "No such option"),
                 ("wrong type", [*ev, "--judge", "gold:a:b", "--concurrency", "many"],
                  "Invalid value for '--concurrency'"),
                 ("missing required", ev, "Missing option '--judge'"),
                 ("bad choice", [*ev, "--judge", "oracle:x"], "--judge")],
        "sft": [("unknown option", [*sft, "--bogus"], "No such option"),
                ("wrong type", [*sft, "--epochs", "one"], "Invalid value for '--epochs'"),
                ("missing required", sft[2:], "Missing option '--model'"),
                ("bad choice", [*sft, "--lr-scheduler-type", "foo"], "--lr-scheduler-type 'foo': choose one of")],
        "demo": [("unknown option", ["--output-dir", out, "--bogus"], "No such option"),
                 ("wrong type", ["--output-dir", out, "--jobs", "two"], "Invalid value for '--jobs'"),
                 ("missing required", ["--quick"], "Missing option '--output-dir'"),
                 ("bad choice", ["--output-dir", out, "--daa", "foo"], "--daa: 'foo' is not one of")],
        "report": [("unknown option", [root, "--bogus"], "No such option"),
                   ("missing required", [], "Missing argument")],
        "presets": [("unknown option", ["--bogus"], "No such option")],
    }


COMMANDS = ["train", "generate", "eval", "sft", "demo", "report", "presets"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_usage_error_exits_2_with_a_message_and_no_traceback(command, files):
    for kind, args, expected in _cases(files)[command]:
        result = sera(command, *args)
        assert result.returncode == 2, f"{command} {kind}: rc {result.returncode}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr + result.stdout, f"{command} {kind}"
        assert expected in result.stderr + result.stdout, f"{command} {kind}: {result.stderr[-1000:]}"
    assert not Path(files["root"], "out").exists()  # refused before any work


def test_unknown_option_of_train(files):
    """The reported case: `sera train --bogus 1` under typer 0.29 (traceback, exit 1, before the fix)."""
    result = sera("train", "--bogus", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Error: No such option: --bogus"


def test_a_malformed_recipe_is_one_line_with_file_line_and_column(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("beta: 0.1\nselection_ratio: [0.5, 0.7\n")
    result = sera("train", "--config", str(recipe))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {recipe}:3:1: not valid YAML: expected ',' or ']', but got '<stream end>' "
                     "(while parsing a flow sequence)"]
    recipe.write_text("betta: 0.1\n")  # unknown keys: named, as before
    assert sera("train", "--config", str(recipe)).stderr.strip() == f"error: {recipe}: unknown option(s) betta"


def test_a_message_is_printed_as_written(tmp_path, tiny_model_dir):
    """Brackets and :colons: in a message are text, not rich markup or emoji codes (`sera[vllm]`, `gold:a:b`)."""
    result = sera("train", "--model", str(tiny_model_dir), "--dataset", "pairs[1]:smile:.jsonl", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "pairs[1]:smile:.jsonl" in result.stderr, result.stderr

"""Bad input files through the real `sera` executable: exit code 2, one line naming file, row and field, never a
traceback. A few of the faults the fuzz suites (tests/test_fuzz_*.py) found in-process: before those fixes the
generate and eval cases, and the too-long number in the train case, each ended in a traceback. The processes run
side by side (each one's start-up, importing torch, is most of its time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERA = str(Path(sys.executable).parent / "sera")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SERA_NO_PROGRESS": "1"}
GOOD = {"prompt": "reverse abc ?", "chosen": " cba.", "rejected": " xyz."}


def _lines(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def _cases(root: Path, model: str) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments, what the one line must say)."""
    good = json.dumps(GOOD).encode()
    train = ["train", "--model", model]
    outputs = _lines(root / "base.jsonl", [b'{"id": "[/x]", "prompt": "p", "output": "o"}'])
    return {
        # --skip-invalid: each of three rows is malformed in a way that used to escape as a traceback or be accepted
        "train skips and counts every malformed row": (
            [*train, "--skip-invalid", "--output-dir", str(root / "o1"), "--dataset", _lines(root / "pairs.jsonl", [
                b'{"prompt": "a", "chosen": "b", "rejected": "c", "id": ' + b"7" * 5000 + b"}",
                good[:-1] + b', "x": "\xff"}',
                json.dumps({**GOOD, "chosen": "b\ud800"}).encode()])],
            ["pairs.jsonl: no usable preference pairs (3 rows read", "'invalid': 3"]),
        "generate refuses a prompt line that is not UTF-8": (
            ["generate", "--model", "m", "--output", str(root / "g.jsonl"), "--prompts",
             _lines(root / "prompts.jsonl", [b'{"prompt": "hi"}', b'{"prompt": "caf\xe9"}'])],
            ["prompts.jsonl:2: not valid UTF-8"]),
        "eval refuses a sample that is not an integer": (
            ["eval", "--judge", "gold:x:y", "--output", str(root / "r1.json"), "--baseline", outputs, "--candidate",
             _lines(root / "cand.jsonl", [b'{"id": 1, "prompt": "p", "output": "o", "sample": [1]}'])],
            ["cand.jsonl:1: field 'sample' must be a non-negative integer"]),
        "eval shows a repeated id as it is (no rich markup)": (
            ["eval", "--judge", "gold:x:y", "--output", str(root / "r2.json"), "--baseline", outputs, "--candidate",
             _lines(root / "dup.jsonl", [b'{"id": "[/x]", "prompt": "p", "output": "o"}'] * 2)],
            ["dup.jsonl:2: duplicate id '[/x]'"]),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, tuple[subprocess.CompletedProcess, list[str]]]:
    root = tmp_path_factory.mktemp("bad-input-cli")
    cases = _cases(root, str(tiny_model_dir))
    started = {name: subprocess.Popen([SERA, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=ENV, errors="backslashreplace")
               for name, (args, _) in cases.items()}
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), cases[name][1])
    return results


@pytest.mark.parametrize("name", ["train skips and counts every malformed row", "generate refuses a prompt line that is not UTF-8",
                                  "eval refuses a sample that is not an integer",
                                  "eval shows a repeated id as it is (no rich markup)"])
def test_bad_input_file_exits_2_with_one_line(runs, name):
    result, fragments = runs[name]
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])

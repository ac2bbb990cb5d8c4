"""One process per output directory (sera.run_lock), with real `sera` processes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sera.errors import SeraInputError
from sera.run_lock import LOCK_NAME, RunLock
from tests.test_cli_train import FAST, run_cli

ARGS = ["--iterations", "2", *FAST, "--validation-ratio", "0.15"]
ENV = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
TIMINGS = ("seconds", "runtime", "per_second", "final_model")


def _sera(*args: str) -> list[str]:
    return [sys.executable, "-m", "sera.cli", *args]


def _train(model, data, out, seed):
    return _sera("train", "--model", str(model), "--dataset", str(data), "--output-dir", str(out), *ARGS,
                 "--seed", str(seed))


def _wait_for_holder(out: Path, process: subprocess.Popen) -> None:
    """Until the process has written itself into the lock (it holds the lock from then on)."""
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads((out / LOCK_NAME).read_text())["pid"] == process.pid and (out / "config.yaml").exists():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not any(t in k for t in TIMINGS)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _contents(out: Path) -> dict:
    """Every file of a run directory: bytes for what a run decides, timing-free JSON for its logs."""
    result = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if path.is_dir() or name == LOCK_NAME or name == "final/README.md":  # the model card: summary.json
            continue                                                          # (compared below) with wall times
        if path.name == "summary.json" or path.name == "state.json":
            result[name] = _without_timings(json.loads(path.read_text()))
        elif path.name == "metrics.jsonl":  # trainer logs carry runtimes: compare the events and losses
            result[name] = [_without_timings(json.loads(line)) for line in path.read_text().splitlines()]
        elif path.name == "config.yaml":
            result[name] = path.read_text().replace(str(out), "OUT")
        else:
            result[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def test_two_runs_into_one_directory_one_completes_the_other_changes_nothing(tmp_path, tiny_model_dir,
                                                                               pairs_file):
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    first = subprocess.Popen(_train(tiny_model_dir, pairs_file, shared, 1), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_holder(shared, first)
    first.send_signal(signal.SIGSTOP)  # paused, holding the lock, however fast a tiny run would otherwise end
    second = subprocess.run(_train(tiny_model_dir, pairs_file, shared, 2), env=ENV, capture_output=True, text=True,
                            timeout=120)
    resumed = subprocess.run(_sera("train", "--resume", str(shared)), env=ENV, capture_output=True, text=True,
                             timeout=120)
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]

    for refused in (second, resumed):
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr
        message = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(message) == 1 and "in use by pid" in message[0] and str(first.pid) in message[0], message
    assert "--output-dir" in second.stderr and "--resume" in resumed.stderr

    subprocess.run(_train(tiny_model_dir, pairs_file, alone, 1), env=ENV, check=True, capture_output=True,
                   timeout=600)
    assert _contents(shared) == _contents(alone)  # the refused runs left no trace


# kill -9 of the holder, then --resume: tests/test_resume_faults.py::test_a_killed_run_resumes_to_the_same_result
# kills a run mid-iteration, finds its lock file left behind, and resumes through it.


def test_sft_and_demo_refuse_a_directory_in_use(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    out = tmp_path / "busy"
    lock = RunLock(out)
    lock.acquire()
    try:
        with pytest.raises(SeraInputError, match="in use by pid"):
            RunLock(out).acquire()  # a second holder, even in the same process (flock is per open file)
        code, output = run_cli(["sft", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
                                "--output-dir", str(out)], monkeypatch, capsys)
        assert code == 2 and "in use by pid" in output, output
        code, output = run_cli(["demo", "--quick", "--output-dir", str(out)], monkeypatch, capsys)
        assert code == 2 and "in use by pid" in output, output
        code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
                                "--output-dir", str(out), *FAST], monkeypatch, capsys)
        assert code == 2 and "in use by pid" in output, output
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was written
    finally:
        lock.release()


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(SeraInputError, match="not a directory"):
        RunLock(path).acquire()
    assert path.read_text() == "x"

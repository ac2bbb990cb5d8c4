"""Resume after a crash, and faults that must end cleanly without losing what was written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sera.io import read_jsonl
from tests.test_cli_train import FAST, run_cli

ARGS = ["--iterations", "2", *FAST, "--validation-ratio", "0.15", "--seed", "7"]


def _selections(out):
    return {t: [(r["id"], r["selected"], round(r["margin"], 4)) for r in read_jsonl(out / f"iter_{t}" / "selection.jsonl")]
            for t in (2,)}


def _losses(out):
    return [it["final_loss"] for it in json.loads((out / "summary.json").read_text())["iterations"]]


@pytest.mark.parametrize("options", [[], ["--lr-schedule", "run", "--carry-optimizer"]], ids=["default", "one-run"])
def test_a_killed_run_resumes_to_the_same_result(tmp_path, tiny_model_dir, pairs_file, options):
    base = [sys.executable, "-m", "sera.cli", "train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file),
            *options]
    env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    whole = tmp_path / "whole"
    subprocess.run([*base, "--output-dir", str(whole), *ARGS], check=True, env=env, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen([*base, "--output-dir", str(killed), *ARGS], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, midway = killed / "state.json", killed / "iter_2" / "generated.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not midway.exists():  # iteration 2 has sampled; training comes next
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads(state.read_text())["completed"] == 1  # killed during iteration 2
    assert not (killed / "summary.json").exists()
    assert json.loads((killed / ".sera.lock").read_text())["pid"] == process.pid  # the dead holder's lock file stays

    result = subprocess.run([sys.executable, "-m", "sera.cli", "train", "--resume", str(killed)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stderr
    assert _selections(killed) == _selections(whole)
    assert _losses(killed) == pytest.approx(_losses(whole), rel=1e-4)
    assert (killed / "final" / "model.safetensors").exists()


def test_resume_rejects_other_options_and_finished_runs(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    code, output = run_cli(["train", "--resume", str(tmp_path), "--beta", "0.3"], monkeypatch, capsys)
    assert code == 2 and "--resume takes no other options" in output
    code, output = run_cli(["train", "--resume", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "no config.yaml" in output
    out = tmp_path / "run"
    code, _ = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                       str(out), "--iterations", "1", *FAST], monkeypatch, capsys)
    assert code == 0
    code, output = run_cli(["train", "--resume", str(out)], monkeypatch, capsys)
    assert code == 2 and "already finished" in output


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_good_iterate(tmp_path, tiny_model_dir, pairs_file,
                                                                    monkeypatch, capsys):
    from transformers.trainer_utils import TrainOutput

    from sera import training

    real_train, calls = training.SeraDPOTrainer.train, []

    def train_then_nan(self, *args, **kwargs):
        calls.append(1)
        output = real_train(self, *args, **kwargs)
        return TrainOutput(output.global_step, float("nan"), output.metrics) if len(calls) == 2 else output

    monkeypatch.setattr(training.SeraDPOTrainer, "train", train_then_nan)
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "3", *FAST], monkeypatch, capsys)
    assert code == 1 and "iteration 2: training loss is nan" in output and "Traceback" not in output
    assert (out / "iter_1" / "model" / "model.safetensors").exists()
    assert not (out / "iter_2" / "model").exists() and not (out / "final").exists()
    assert json.loads((out / "state.json").read_text())["completed"] == 1


def test_a_failing_write_is_a_clear_error_and_earlier_outputs_stay(tmp_path, tiny_model_dir, pairs_file,
                                                                   monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "iter_2").write_text("in the way")  # iteration 2 cannot create its directory
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "2", *FAST], monkeypatch, capsys)
    assert code == 1 and "cannot write" in output and "iter_2" in output and "Traceback" not in output
    assert (out / "iter_1" / "model" / "model.safetensors").exists()
    assert (out / "config.yaml").exists() and json.loads((out / "state.json").read_text())["completed"] == 1


def test_interrupted_generation_exits_1_and_the_run_resumes(tmp_path, tiny_model_dir, pairs_file, monkeypatch,
                                                            capsys):
    from sera import session as loop  # where the run samples

    real_generate = loop.generate_completions

    def interrupted(*args, **kwargs):
        if kwargs.get("description", "").startswith("iteration 2"):
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(loop, "generate_completions", interrupted)
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "2", *FAST], monkeypatch, capsys)
    assert code == 1 and "interrupted" in output
    monkeypatch.setattr(loop, "generate_completions", real_generate)
    code, output = run_cli(["train", "--resume", str(out)], monkeypatch, capsys)
    assert code == 0, output
    assert [it["iteration"] for it in json.loads((out / "summary.json").read_text())["iterations"]] == [1, 2]


def test_every_pair_tied_or_empty_data_exit_2(tmp_path, tiny_model_dir, monkeypatch, capsys):
    tied = tmp_path / "tied.jsonl"
    tied.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "same", "rejected": "same"}) + "\n"
                            for i in range(4)))
    (tmp_path / "empty.jsonl").write_text("")
    for data in (tied, tmp_path / "empty.jsonl"):
        code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir",
                                str(tmp_path / "o"), *FAST], monkeypatch, capsys)
        assert code == 2 and "no usable preference pairs" in output


def test_a_lora_run_resumes_to_the_same_selection(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    from sera import session as loop  # where the run samples

    args = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--iterations", "2", *FAST,
            "--lora-r", "4", "--beta", "0.5"]
    code, output = run_cli([*args, "--output-dir", str(tmp_path / "whole")], monkeypatch, capsys)
    assert code == 0, output
    real_generate = loop.generate_completions

    def interrupted(*a, **k):
        if k.get("description", "").startswith("iteration 2"):
            raise KeyboardInterrupt
        return real_generate(*a, **k)

    monkeypatch.setattr(loop, "generate_completions", interrupted)
    code, output = run_cli([*args, "--output-dir", str(tmp_path / "cut")], monkeypatch, capsys)
    assert code == 1
    monkeypatch.setattr(loop, "generate_completions", real_generate)
    code, output = run_cli(["train", "--resume", str(tmp_path / "cut")], monkeypatch, capsys)
    assert code == 0, output
    whole, cut = (_selections(tmp_path / name)[2] for name in ("whole", "cut"))
    assert [r[:2] for r in cut] == [r[:2] for r in whole]
    assert [r[2] for r in cut] == pytest.approx([r[2] for r in whole], abs=2e-4)

"""A run with a pairwise (LLM-style) judge guard, killed mid-run, resumes: the SFT model's held-out
responses, against which every later iterate is judged, are part of the saved run state."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.test_eval_judges import FakeJudgeServer
from tests.test_resume_faults import ARGS


def test_a_killed_run_with_a_pairwise_judge_guard_resumes(tmp_path, tiny_model_dir, pairs_file):
    server = FakeJudgeServer()  # an OpenAI-compatible judge that prefers the longer response
    try:
        out = tmp_path / "run"
        guard = ["--guard", f"judge:llm:judge-model@{server.base_url}"]
        env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1", "SERA_JUDGE_API_KEY": "k"}
        process = subprocess.Popen([sys.executable, "-m", "sera.cli", "train", "--model", str(tiny_model_dir),
                                    "--dataset", str(pairs_file), "--output-dir", str(out), *ARGS, *guard],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        midway = out / "iter_2" / "generated.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not midway.exists() and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read()[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = json.loads((out / "state.json").read_text())
        assert state["completed"] == 1 and state["guard_scores"]  # the SFT model and iterate 1 were judged

        calls_before = server.calls
        resumed = subprocess.run([sys.executable, "-m", "sera.cli", "train", "--resume", str(out)], env=env,
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
        assert 0.0 <= summary["iterations"][-1]["guard_score"] <= 1.0
        assert server.calls > calls_before  # iterate 2 was judged against the SFT responses kept in state.json
    finally:
        server.close()

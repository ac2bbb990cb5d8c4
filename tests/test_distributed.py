"""Two processes (torchrun, gloo on CPU) select exactly what one process selects."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sera.distributed import gather, shard
from tests.test_cli_train import FAST


def test_shard_and_gather_are_identities_in_one_process():
    assert shard(5) == [0, 1, 2, 3, 4]
    assert gather([0, 1, 2], ["a", "b", "c"], 3) == ["a", "b", "c"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_select_like_one(tmp_path, tiny_model_dir, pairs_file):
    env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # a CPU (gloo) test, also on a machine with one GPU
    args = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--iterations", "2", *FAST,
            "--grad-accum", "1", "--no-bootstrap"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "sera.cli", *args, "--output-dir", str(one), "--batch-size", "4"],
                   check=True, env=env, capture_output=True, timeout=600)
    result = subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port", "29533", "-m", "sera.cli", *args,
                             "--output-dir", str(two), "--batch-size", "2"],  # same global batch
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    def selection(run):
        return [json.loads(line) for line in open(run / "iter_2" / "selection.jsonl")]

    single, double = selection(one), selection(two)
    assert [(r["id"], r["selected"]) for r in single] == [(r["id"], r["selected"]) for r in double]
    assert [r["margin"] for r in double] == pytest.approx([r["margin"] for r in single], abs=1e-5)
    steps = [json.loads((run / "summary.json").read_text())["iterations"][0]["train_steps"] for run in (one, two)]
    assert steps[0] == steps[1]  # the trainer split each global batch across the two processes
    metrics = (two / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "iteration_end"' in line for line in metrics) == 2  # only rank 0 wrote

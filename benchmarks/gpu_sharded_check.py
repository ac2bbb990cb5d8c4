"""GPU check of the parameter-sharding engines (issue 8): FSDP and DeepSpeed ZeRO-3 vs a plain run.

On a machine with a GPU (one is enough: accelerate runs FSDP/ZeRO-3 over one process too):

    python benchmarks/gpu_sharded_check.py --output benchmarks/results/gpu-sharded-check.json

It builds a tiny model and a small preference file in code, runs `sera train` three ways with the same
seed -- plain, FSDP (examples/accelerate/fsdp.yaml) and ZeRO-3 (examples/accelerate/deepspeed_zero3.yaml,
skipped when deepspeed is not importable) -- in fp32, and records for each whether it finished and whether
its iteration-2 selection equals the plain run's (same pairs kept; margins within 1e-3). The device is
recorded beside the results. On CPU accelerate runs neither engine, so the script refuses to run there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ENGINES = {"fsdp": ROOT / "examples/accelerate/fsdp.yaml", "zero3": ROOT / "examples/accelerate/deepspeed_zero3.yaml"}


def write_inputs(work: Path) -> tuple[Path, Path]:
    """A tiny Llama-style model and 64 'reverse the word' pairs."""
    from sera.models import build_char_tokenizer, build_tiny_llama

    tokenizer = build_char_tokenizer("abcdefghijklmnopqrstuvwxyz ?.,!")
    model = build_tiny_llama(tokenizer, hidden_size=64, layers=2, seed=0)
    model_dir = work / "tiny-model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rng = random.Random(0)
    rows = []
    for i in range(64):
        word = "".join(rng.choice("abcde") for _ in range(4))
        rejected = " " + "".join(rng.choice("xyz") for _ in range(rng.randint(1, 6))) + "."
        rows.append({"id": f"p{i}", "prompt": f"reverse {word} ?", "chosen": f" {word[::-1]}.", "rejected": rejected})
    pairs = work / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, pairs


def run(command: list[str], env: dict, log: Path, timeout: float = 80) -> tuple[int | str, float]:
    """Run one `sera train`; a run past `timeout` seconds is recorded as "timeout", not raised."""
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            code: int | str = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                             timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return code, time.perf_counter() - start


def write(results: dict, output: Path) -> None:
    """Written after every run, so a check cut short still leaves what it measured."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


def selection(run_dir: Path) -> list[dict]:
    path = run_dir / "iter_2" / "selection.jsonl"
    return [json.loads(line) for line in path.open()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/gpu-sharded-check.json")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_sharded_check.py needs a GPU: accelerate runs FSDP and DeepSpeed only on accelerators")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sera-sharded-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir, pairs = write_inputs(work)
    train = ["train", "--model", str(model_dir), "--dataset", str(pairs), "--iterations", "2", "--dtype", "float32",
             "--validation-ratio", "0", "--batch-size", "8", "--grad-accum", "1", "--learning-rate", "1e-3",
             "--num-samples", "3", "--max-new-tokens", "8", "--no-bootstrap", "--seed", "0"]
    env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}
    code, seconds = run([sys.executable, "-m", "sera.cli", *train, "--output-dir", str(work / "plain")], env,
                        work / "plain.log")
    results["runs"]["plain"] = {"exit": code, "seconds": round(seconds, 1),
                                "log_tail": (work / "plain.log").read_text()[-1500:]}
    write(results, args.output)
    reference = selection(work / "plain")
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        config = ENGINES[engine]
        if engine == "zero3" and importlib.util.find_spec("deepspeed") is None:
            results["runs"][engine] = {"skipped": "deepspeed is not installed"}
            continue
        command = ["accelerate", "launch", "--config_file", str(config), "--num_processes", "1",
                   "--mixed_precision", "no", "-m", "sera.cli", *train, "--output-dir", str(work / engine)]
        code, seconds = run(command, {**env, "SERA_EXPERIMENTAL_SHARDED": "1"}, work / f"{engine}.log")
        chosen = selection(work / engine)
        same = bool(reference) and [(r["id"], r["selected"]) for r in chosen] == [(r["id"], r["selected"]) for r in reference]
        gap = max((abs(a["margin"] - b["margin"]) for a, b in zip(chosen, reference)), default=None)
        results["runs"][engine] = {"exit": code, "seconds": round(seconds, 1), "same_selection": same,
                                   "max_margin_gap": gap, "log_tail": (work / f"{engine}.log").read_text()[-1500:]}
        print(f"{engine}: exit {code}, same selection as plain: {same}, max margin gap {gap}", flush=True)
        write(results, args.output)
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()

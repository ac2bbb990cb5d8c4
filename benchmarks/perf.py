"""SeRA's own stages, measured side by side in one run on one model and one set of pairs.

    python benchmarks/perf.py            # SmolLM2-135M's shape (random init), CPU-sized workload
    python benchmarks/perf.py --quick    # a smaller shape; a few minutes on 2 CPU cores
    python benchmarks/perf.py --gpu-part --output perf-gpu.json   # SmolLM2 shape on a GPU, < 3 minutes

What it measures (issue 7; `docs/performance.md` explains the numbers):
1. scoring throughput (response tokens scored per second, per model pass) of the scoring engine
   (`sera.scoring`: length-sorted batches, fused LM head on response positions, per-model cache)
   against a naive loop (one pair at a time, in data order, full logits, the reference recomputed
   for every pair) and against TRL's own reference precompute (`DPOTrainer._precompute_ref_logps`);
2. SeRA's overhead: one SeRA iteration (generation, scoring, selection, training) against one plain
   DAA epoch on the same offline pairs;
3. peak memory of one training epoch with cached reference log-probs (SeRA) against TRL with the
   reference model in memory, each in a fresh process;
4. generation: batched HF `generate` against one sequence at a time; vLLM where it is installed
   and a GPU is present (weights refreshed in place, no restart);
5. a cost model: scoring, generation and training time at three sizes of pairs, samples per prompt
   and response length, with least-squares per-unit costs.

Timings on a shared machine are noisy: every ratio is taken from variants run in the same process,
interleaved, repeated, and reported as medians. Nothing is downloaded: the model is built in code
(random weights, which is fine for speed) with a word-level tokenizer of the same vocabulary size.
The JSON is written after every section, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("SERA_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

# -- workloads ------------------------------------------------------------------------------------

SMOLLM2_135M = dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152)


@dataclass(frozen=True)
class Profile:
    name: str
    shape: dict
    pairs: int                      # offline pairs (= prompts for bootstrapping)
    prompt_len: tuple[int, int]     # token lengths, uniform in [lo, hi]
    response_len: tuple[int, int]
    samples: int                    # N, samples per prompt
    new_tokens: int                 # max new tokens per sample
    score_batch: int
    train_batch: int
    gen_batch: int
    reps: int                       # repetitions of the interleaved timings (sections 1 and 4)
    naive_pairs: int                # pairs the naive loop scores (its throughput is per token)
    one_by_one_prompts: int         # prompts generated one sequence at a time (section 4)
    dtype: str = "float32"


PROFILES = {
    "full": Profile("full", SMOLLM2_135M, pairs=8, prompt_len=(32, 64), response_len=(32, 64), samples=4,
                    new_tokens=32, score_batch=16, train_batch=8, gen_batch=32, reps=2, naive_pairs=4,
                    one_by_one_prompts=1),
    "quick": Profile("quick", dict(hidden=256, layers=6, heads=4, kv_heads=2, intermediate=704, vocab=16384),
                     pairs=32, prompt_len=(32, 64), response_len=(32, 64), samples=4, new_tokens=32,
                     score_batch=16, train_batch=8, gen_batch=16, reps=3, naive_pairs=16, one_by_one_prompts=4),
    "gpu": Profile("gpu", SMOLLM2_135M, pairs=256, prompt_len=(64, 128), response_len=(64, 128), samples=4,
                   new_tokens=64, score_batch=64, train_batch=8, gen_batch=256, reps=2, naive_pairs=32,
                   one_by_one_prompts=2, dtype="auto"),
    "smoke": Profile("smoke", dict(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, vocab=512),
                     pairs=4, prompt_len=(4, 8), response_len=(3, 6), samples=2, new_tokens=4, score_batch=4,
                     train_batch=4, gen_batch=4, reps=1, naive_pairs=2, one_by_one_prompts=1),
}


def build_tokenizer(vocab: int):
    """A word-level tokenizer over `t3 .. t{vocab-1}` (0 pad, 1 eos, 2 unk): text round-trips to ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def build_model(shape: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                         intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=2048, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    model.name_or_path = f"sera-perf-{shape['layers']}l-{shape['hidden']}h"
    return model.eval()


def make_pairs(profile: Profile, count: int | None = None, response_len: tuple[int, int] | None = None,
               seed: int = 1):
    """Random-token text pairs: (prompt, chosen, rejected) as words of the tokenizer."""
    from sera.data import PreferencePair

    rng = np.random.default_rng(seed)
    vocab = profile.shape["vocab"]
    lo, hi = response_len or profile.response_len

    def words(n):
        return " ".join(f"t{i}" for i in rng.integers(3, vocab, size=n))

    pairs = []
    for i in range(count or profile.pairs):
        prompt = words(int(rng.integers(profile.prompt_len[0], profile.prompt_len[1] + 1)))
        chosen = " " + words(int(rng.integers(lo, hi + 1)))
        rejected = " " + words(int(rng.integers(lo, hi + 1)))
        pairs.append(PreferencePair(id=f"p{i:05d}", prompt=prompt, chosen=chosen, rejected=rejected))
    return pairs


def tokenize(pairs, tokenizer, max_length: int = 2048):
    from sera.tokenization import PairTokenizer

    return [PairTokenizer(tokenizer, max_length).pair(p) for p in pairs]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def median(values):
    return float(statistics.median(values)) if values else None


def resolve(profile: Profile, device: torch.device) -> torch.dtype:
    if profile.dtype == "auto":
        from sera.models import resolve_dtype
        return resolve_dtype("auto") if device.type == "cuda" else torch.float32
    return getattr(torch, profile.dtype)


def train_config(profile: Profile, dtype: torch.dtype, **overrides):
    from sera.config import TrainConfig

    config = TrainConfig()
    # No LR warm-up: with one or two steps per epoch a warm-up would leave the policy equal to the reference,
    # every implicit reward 0, and bootstrapping with nothing but ties.
    values = dict(batch_size=profile.train_batch, grad_accum=1, learning_rate=1e-6, warmup_ratio=0.0, beta=0.1,
                  logging_steps=1000,
                  gradient_checkpointing=False, seed=0, dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    values.update(overrides)
    for key, value in values.items():
        setattr(config, key, value)
    return config


def training_rows(examples, ref_chosen, ref_rejected):
    return [{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids,
             "ref_chosen_logps": float(rc), "ref_rejected_logps": float(rr)}
            for e, rc, rr in zip(examples, ref_chosen, ref_rejected)]


def run_train_pass(model, tokenizer, rows, profile, dtype, scratch: Path, iteration="perf"):
    from sera.daa import get_daa
    from sera.training import train_pass

    return train_pass(model, tokenizer, rows, train_config(profile, dtype), get_daa("dpo"), epochs=1,
                      iteration=iteration, metrics_path=scratch / "metrics.jsonl")


@contextlib.contextmanager
def _nullcontext():
    yield


def response_tokens(sequences) -> int:
    return int(sum(len(c) for _, c in sequences))


# -- 1. scoring throughput -----------------------------------------------------------------------

@torch.no_grad()
def naive_logp(model, prompt, completion, device) -> float:
    """One sequence, full logits, log-softmax over every position: the loop a first version writes."""
    ids = torch.tensor([prompt + completion], device=device)
    logps = model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)[0]
    targets = torch.tensor(completion, device=device)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1, device=device)
    return float(logps[positions, targets].sum())


def naive_pair_scores(policy, reference, examples, device):
    """One pair at a time, in data order; policy and reference both recomputed for every pair."""
    out = []
    for e in examples:
        out.append([naive_logp(m, e.prompt_ids, side, device) for m in (policy, reference)
                    for side in (e.chosen_ids, e.rejected_ids)])
    return np.array(out)


def trl_precompute_trainer(policy, reference, tokenizer, pairs, profile, dtype, scratch: Path):
    """A plain TRL DPOTrainer on the same pairs as text; its reference precompute is what gets timed."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    # TRL's precompute batch counts pairs (chosen and rejected go through together): half the engine's sequences.
    args = DPOConfig(output_dir=str(scratch / "trl"), per_device_train_batch_size=profile.train_batch,
                     precompute_ref_log_probs=False, precompute_ref_batch_size=max(1, profile.score_batch // 2),
                     bf16=dtype == torch.bfloat16, fp16=False, gradient_checkpointing=False, max_length=None,
                     report_to=[], save_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
                     beta=0.1, learning_rate=1e-6)
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    return DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                      processing_class=tokenizer)


def trl_precompute(trainer, batch_size):
    """TRL's `_precompute_ref_logps` on a fresh fingerprint (TRL caches the result by fingerprint)."""
    dataset = copy.copy(trainer.train_dataset)
    dataset._fingerprint = uuid.uuid4().hex
    with_ref = trainer._precompute_ref_logps(dataset, "train", batch_size)
    for cache in with_ref.cache_files:
        Path(cache["filename"]).unlink(missing_ok=True)
    return np.array(with_ref["ref_chosen_logps"]), np.array(with_ref["ref_rejected_logps"])


def section_scoring(ctx) -> dict:
    from sera.scoring import LogProbBank, sequence_logps
    from sera.tokenization import sequence_key

    profile, device = ctx.profile, ctx.device
    examples, pairs = ctx.examples, ctx.pairs
    sequences = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids) for e in examples]
    tokens = response_tokens(sequences)
    naive_examples = examples[:profile.naive_pairs]
    naive_tokens = 2 * response_tokens([(e.prompt_ids, e.chosen_ids) for e in naive_examples]
                                       + [(e.prompt_ids, e.rejected_ids) for e in naive_examples])
    models = {0: ctx.reference, 1: ctx.policy}
    trainer = trl_precompute_trainer(ctx.policy, ctx.reference, ctx.tokenizer, pairs, profile, ctx.dtype,
                                     ctx.scratch)

    def engine_both():  # cold caches: policy and reference, as at the first scoring of a pool (both in memory)
        banks = {}
        for index, model in models.items():
            banks[index] = LogProbBank(lambda i: models[i], profile.score_batch)
            banks[index].hold(index, model)
        return banks[1].logps(1, sequences), banks[0].logps(0, sequences)

    warm_reference = LogProbBank(lambda i: models[i], profile.score_batch).logps(0, sequences)

    def engine_reference_cached():  # iterations >= 2: the fixed reference was scored once, earlier in the run
        bank = LogProbBank(lambda i: models[i], profile.score_batch)
        bank.hold(1, ctx.policy)
        bank._cache[0] = dict(zip((sequence_key(p, c) for p, c in sequences), warm_reference.tolist()))
        return bank.logps(1, sequences), bank.logps(0, sequences)

    variants = {
        "naive_policy_and_reference": lambda: naive_pair_scores(ctx.policy, ctx.reference, naive_examples, device),
        "engine_policy_and_reference": engine_both,
        "engine_reference_cached": engine_reference_cached,
        "engine_one_model": lambda: sequence_logps(ctx.reference, sequences, batch_size=profile.score_batch),
        "trl_precompute_one_model": lambda: trl_precompute(trainer, max(1, profile.score_batch // 2)),
    }
    variants["engine_one_model_no_prompt_sharing"] = lambda: sequence_logps(
        ctx.reference, sequences, batch_size=profile.score_batch, share_prompts=False)
    if device.type == "cpu":  # on Triton devices TRL's head is already compact: the same code path
        variants["engine_one_model_trl_head_as_shipped"] = lambda: sequence_logps(
            ctx.reference, sequences, batch_size=profile.score_batch, compact_head=False)
    # IRM throughput: response tokens of the pairs whose policy and reference log-probs are produced, per
    # second. Model-pass throughput: response tokens through one model, per second.
    irm_tokens = {"naive_policy_and_reference": naive_tokens // 2, "engine_policy_and_reference": tokens,
                  "engine_reference_cached": tokens}
    pass_tokens = {"engine_one_model": tokens, "trl_precompute_one_model": tokens,
                   "engine_one_model_no_prompt_sharing": tokens, "engine_one_model_trl_head_as_shipped": tokens}
    # Warm-up (untimed): first calls pay for kernel selection, Triton autotuning, allocator growth.
    warm = sequences[:profile.score_batch]
    for model in (ctx.policy, ctx.reference):
        sequence_logps(model, warm, batch_size=profile.score_batch)
        sequence_logps(model, warm, batch_size=profile.score_batch, compact_head=False)
        naive_logp(model, *warm[0], device)
    times = {name: [] for name in variants}
    outputs = {}
    for _ in range(profile.reps):
        for name, fn in variants.items():
            seconds, outputs[name] = timed(fn, device)
            times[name].append(seconds)
            gc.collect()
    # Agreement: the engine against the naive loop and against TRL (same sequences, same model).
    naive = outputs["naive_policy_and_reference"]
    policy_logps, ref_logps = outputs["engine_policy_and_reference"]
    n = len(naive_examples)
    engine_naive_order = np.stack([policy_logps[:n], policy_logps[len(examples):len(examples) + n],
                                   ref_logps[:n], ref_logps[len(examples):len(examples) + n]], axis=1)
    trl_chosen, trl_rejected = outputs["trl_precompute_one_model"]
    engine_ref = outputs["engine_one_model"]
    irm = {name: irm_tokens[name] / median(times[name]) for name in irm_tokens}
    throughput = {name: pass_tokens[name] / median(times[name]) for name in pass_tokens if name in times}
    result = {
        "pairs": len(examples), "sequences": len(sequences), "response_tokens": tokens,
        "naive_pairs": n, "batch_size_sequences": profile.score_batch,
        "trl_precompute_batch_size_pairs": max(1, profile.score_batch // 2),
        "seconds_median": {name: median(t) for name, t in times.items()},
        "seconds_all": times,
        "irm_response_tokens_per_second": irm,
        "response_tokens_per_second_per_model_pass": throughput,
        "ratio_engine_vs_naive": irm["engine_reference_cached"] / irm["naive_policy_and_reference"],
        "ratio_engine_cold_vs_naive": irm["engine_policy_and_reference"] / irm["naive_policy_and_reference"],
        "ratio_engine_vs_trl_precompute": throughput["engine_one_model"] / throughput["trl_precompute_one_model"],
        "max_abs_diff_engine_vs_naive": float(np.abs(engine_naive_order - naive).max()),
        "max_abs_diff_engine_vs_trl": float(max(np.abs(engine_ref[:len(examples)] - trl_chosen).max(),
                                                np.abs(engine_ref[len(examples):] - trl_rejected).max())),
        "targets": {"engine_vs_naive": ">= 3", "engine_vs_trl_precompute": ">= 1"},
        "definitions": {
            "ratio_engine_vs_naive": "IRM throughput, engine in SeRA's steady state (reference log-probs cached "
                                     "since iteration 1, policy scored in sorted batches) vs the naive loop",
            "ratio_engine_cold_vs_naive": "the same with nothing cached (policy and reference both scored)",
            "ratio_engine_vs_trl_precompute": "one model pass over the same sequences: sequence_logps vs "
                                              "TRL DPOTrainer._precompute_ref_logps, same batch size"},
    }
    # The same ratios within each repetition (variants of one repetition ran back to back): their spread
    # shows how much the machine's load moved the medians.
    def per_rep(a, a_tokens, b, b_tokens):
        return [(a_tokens / ta) / (b_tokens / tb) for ta, tb in zip(times[a], times[b])]

    result["per_repetition"] = {
        "engine_vs_naive": per_rep("engine_reference_cached", tokens, "naive_policy_and_reference", naive_tokens // 2),
        "engine_cold_vs_naive": per_rep("engine_policy_and_reference", tokens, "naive_policy_and_reference",
                                        naive_tokens // 2),
        "engine_vs_trl_precompute": per_rep("engine_one_model", tokens, "trl_precompute_one_model", tokens)}
    result["ratio_prompt_sharing_vs_one_sequence_per_row"] = (
        throughput["engine_one_model"] / throughput["engine_one_model_no_prompt_sharing"])
    if "engine_one_model_trl_head_as_shipped" in throughput:
        result["ratio_compact_head_vs_trl_head_as_shipped"] = (
            throughput["engine_one_model"] / throughput["engine_one_model_trl_head_as_shipped"])
    result["meets_targets"] = bool(result["ratio_engine_vs_naive"] >= 3 and result["ratio_engine_vs_trl_precompute"] >= 1)
    gc.collect()
    return result


# -- 2. SeRA's overhead: one iteration against one plain DAA epoch -------------------------------

def section_overhead(ctx) -> dict:
    from sera.bootstrap import make_pairs as bootstrap_pairs
    from sera.daa import get_daa
    from sera.generation import SamplingParams, generate_completions
    from sera.labellers import build_labeller
    from sera.rewards import ImplicitReward, margins
    from sera.scoring import LogProbBank
    from sera.selection import select_top_k, selection_size
    from sera.tokenization import PairTokenizer

    profile, device, dtype = ctx.profile, ctx.device, ctx.dtype
    policy = build_model(profile.shape, device, dtype, seed=0)  # the SFT model, trained in place below
    reference = ctx.reference                                   # the same weights, kept fixed
    examples = ctx.examples
    daa = get_daa("dpo")
    bank = LogProbBank(lambda i: {0: reference}[i], profile.score_batch)
    reward = ImplicitReward(daa, 0.1, bank, "sft")
    pair_tokenizer = PairTokenizer(ctx.tokenizer, 2048)
    chosen = [(e.prompt_ids, e.chosen_ids) for e in examples]
    rejected = [(e.prompt_ids, e.rejected_ids) for e in examples]
    out = {"pairs": len(examples), "samples_per_prompt": profile.samples, "max_new_tokens": profile.new_tokens}

    # Reference log-probs of the offline pairs: once per run (TRL's precompute does the same work).
    seconds, (ref_c, ref_r) = timed(lambda: (bank.logps(0, chosen), bank.logps(0, rejected)), device)
    out["seconds_reference_scoring_once_per_run"] = seconds

    # Warm-up (untimed): one training step on the benchmark's shared policy, so that first-call costs
    # (kernel selection, autotuning) do not land on the epoch being measured.
    warm = examples[:profile.train_batch]
    run_train_pass(ctx.policy, ctx.tokenizer, training_rows(warm, ref_c[:len(warm)], ref_r[:len(warm)]), profile,
                   dtype, ctx.scratch, "warm-up")

    # One plain DAA epoch on the offline pairs (this is also SeRA's warm-up, iteration 1).
    rows = training_rows(examples, ref_c, ref_r)
    seconds, _ = timed(lambda: run_train_pass(policy, ctx.tokenizer, rows, profile, dtype, ctx.scratch, 1), device)
    out["seconds_plain_daa_epoch"] = seconds
    bank.hold(1, policy)

    # Iteration 2: bootstrap (generate + label), select (score the pool + top-K), train on the selection.
    prompt_ids = [e.prompt_ids for e in examples]
    params = SamplingParams(profile.samples, 0.7, 0.95, profile.new_tokens)
    seconds, samples = timed(lambda: generate_completions(policy, ctx.tokenizer, prompt_ids, params,
                                                          batch_size=profile.gen_batch, seed=2), device)
    out["seconds_generation"] = seconds
    out["generated_tokens"] = int(sum(c.num_tokens for s in samples for c in s))
    labeller = build_labeller("implicit", pair_tokenizer, reward, 0.3)
    texts = [[c.text for c in s] for s in samples]
    prompts = [(p.id, p.prompt) for p in ctx.pairs]
    seconds, boot = timed(lambda: bootstrap_pairs(prompts, texts, lambda ps, cs: labeller(1, ps, cs), iteration=2),
                          device)
    out["seconds_scoring_bootstrap_candidates"] = seconds
    out["generated_pairs"] = len(boot.pairs)
    out["bootstrap_skipped"] = dict(boot.skipped)
    generated = [t for t in tokenize(boot.pairs, ctx.tokenizer) if t is not None]
    pool = list(examples) + generated

    def select():
        pool_margins = margins(reward.ensembled(1, [(e.prompt_ids, e.chosen_ids) for e in pool], 0.3),
                               reward.ensembled(1, [(e.prompt_ids, e.rejected_ids) for e in pool], 0.3))
        keep = select_top_k([e.id for e in pool], pool_margins, selection_size(len(pool), 0.7))
        return [e for e, k in zip(pool, keep) if k]

    seconds, selected = timed(select, device)
    out["seconds_scoring_and_selection_pool"] = seconds
    out["pool_size"], out["selected"] = len(pool), len(selected)
    sel_rows = training_rows(selected, bank.logps(0, [(e.prompt_ids, e.chosen_ids) for e in selected]),
                             bank.logps(0, [(e.prompt_ids, e.rejected_ids) for e in selected]))
    seconds, _ = timed(lambda: run_train_pass(policy, ctx.tokenizer, sel_rows, profile, dtype, ctx.scratch, 2),
                       device)
    out["seconds_training_selected"] = seconds

    # The ratio: scoring + selection of the same offline pairs by the current policy
    # (reference cached), against one training epoch on those pairs. Repeated on a fresh cache.
    def score_and_select_offline():
        fresh = LogProbBank(lambda i: {0: reference}[i], profile.score_batch)
        fresh.hold(1, policy)
        fresh._cache[0] = dict(bank._cache[0])  # the reference's log-probs, cached since iteration 1
        r = ImplicitReward(daa, 0.1, fresh, "sft")
        m = margins(r.of_iterate(1, chosen), r.of_iterate(1, rejected))
        return select_top_k([e.id for e in examples], m, selection_size(len(examples), 0.7))

    # Interleaved with one plain DAA epoch on the same pairs, each on a fresh copy of the SFT model, so
    # that both sides of the ratio see the same machine load. On CPU, also the epoch with TRL's head
    # switched to response positions (sera.scoring.compact_lm_head) -- what training would gain from it.
    from sera.scoring import compact_lm_head

    runs, epochs, compact_epochs = [], [], []
    for _ in range(max(1, profile.reps)):
        runs.append(timed(score_and_select_offline, device)[0])
        plans = [(epochs, None)] + ([(compact_epochs, compact_lm_head)] if device.type == "cpu" else [])
        for series, context in plans:
            copy_model = build_model(profile.shape, device, dtype, seed=0)
            with context(device) if context else _nullcontext():
                series.append(timed(lambda: run_train_pass(copy_model, ctx.tokenizer, rows, profile, dtype,
                                                           ctx.scratch, "epoch"), device)[0])
            gc.collect()
    out["seconds_scoring_and_selection_offline_pairs"] = median(runs)
    out["seconds_scoring_and_selection_offline_pairs_all"] = runs
    out["seconds_plain_daa_epoch_interleaved"] = median(epochs)
    out["seconds_plain_daa_epoch_interleaved_all"] = epochs
    epoch = median(epochs)
    out["ratio_scoring_selection_vs_epoch"] = out["seconds_scoring_and_selection_offline_pairs"] / epoch
    if compact_epochs:
        out["seconds_plain_daa_epoch_compact_head_all"] = compact_epochs
        out["ratio_training_compact_head_speedup"] = epoch / median(compact_epochs)
        out["ratio_scoring_selection_vs_epoch_with_compact_head_training"] = (
            out["seconds_scoring_and_selection_offline_pairs"] / median(compact_epochs))
    scoring_total = out["seconds_scoring_bootstrap_candidates"] + out["seconds_scoring_and_selection_pool"]
    iteration = scoring_total + out["seconds_generation"] + out["seconds_training_selected"]
    out["iteration_split"] = {
        "scoring_and_selection": scoring_total / iteration, "generation": out["seconds_generation"] / iteration,
        "training": out["seconds_training_selected"] / iteration}
    out["ratio_iteration_vs_plain_epoch"] = iteration / epoch
    out["ratio_iteration_scoring_vs_plain_epoch"] = scoring_total / epoch
    out["note"] = ("ratios use the median of the interleaved epochs (fresh SFT copies); seconds_plain_daa_epoch "
                   "is the single first epoch of the iteration-1 policy, kept for reference")
    out["target"] = "scoring + selection <= 0.35 x one training epoch on the same pairs"
    out["meets_target"] = bool(out["ratio_scoring_selection_vs_epoch"] <= 0.35)
    gc.collect()
    return out


# -- 3. peak memory: cached reference log-probs against the reference model in memory -------------

class RssSampler:
    """Peak resident memory of this process while running, sampled every 5 ms (psutil, a TRL dependency)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._process = psutil.Process()
        self.start_rss = self._process.memory_info().rss
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._process.memory_info().rss)


def memory_child(profile: Profile, variant: str, device: torch.device) -> dict:
    """Runs in a fresh process: build the models, train one epoch, report the peaks.

    `peak_rss_mib` is the process's high-water mark (getrusage), libraries and models included;
    `peak_rss_over_start_mib` is the sampled peak during training over the RSS when training began,
    both model builds counted in (the policy, and for TRL the reference too)."""
    from sera.scoring import sequence_logps

    dtype = resolve(profile, device)
    tokenizer = build_tokenizer(profile.shape["vocab"])
    pairs = make_pairs(profile)
    examples = tokenize(pairs, tokenizer)
    scratch = Path(tempfile.mkdtemp(prefix="sera-perf-mem-"))
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sampler = RssSampler()
    policy = build_model(profile.shape, device, dtype, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if variant == "sera_cached_reference":
        # At iteration 1 the policy is the SFT model, i.e. the reference: SeRA scores it once, caches, trains.
        ref_c = sequence_logps(policy, [(e.prompt_ids, e.chosen_ids) for e in examples], batch_size=profile.score_batch)
        ref_r = sequence_logps(policy, [(e.prompt_ids, e.rejected_ids) for e in examples], batch_size=profile.score_batch)
        run_train_pass(policy, tokenizer, training_rows(examples, ref_c, ref_r), profile, dtype, scratch)
    else:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        reference = build_model(profile.shape, device, dtype, seed=0)
        args = DPOConfig(output_dir=str(scratch / "trl"), per_device_train_batch_size=profile.train_batch,
                         num_train_epochs=1, precompute_ref_log_probs=False, bf16=dtype == torch.bfloat16,
                         fp16=False, gradient_checkpointing=False, max_length=None, report_to=[], save_strategy="no",
                         dataloader_num_workers=0, disable_tqdm=True, beta=0.1, learning_rate=1e-6, logging_steps=1000)
        dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
        DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                   processing_class=tokenizer).train()
    sync(device)
    peak = sampler.stop()
    result = {"variant": variant, "seconds": time.perf_counter() - start,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rss_high_water_before_models_mib": rss_before / 1024,
              "peak_rss_over_start_mib": (peak - sampler.start_rss) / 2**20}
    if device.type == "cuda":
        result["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def section_memory(ctx) -> dict:
    out = {}
    for variant in ("sera_cached_reference", "trl_reference_in_memory"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", variant, "--profile",
               ctx.profile.name, "--device", ctx.device.type, "--threads", str(torch.get_num_threads())]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            out[variant] = {"error": (proc.stderr or proc.stdout)[-2000:]}
        else:
            out[variant] = json.loads(lines[-1])
    key = "peak_cuda_allocated_mib" if ctx.device.type == "cuda" else "peak_rss_over_start_mib"
    a, b = out["sera_cached_reference"].get(key), out["trl_reference_in_memory"].get(key)
    if a and b:
        out["measure"] = key
        out["ratio_cached_vs_reference_in_memory"] = a / b
        out["saved_mib"] = b - a
        out["meets_target"] = bool(a < b)
    return out


# -- 4. generation --------------------------------------------------------------------------------

def section_generation(ctx) -> dict:
    from sera.generation import SamplingParams, generate_completions

    profile, device = ctx.profile, ctx.device
    prompts = [e.prompt_ids for e in ctx.examples]
    few = prompts[:profile.one_by_one_prompts]
    params = SamplingParams(profile.samples, 0.7, 0.95, profile.new_tokens)
    one = SamplingParams(1, 0.7, 0.95, profile.new_tokens)

    def batched():
        out = generate_completions(ctx.policy, ctx.tokenizer, prompts, params, batch_size=profile.gen_batch, seed=0)
        return sum(c.num_tokens for s in out for c in s)

    def one_by_one():
        total = 0
        for i, p in enumerate(few):
            for k in range(profile.samples):
                out = generate_completions(ctx.policy, ctx.tokenizer, [p], one, batch_size=1, seed=1000 * i + k)
                total += out[0][0].num_tokens
        return total

    generate_completions(ctx.policy, ctx.tokenizer, few, one, batch_size=1, seed=0)  # warm-up, untimed
    times = {"batched": [], "one_by_one": []}
    tokens = {}
    for _ in range(profile.reps):
        for name, fn in (("batched", batched), ("one_by_one", one_by_one)):
            seconds, tokens[name] = timed(fn, device)
            times[name].append(seconds)
    tps = {name: tokens[name] / median(times[name]) for name in times}
    out = {"prompts_batched": len(prompts), "prompts_one_by_one": len(few), "samples_per_prompt": profile.samples,
           "max_new_tokens": profile.new_tokens, "batch_size": profile.gen_batch, "tokens": tokens,
           "seconds_median": {k: median(v) for k, v in times.items()}, "seconds_all": times,
           "tokens_per_second": tps, "ratio_batched_vs_one_by_one": tps["batched"] / tps["one_by_one"]}
    out["vllm"] = vllm_generation(ctx, prompts, params)
    return out


def vllm_generation(ctx, prompts, params) -> dict:
    from sera.errors import SeraInputError

    if ctx.device.type != "cuda":
        return {"status": "skipped", "reason": "no GPU on this machine (vLLM runs on GPUs only)"}
    try:
        from sera.generation_vllm import VLLMGenerator
    except SeraInputError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    try:
        seconds_init, generator = timed(lambda: VLLMGenerator(ctx.policy, ctx.tokenizer, gpu_memory_utilization=0.3),
                                        ctx.device)
        seconds_refresh, _ = timed(lambda: generator.refresh(ctx.policy), ctx.device)
        seconds, out = timed(lambda: generator.generate(prompts, params, seed=0), ctx.device)
        tokens = sum(c.num_tokens for s in out for c in s)
        return {"status": "ok", "seconds_start": seconds_init, "seconds_weight_refresh": seconds_refresh,
                "seconds_generate": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}
    except SeraInputError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    except Exception as exc:  # report, don't lose the other sections
        return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:2000]}


# -- 5. cost model --------------------------------------------------------------------------------

def fit(xs, ys) -> dict:
    """Least squares y = a + b x over the three sizes."""
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return {"x": list(xs), "seconds": list(ys), "intercept_s": float(a), "slope_s_per_unit": float(b)}


def section_cost_model(ctx) -> dict:
    from sera.generation import SamplingParams, generate_completions
    from sera.scoring import sequence_logps

    profile, device, dtype = ctx.profile, ctx.device, ctx.dtype
    P = profile.pairs
    sizes = [max(2, P // 4), max(2, P // 2), P]
    out = {"note": "seconds of one run per size, after an untimed warm-up of each stage; slopes are "
                   "least-squares fits over the three sizes"}
    warm = ctx.examples[:2]
    sequence_logps(ctx.reference, [(e.prompt_ids, e.chosen_ids) for e in warm], batch_size=profile.score_batch)
    generate_completions(ctx.policy, ctx.tokenizer, [e.prompt_ids for e in warm],
                         SamplingParams(2, 0.7, 0.95, 4), batch_size=profile.gen_batch, seed=3)

    # Scoring: one model pass over both responses of n pairs; and over P/4 pairs at three response lengths.
    secs = []
    for n in sizes:
        seqs = [(e.prompt_ids, s) for e in ctx.examples[:n] for s in (e.chosen_ids, e.rejected_ids)]
        secs.append(timed(lambda: sequence_logps(ctx.reference, seqs, batch_size=profile.score_batch), device)[0])
    out["scoring_vs_pairs"] = fit(sizes, secs)
    hi = profile.response_len[1]
    lengths = [max(2, hi // 4), max(3, hi // 2), hi]
    secs = []
    n = max(2, P // 4)
    for length in lengths:
        examples = tokenize(make_pairs(profile, n, (length, length), seed=7), ctx.tokenizer)
        seqs = [(e.prompt_ids, s) for e in examples for s in (e.chosen_ids, e.rejected_ids)]
        secs.append(timed(lambda: sequence_logps(ctx.reference, seqs, batch_size=profile.score_batch), device)[0])
    out["scoring_vs_response_length"] = {**fit(lengths, secs), "pairs": n}

    # Generation: n prompts at three sample counts, and at three response lengths (N fixed).
    g = max(2, P // 4)
    prompts = [e.prompt_ids for e in ctx.examples[:g]]
    counts = [1, max(2, profile.samples // 2), profile.samples] if profile.samples > 2 else [1, 2, 3]
    secs = [timed(lambda: generate_completions(ctx.policy, ctx.tokenizer, prompts,
                                               SamplingParams(k, 0.7, 0.95, profile.new_tokens),
                                               batch_size=profile.gen_batch, seed=3), device)[0] for k in counts]
    out["generation_vs_samples_per_prompt"] = {**fit(counts, secs), "prompts": g}
    new_tokens = [max(2, profile.new_tokens // 4), max(3, profile.new_tokens // 2), profile.new_tokens]
    secs = [timed(lambda: generate_completions(ctx.policy, ctx.tokenizer, prompts,
                                               SamplingParams(profile.samples, 0.7, 0.95, m),
                                               batch_size=profile.gen_batch, seed=3), device)[0] for m in new_tokens]
    out["generation_vs_response_length"] = {**fit(new_tokens, secs), "prompts": g, "samples_per_prompt": profile.samples}

    # Training: one epoch on n pairs (reference log-probs cached), on a scratch copy of the SFT model.
    secs = []
    for n in sizes:
        model = build_model(profile.shape, device, dtype, seed=0)
        ex = ctx.examples[:n]
        rows = training_rows(ex, np.zeros(n), np.zeros(n))
        secs.append(timed(lambda: run_train_pass(model, ctx.tokenizer, rows, profile, dtype, ctx.scratch), device)[0])
        gc.collect()
    out["training_vs_pairs"] = fit(sizes, secs)
    s = out["scoring_vs_pairs"]["slope_s_per_unit"]
    t = out["training_vs_pairs"]["slope_s_per_unit"]
    out["scoring_per_pair_vs_training_per_pair"] = s / t if t else None
    return out


# -- driver ---------------------------------------------------------------------------------------

@dataclass
class Context:
    profile: Profile
    device: torch.device
    dtype: torch.dtype
    tokenizer: object
    pairs: list
    examples: list
    policy: object
    reference: object
    scratch: Path


def environment(device: torch.device) -> dict:
    import transformers
    import trl

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "trl": trl.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": device.type,
           "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


SECTIONS = {"scoring": section_scoring, "overhead": section_overhead, "memory": section_memory,
            "generation": section_generation, "cost_model": section_cost_model}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model shape; a few minutes on CPU")
    parser.add_argument("--gpu-part", action="store_true", help="SmolLM2 shape on the GPU (needs CUDA), < 3 minutes")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="workload (overrides --quick/--gpu-part)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda for --gpu-part, else cpu)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/perf[-quick|-gpu].json)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's). On a CPU shared with other jobs, 1 gives steadier ratios")
    parser.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    name = args.profile or ("gpu" if args.gpu_part else "quick" if args.quick else "full")
    profile = PROFILES[name]
    device = torch.device(args.device or ("cuda" if args.gpu_part else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--gpu-part/--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(profile, args.memory_child, device)))
        return {}

    suffix = {"full": "", "quick": "-quick", "gpu": "-gpu", "smoke": "-smoke"}[name]
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"perf{suffix}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    dtype = resolve(profile, device)
    tokenizer = build_tokenizer(profile.shape["vocab"])
    pairs = make_pairs(profile)
    examples = tokenize(pairs, tokenizer)
    scratch = Path(tempfile.mkdtemp(prefix="sera-perf-"))
    ctx = Context(profile, device, dtype, tokenizer, pairs, examples, build_model(profile.shape, device, dtype, 0),
                  build_model(profile.shape, device, dtype, 0), scratch)
    report = {"benchmark": "benchmarks/perf.py", "command": " ".join(["python", "benchmarks/perf.py", *(argv or sys.argv[1:])]),
              "profile": {**asdict(profile), "dtype": str(dtype).removeprefix("torch.")},
              "environment": environment(device), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "sections": {}}
    started = time.perf_counter()
    for section in [s.strip() for s in args.sections.split(",") if s.strip()]:
        print(f"== {section}", flush=True)
        t0 = time.perf_counter()
        try:
            result = SECTIONS[section](ctx)
        except Exception as exc:  # one failing section must not lose the others
            import traceback
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        result["section_seconds"] = time.perf_counter() - t0
        report["sections"][section] = result
        report["seconds_total"] = time.perf_counter() - started
        output.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        print(json.dumps(headline(section, result), default=float), flush=True)
    report["summary"] = summary(report["sections"])
    output.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    print(json.dumps(report["summary"], indent=2, default=float))
    print(f"wrote {output}")
    return report


def headline(section: str, result: dict) -> dict:
    keys = [k for k in result if k.startswith(("ratio", "meets", "error", "max_abs"))]
    return {"section": section, **{k: result[k] for k in keys}}


def summary(sections: dict) -> dict:
    def get(section, key):
        return sections.get(section, {}).get(key)

    gen = sections.get("generation", {})
    return {
        "scoring_engine_vs_naive": get("scoring", "ratio_engine_vs_naive"),
        "scoring_engine_cold_vs_naive": get("scoring", "ratio_engine_cold_vs_naive"),
        "scoring_engine_vs_trl_precompute": get("scoring", "ratio_engine_vs_trl_precompute"),
        "scoring_compact_head_vs_trl_head_as_shipped": get("scoring", "ratio_compact_head_vs_trl_head_as_shipped"),
        "scoring_prompt_sharing_vs_one_sequence_per_row": get("scoring", "ratio_prompt_sharing_vs_one_sequence_per_row"),
        "scoring_selection_vs_training_epoch": get("overhead", "ratio_scoring_selection_vs_epoch"),
        "sera_iteration_vs_plain_epoch": get("overhead", "ratio_iteration_vs_plain_epoch"),
        "peak_memory_cached_vs_reference_in_memory": get("memory", "ratio_cached_vs_reference_in_memory"),
        "generation_batched_vs_one_by_one": gen.get("ratio_batched_vs_one_by_one"),
        "vllm": (gen.get("vllm") or {}).get("status"),
    }


if __name__ == "__main__":
    main()

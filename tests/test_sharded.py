"""Engines that shard parameters (FSDP, ZeRO-3): opt-in, and the copy-train-gather path keeps the policy whole.

Accelerate runs FSDP and DeepSpeed only on accelerators, so on this CPU no trainer shards anything; these tests
pin down everything around it: the launcher checks, the trainer getting a copy, the trained weights coming back
into the policy (per epoch too), rank 0's weights reaching every rank, and -- with torch's FSDP2 directly, on
gloo -- the gather from a really sharded model.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import TrainerCallback
from transformers.integrations import deepspeed as hf_deepspeed

from sera import distributed
from sera.config import TrainConfig
from sera.daa import get_daa
from sera.errors import SeraInputError, SeraRuntimeError
from sera.models import build_tiny_llama
from sera.scoring import sequence_logps
from sera.training import load_full_weights, train_pass
from tests.conftest import pair_rows
from tests.devices import tolerance, trainer_device
from tests.test_cli_train import FAST

LAUNCHER_VARIABLES = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                      "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
                      distributed.EXPERIMENTAL_SHARDED)


@pytest.fixture
def launcher_env(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_sharded_engines_need_the_opt_in(launcher_env):
    launcher_env.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(SeraInputError, match=f"FSDP.*{distributed.EXPERIMENTAL_SHARDED}=1"):
        distributed.init()
    launcher_env.setenv(distributed.EXPERIMENTAL_SHARDED, "1")
    distributed.init()  # accepted


def test_zero3_is_found_in_a_deepspeed_json_and_must_gather_weights(launcher_env, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    launcher_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    launcher_env.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    launcher_env.setenv(distributed.EXPERIMENTAL_SHARDED, "1")
    assert distributed.shards_parameters()
    with pytest.raises(SeraInputError, match="stage3_gather_16bit_weights_on_model_save"):
        distributed.init()
    config.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}))
    distributed.init()
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert not distributed.shards_parameters()  # ZeRO-2 keeps parameters whole: the plain path


def test_zero3_flags_from_accelerate_config(launcher_env):
    launcher_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    launcher_env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    launcher_env.setenv(distributed.EXPERIMENTAL_SHARDED, "1")
    with pytest.raises(SeraInputError, match="zero3_save_16bit_model: true"):
        distributed.init()
    launcher_env.setenv("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "true")
    distributed.init()


def test_models_load_whole_while_a_zero3_config_is_live(monkeypatch):
    class Zero3Config:
        def is_zero3(self):
            return True

    live = Zero3Config()
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = weakref.ref(live)
    try:
        assert hf_deepspeed.is_deepspeed_zero3_enabled()
        with distributed.whole_model_loading():
            assert not hf_deepspeed.is_deepspeed_zero3_enabled()
            assert os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"  # every rank loads real weights
        assert hf_deepspeed.is_deepspeed_zero3_enabled()  # the trainer's settings are back afterwards
        assert os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def test_full_weights_load_across_tied_keys_and_refuse_a_mismatch(tokenizer):
    source, target = build_tiny_llama(tokenizer, seed=1), build_tiny_llama(tokenizer, seed=2)
    state = source.state_dict()
    tied = [k for k, v in target.state_dict().items()
            if any(v.data_ptr() == w.data_ptr() for j, w in target.state_dict().items() if j != k)]
    for key in tied[1:]:  # a gathered state dict may carry a tied tensor once
        state.pop(key)
    load_full_weights(target, state)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    state.pop("model.norm.weight")
    with pytest.raises(SeraRuntimeError, match="missing: \\['model.norm.weight'\\]"):
        load_full_weights(target, state)


class _RecordEachEpoch(TrainerCallback):
    """What a later callback (per-epoch saving) sees of the policy at each epoch's end."""

    def __init__(self, policy):
        self.policy, self.seen, self.trained_the_policy = policy, [], []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.seen.append({k: v.clone() for k, v in self.policy.state_dict().items()})
        self.trained_the_policy.append(model is self.policy)


def _train_twice(tokenizer, tmp_path, name: str):
    rows = pair_rows(tokenizer, 8)
    # where a run's policy is (load_model puts it on cuda when a GPU is visible); a CPU policy would be moved there
    # by the trainer that trains it in place, not by the one that trains a copy, and the two would not compare
    policy = build_tiny_llama(tokenizer, seed=3).to(trainer_device())
    recorder = _RecordEachEpoch(policy)
    config = TrainConfig(batch_size=4, grad_accum=1, learning_rate=1e-2, logging_steps=1)
    result = train_pass(policy, tokenizer, rows, config, get_daa("dpo"), epochs=2, iteration=1,
                        metrics_path=tmp_path / f"{name}.jsonl", callbacks=[recorder])
    return policy, recorder, result


def test_gathered_training_matches_training_in_place(monkeypatch, tmp_path, tokenizer):
    start = build_tiny_llama(tokenizer, seed=3).to(trainer_device()).state_dict()
    in_place, in_place_seen, in_place_result = _train_twice(tokenizer, tmp_path, "plain")
    monkeypatch.setattr(distributed, "shards_parameters", lambda: True)
    gathered, gathered_seen, gathered_result = _train_twice(tokenizer, tmp_path, "gathered")

    assert in_place_seen.trained_the_policy == [True, True]
    assert gathered_seen.trained_the_policy == [False, False]  # the trainer trained a copy
    assert next(gathered.parameters()).device == next(in_place.parameters()).device == trainer_device()
    in_place_epochs, gathered_epochs = in_place_seen.seen, gathered_seen.seen
    assert in_place_result.steps == gathered_result.steps == 4
    # on a GPU two runs of the same training may differ in the last bits (atomic adds in the embedding's backward)
    close = tolerance(trainer_device(), rtol=1.3e-6, atol=1e-5)  # torch.testing's fp32 default on the CPU
    assert gathered_result.final_loss == pytest.approx(in_place_result.final_loss, rel=close["rtol"])
    assert len(in_place_epochs) == len(gathered_epochs) == 2
    for plain_epoch, gathered_epoch in zip(in_place_epochs, gathered_epochs):  # per-epoch saving sees each epoch
        for key in start:
            torch.testing.assert_close(gathered_epoch[key], plain_epoch[key], **close)
    assert any(not torch.equal(start[k], gathered_epochs[0][k]) for k in start)
    for key, value in in_place.state_dict().items():
        torch.testing.assert_close(gathered.state_dict()[key], value, **close)


def _broadcast_worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        module = torch.nn.Linear(3, 2)
        with torch.no_grad():
            module.weight.fill_(float(rank + 1))
            module.bias.fill_(float(-rank))
        distributed.broadcast_module(module)
        results[rank] = (module.weight.sum().item(), module.bias.sum().item())
    finally:
        dist.destroy_process_group()


def test_rank_zero_weights_reach_every_rank(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_broadcast_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    assert dict(results) == {0: (6.0, 0.0), 1: (6.0, 0.0)}


def _fsdp2_worker(rank: int, init_file: str, results) -> None:
    """Shard a copy with real FSDP2 (gloo, CPU), train a step, gather as accelerate does, load, broadcast."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from sera.models import build_char_tokenizer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        tokenizer = build_char_tokenizer("abcdefghijklmnopqrstuvwxyz ?.,!")
        policy = build_tiny_llama(tokenizer, seed=0)
        trained = copy.deepcopy(policy)
        mesh = init_device_mesh("cpu", (2,))
        for layer in trained.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(trained, mesh=mesh)
        torch.manual_seed(rank)
        ids = torch.randint(0, len(tokenizer), (2, 8))
        trained(input_ids=ids, labels=ids).loss.backward()
        torch.optim.SGD(trained.parameters(), lr=0.1).step()
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
        state = get_model_state_dict(trained, options=options)  # accelerate's get_state_dict under FSDP2
        if rank == 0:
            load_full_weights(policy, state)
        distributed.broadcast_module(policy)
        sharded = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in trained.state_dict().items()}
        start = build_tiny_llama(tokenizer, seed=0).state_dict()
        results[rank] = (len(state),
                         max((policy.state_dict()[k] - v).abs().max().item() for k, v in sharded.items()),
                         max((policy.state_dict()[k] - start[k]).abs().max().item() for k in sharded))
    finally:
        dist.destroy_process_group()


def test_weights_of_a_real_fsdp2_model_come_back_whole_on_every_rank(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_fsdp2_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    (keys_0, gap_0, moved_0), (keys_1, gap_1, moved_1) = results[0], results[1]
    assert keys_0 > 0 and keys_1 == 0  # the full state dict arrives on rank 0 only
    assert gap_0 == gap_1 == 0.0  # both ranks' policies equal the sharded model's full weights
    assert moved_0 == moved_1 > 0  # which the training step changed


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_through_the_gather_path_select_like_one(tmp_path, tiny_model_dir, pairs_file):
    """On CPU accelerate trains with DDP even when FSDP is asked for, while sera takes its sharded-engine path:
    train a copy, gather its weights on rank 0, broadcast. The run must select exactly what one process does."""
    env = {**os.environ, "SERA_NO_PROGRESS": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # a CPU (gloo) test, also on a machine with one GPU
    args = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--iterations", "2", *FAST,
            "--grad-accum", "1", "--no-bootstrap"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "sera.cli", *args, "--output-dir", str(one), "--batch-size", "4"],
                   check=True, env=env, capture_output=True, timeout=600)
    refused = subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port", "29534", "-m", "sera.cli", *args,
                              "--output-dir", str(two), "--batch-size", "2"],
                             check=False, env={**env, "ACCELERATE_USE_FSDP": "true"}, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and distributed.EXPERIMENTAL_SHARDED in refused.stderr + refused.stdout
    result = subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port", "29534", "-m", "sera.cli", *args,
                             "--output-dir", str(two), "--batch-size", "2"],
                            check=False, env={**env, "ACCELERATE_USE_FSDP": "true", distributed.EXPERIMENTAL_SHARDED: "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gathers its weights back" in " ".join((result.stdout + result.stderr).split())  # the sharded path ran

    def selection(run):
        return [json.loads(line) for line in open(run / "iter_2" / "selection.jsonl")]

    single, double = selection(one), selection(two)
    assert [(r["id"], r["selected"]) for r in single] == [(r["id"], r["selected"]) for r in double]
    assert [r["margin"] for r in double] == pytest.approx([r["margin"] for r in single], abs=1e-5)


class _Zero3StaysLive(TrainerCallback):
    """What a GPU ZeRO-3 run leaves behind: accelerate's state keeps the trainer's DeepSpeed config, and so
    transformers' global ZeRO-3 switch, alive after training ends."""

    class Config:
        def is_zero3(self):
            return True

    def __init__(self):
        self.config = self.Config()

    def on_train_end(self, args, state, control, **kwargs):
        hf_deepspeed.set_hf_deepspeed_config(self.config)


def test_the_whole_policy_scores_after_a_sharded_pass_with_zero3_left_on(monkeypatch, tmp_path, tokenizer):
    """On an H200 the second iteration's scoring failed: TRL's fused head read the switch and treated the
    whole policy's weights as ZeRO-3 partitioned. After a sharded pass the switch must be off."""
    monkeypatch.setattr(distributed, "shards_parameters", lambda: True)
    live = _Zero3StaysLive()
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    try:
        policy = build_tiny_llama(tokenizer, seed=3)
        train_pass(policy, tokenizer, pair_rows(tokenizer, 8), TrainConfig(batch_size=4, grad_accum=1),
                   get_daa("dpo"), epochs=1, iteration=1, metrics_path=tmp_path / "m.jsonl", callbacks=[live])
        assert not hf_deepspeed.is_deepspeed_zero3_enabled()
        row = pair_rows(tokenizer, 1)[0]
        logps = sequence_logps(policy, [(row["prompt_ids"], row["chosen_ids"])])
        assert np.isfinite(logps).all()
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved

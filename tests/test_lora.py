"""LoRA via PEFT: one model in memory, the base (adapter off) as reference, adapters saved per iteration, --merge."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sera.errors import SeraInputError
from sera.io import read_jsonl
from sera.models import (add_lora, build_tiny_llama, iterate_view, load_lora_policy, load_model, lora_config,
                         save_model)
from sera.scoring import sequence_logps
from tests.devices import model_device, model_dtype, tolerance
from tests.test_cli_train import FAST, run_cli

SEQUENCES = [([3, 7, 8, 9], [10, 11, 12]), ([3, 13], [14, 15, 16, 17, 1])]


def _perturb(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B.default" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_views_share_one_model_and_saved_adapters_reload(tmp_path, tiny_model_dir, tokenizer, dtype):
    # bfloat16: the weights `--dtype auto` loads on a GPU (fp32 adapters on bf16 weights), here on any device
    def load(path):
        return load_model(str(path), dtype=dtype)

    base_logps = sequence_logps(load(tiny_model_dir), SEQUENCES)
    policy = add_lora(load(tiny_model_dir), lora_config(4), {"model": str(tiny_model_dir)})
    same = tolerance(model_device(policy), rtol=1e-6, atol=0)  # the same arithmetic on the same weights
    merged_close = tolerance(model_device(policy), model_dtype(policy), rtol=1e-5, atol=0)  # weights rounded once more
    np.testing.assert_allclose(sequence_logps(policy, SEQUENCES), base_logps, **same)  # fresh adapter = base
    _perturb(policy, 0)
    first = sequence_logps(policy, SEQUENCES)
    assert np.abs(first - base_logps).max() > 2e-2  # the adapter moves the log-probs beyond every tolerance here
    np.testing.assert_allclose(sequence_logps(iterate_view(policy, None), SEQUENCES), base_logps, **same)

    save_model(policy, tokenizer, tmp_path / "iter_1" / "model")
    saved = sorted(p.name for p in (tmp_path / "iter_1" / "model").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    _perturb(policy, 1)
    second = sequence_logps(policy, SEQUENCES)
    view = iterate_view(policy, tmp_path / "iter_1" / "model", "iter_1")  # iterate 1 = base + its adapter
    np.testing.assert_allclose(sequence_logps(view, SEQUENCES), first, **tolerance(model_device(policy), rtol=1e-5,
                                                                                    atol=0))
    np.testing.assert_allclose(sequence_logps(policy, SEQUENCES), second, **same)  # policy untouched
    assert policy.active_adapter == "default"
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)
    assert {p.dtype for n, p in policy.named_parameters() if ".lora_" in n} == {torch.float32}  # PEFT's upcast

    # an adapter folder loads as base + adapter, merged (in bf16: the merged weights are rounded)
    np.testing.assert_allclose(sequence_logps(load(tmp_path / "iter_1" / "model"), SEQUENCES), first, **merged_close)
    resumed = load_lora_policy(load(tiny_model_dir), tmp_path / "iter_1" / "model")
    np.testing.assert_allclose(sequence_logps(resumed, SEQUENCES), first, **tolerance(model_device(resumed),
                                                                                      rtol=1e-5, atol=0))
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == trainable  # trainable again
    save_model(policy, tokenizer, tmp_path / "merged", merge=True)
    merged = load(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    np.testing.assert_allclose(sequence_logps(merged, SEQUENCES), second, **merged_close)


def test_train_pass_moves_only_the_adapter_and_adds_no_reference_copy(tmp_path, tiny_model_dir, tokenizer):
    from sera.config import TrainConfig
    from sera.daa import get_daa
    from sera.training import train_pass

    policy = add_lora(load_model(str(tiny_model_dir)), lora_config(4))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    rows = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": c[::-1], "ref_chosen_logps": -5.0,
             "ref_rejected_logps": -5.0} for p, c in SEQUENCES * 4]
    config = TrainConfig(model="m", dataset="d", output_dir=str(tmp_path), batch_size=4, grad_accum=1,
                         learning_rate=1e-2, logging_steps=1)
    train_pass(policy, tokenizer, rows, config, get_daa("dpo"), epochs=1, iteration=1,
               metrics_path=tmp_path / "metrics.jsonl")
    assert list(policy.peft_config) == ["default"]
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_sera_train_with_lora_end_to_end(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, dtype):
    # auto: fp32 on a CPU, bf16 on a GPU; bfloat16: the GPU's weights and mixed-precision training on any device
    import sera.session

    loads = []
    real_load = sera.session.load_model
    monkeypatch.setattr(sera.session, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "2", "--lora-r", "4", "--lora-alpha", "8",
                            "--lora-target-modules", "q_proj,v_proj,up_proj", "--merge", "--ensemble-gamma", "0.3",
                            "--beta", "0.5", "--dtype", dtype, *FAST], monkeypatch, capsys)
    assert code == 0, output
    assert len(loads) == 1  # the base, once: reference and older iterates are views of the same model

    for t in (1, 2):
        folder = out / f"iter_{t}" / "model"
        assert (folder / "adapter_model.safetensors").exists() and not (folder / "model.safetensors").exists()
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as handle:
            keys = list(handle.keys())
        assert keys and all("lora_" in k and ".ref." not in k for k in keys)
        assert {k.split(".")[-3] for k in keys} == {"q_proj", "v_proj", "up_proj"}
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
    assert (out / "final" / "model.safetensors").exists()  # --merge: plain weights

    # iteration 2 ranked pairs by the IRM of r_ens = 0.7 r_1 + 0.3 r_0 (r_0 = 0), with r_1 = beta (log pi_1 - log
    # pi_base): recompute it from the saved adapter merged onto the base and from the base itself
    from sera.data import load_pairs
    from sera.models import load_tokenizer
    from sera.tokenization import PairTokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    pairs = {p.id: PairTokenizer(tokenizer, 1024).pair(p) for p in load_pairs(str(pairs_file)).pairs}
    rows = [r for r in read_jsonl(out / "iter_2" / "selection.jsonl") if r["source"] == "offline"]
    chosen = [(pairs[r["id"]].prompt_ids, pairs[r["id"]].chosen_ids) for r in rows]
    rejected = [(pairs[r["id"]].prompt_ids, pairs[r["id"]].rejected_ids) for r in rows]
    iterate, base = load_model(str(out / "iter_1" / "model"), dtype=dtype), load_model(str(tiny_model_dir), dtype=dtype)
    expected = 0.7 * 0.5 * ((sequence_logps(iterate, chosen) - sequence_logps(base, chosen))
                            - (sequence_logps(iterate, rejected) - sequence_logps(base, rejected)))
    # the run scored the adapter beside the weights, this the adapter merged into them (rounded again in bf16)
    np.testing.assert_allclose([r["margin"] for r in rows], expected,
                               **tolerance(model_device(iterate), model_dtype(iterate), rtol=1e-4, atol=1e-6))

    # --merge's weights are those of the last adapter loaded onto its base, to the bit in bf16 too
    final, last = load_model(str(out / "final"), dtype=dtype), load_model(str(out / "iter_2" / "model"), dtype=dtype)
    np.testing.assert_allclose(sequence_logps(final, chosen[:4]), sequence_logps(last, chosen[:4]),
                               **tolerance(model_device(final), rtol=1e-5, atol=1e-6))


def test_a_merged_save_in_bf16_is_the_adapter_folder_loaded_onto_its_base(tmp_path, tiny_model_dir, tokenizer):
    """--merge on bf16 weights (`--dtype auto` on a GPU) rounds each weight once, as PEFT's merge does."""
    policy = add_lora(load_model(str(tiny_model_dir), dtype="bfloat16"), lora_config(4), {"model": str(tiny_model_dir)})
    _perturb(policy, 0)
    save_model(policy, tokenizer, tmp_path / "adapter")
    save_model(policy, tokenizer, tmp_path / "merged", merge=True)
    merged = load_model(str(tmp_path / "merged"), dtype="bfloat16").state_dict()
    loaded = load_model(str(tmp_path / "adapter"), dtype="bfloat16").state_dict()
    assert merged.keys() == loaded.keys()
    assert not [key for key in merged if not torch.equal(merged[key], loaded[key])]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_policy_trained_in_mixed_precision_scores_as_its_saved_weights_load(tmp_path, tokenizer, lora):
    """Training in bf16 mixed precision (what `--dtype auto` does on a GPU; here on any device) leaves
    accelerate's autocast wrapper on the model; scoring runs the model's own forward all the same, so an iterate
    in memory scores as the same weights loaded from disk (a resumed run's policy, an older iterate)."""
    from sera.config import TrainConfig
    from sera.daa import get_daa
    from sera.training import train_pass
    from tests.conftest import pair_rows

    rows = pair_rows(tokenizer, 4)
    sequences = [(r["prompt_ids"], r["chosen_ids"]) for r in rows]
    policy = build_tiny_llama(tokenizer, seed=1)
    if lora:
        policy = add_lora(policy, lora_config(4))
    sequence_logps(policy, sequences)  # a run scores its policy before the first training pass
    config = TrainConfig(batch_size=4, grad_accum=1, learning_rate=1e-2, dtype="bfloat16")
    train_pass(policy, tokenizer, rows, config, get_daa("dpo"), epochs=1, iteration=1,
               metrics_path=tmp_path / "metrics.jsonl")
    save_model(policy, tokenizer, tmp_path / "saved")
    if lora:
        reloaded = load_lora_policy(build_tiny_llama(tokenizer, seed=1), tmp_path / "saved")
    else:
        reloaded = load_model(str(tmp_path / "saved"), dtype="float32")
    reloaded.to(model_device(policy))
    # through the wrapper the in-memory policy was 2e-3 off (CPU): fp32 weights run in bf16
    np.testing.assert_allclose(sequence_logps(policy, sequences), sequence_logps(reloaded, sequences),
                               rtol=0, atol=1e-5)
    assert not policy.training  # train_pass leaves it in eval mode; scoring did not change that


def test_lora_option_errors(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    common = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir", str(tmp_path / "o")]
    code, output = run_cli([*common, "--merge"], monkeypatch, capsys)
    assert code == 2 and "--merge needs LoRA" in output
    code, output = run_cli([*common, "--lora-r", "0"], monkeypatch, capsys)
    assert code == 2 and "--lora-r" in output
    with pytest.raises(SeraInputError, match="--lora-target-modules"):
        add_lora(load_model(str(tiny_model_dir)), lora_config(4, target_modules="no_such_module"))


def test_plain_dpo_with_lora_saves_an_adapter_per_epoch(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    out = tmp_path / "daa"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--method", "daa", "--iterations", "2", "--lora-r", "4", *FAST],
                           monkeypatch, capsys)
    assert code == 0, output
    for folder in (out / "iter_1" / "model", out / "iter_2" / "model", out / "final"):
        assert (folder / "adapter_model.safetensors").exists() and not (folder / "model.safetensors").exists()
    assert json.loads((out / "final" / "sera_base.json").read_text())["model"] == str(tiny_model_dir)
    final, last = load_model(str(out / "final")), load_model(str(out / "iter_2" / "model"))  # base + adapter
    np.testing.assert_allclose(sequence_logps(final, SEQUENCES), sequence_logps(last, SEQUENCES), rtol=1e-6)
    assert not np.allclose(sequence_logps(final, SEQUENCES), sequence_logps(load_model(str(tiny_model_dir)),
                                                                            SEQUENCES))

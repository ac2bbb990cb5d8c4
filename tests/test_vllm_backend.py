"""`--generation-backend vllm` in `sera train`: refused clearly where it cannot run, and wired so that
every sampling sees the policy's current weights (vLLM itself needs a GPU: a stand-in engine here)."""

import json

import torch

import sera.generation_vllm
from sera.generation import generate_completions
from tests.test_cli_train import FAST, run_cli


class _StandInEngine:
    """Records what a vLLM engine would be asked: started once from the policy, refreshed, asked to sample."""

    instances: list["_StandInEngine"] = []

    def __init__(self, model, tokenizer, *, seed: int, gpu_memory_utilization: float) -> None:
        self.policy, self.tokenizer = model, tokenizer
        self.memory = gpu_memory_utilization
        self.weights = self._copy(model)
        self.refreshes, self.samplings, self.closed = 0, [], False
        _StandInEngine.instances.append(self)

    @staticmethod
    def _copy(model) -> dict:
        return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    def refresh(self, model) -> None:
        self.refreshes += 1
        self.weights = self._copy(model)

    def generate(self, prompt_ids, params, *, seed=None):
        current = self.policy.state_dict()
        self.samplings.append(all(torch.equal(self.weights[k], v) for k, v in current.items()))
        return generate_completions(self.policy, self.tokenizer, prompt_ids, params, seed=seed)

    def close(self) -> None:
        self.closed = True


def _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, *extra):
    return run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                    str(tmp_path / "run"), "--iterations", "2", *FAST, "--generation-backend", "vllm", *extra],
                   monkeypatch, capsys)


def test_vllm_backend_is_refused_without_a_gpu(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    code, output = _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys)
    assert code == 2
    assert "--generation-backend vllm" in output and "CUDA GPU" in output
    assert not (tmp_path / "run" / "iter_1").exists()  # refused before any work


def test_vllm_backend_is_refused_with_lora(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    code, output = _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys, "--lora-r", "4")
    assert code == 2 and "--lora-r use the hf backend" in " ".join(output.split())


def test_each_sampling_sees_the_current_iterate(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    _StandInEngine.instances.clear()
    monkeypatch.setattr(sera.generation_vllm, "vllm_available", lambda: None)
    monkeypatch.setattr(sera.generation_vllm, "VLLMGenerator", _StandInEngine)
    code, output = _train(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys,
                          "--validation-ratio", "0.2", "--vllm-gpu-memory-utilization", "0.5")
    assert code == 0, output
    [engine] = _StandInEngine.instances  # started once for the whole run
    assert engine.memory == 0.5
    # samplings: held-out review of iterates 0, 1, 2 and bootstrapping in iteration 2, each from current weights
    assert len(engine.samplings) == 4 and all(engine.samplings)
    assert engine.refreshes == 3 and engine.closed
    selection = (tmp_path / "run" / "iter_2" / "selection.jsonl").read_text().splitlines()
    assert any(json.loads(line)["source"] == "generated" for line in selection)  # the engine's samples were used

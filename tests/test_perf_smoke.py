"""A tiny run of `benchmarks/perf.py`: its code paths work and its JSON has the ratios. No timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from tests.devices import trainer_device


@pytest.fixture(scope="module")
def perf(load_benchmark):
    return load_benchmark("perf.py")


def test_perf_smoke_writes_ratios(perf, tmp_path):
    output = tmp_path / "perf.json"
    # on the device TRL's trainers use (perf's sections hand its models to them, and they move them to cuda when a
    # GPU is visible): with `--device cpu` there, perf's own CPU tensors would meet cuda models
    device = trainer_device().type
    perf.main(["--profile", "smoke", "--sections", "scoring,overhead,generation", "--device", device,
               "--output", str(output)])
    report = json.loads(output.read_text())
    sections = report["sections"]
    assert not any("error" in s for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    scoring = sections["scoring"]
    assert scoring["ratio_engine_vs_naive"] > 0 and scoring["ratio_engine_vs_trl_precompute"] > 0
    # the engine computes the same log-probs as the naive loop and as TRL's precompute
    assert scoring["max_abs_diff_engine_vs_naive"] < 1e-3
    assert scoring["max_abs_diff_engine_vs_trl"] < 1e-3
    overhead = sections["overhead"]
    assert overhead["pool_size"] >= overhead["pairs"] and 0 < overhead["selected"] <= overhead["pool_size"]
    assert set(overhead["iteration_split"]) == {"scoring_and_selection", "generation", "training"}
    generation = sections["generation"]
    assert generation["tokens"]["batched"] > 0 and generation["vllm"]["status"] in ("skipped", "unavailable", "ok")
    assert report["summary"]["scoring_engine_vs_naive"] == scoring["ratio_engine_vs_naive"]


def test_memory_child_reports_peaks(perf):
    result = perf.memory_child(perf.PROFILES["smoke"], "sera_cached_reference", torch.device("cpu"))
    assert result["peak_rss_mib"] > 0 and result["peak_rss_over_start_mib"] >= 0


def test_cost_model_fit(perf):
    fitted = perf.fit([1, 2, 4], [1.5, 2.5, 4.5])
    assert fitted["slope_s_per_unit"] == pytest.approx(1.0) and fitted["intercept_s"] == pytest.approx(0.5)


def test_vllm_backend_says_why_it_cannot_run(tokenizer):
    from sera.errors import SeraInputError
    from sera.generation_vllm import VLLMGenerator, vllm_available
    from sera.models import build_tiny_llama

    reason = vllm_available()
    if reason is None:
        pytest.skip("vLLM and a GPU are present")
    with pytest.raises(SeraInputError, match="vLLM"):
        VLLMGenerator(build_tiny_llama(tokenizer), tokenizer)


def test_shared_prompt_scoring_equals_one_sequence_at_a_time(tokenizer):
    """The engine scores a prompt's completions in one row (block mask); values match scoring each alone,
    for a plain model and for a LoRA policy seen through an adapter view (base and adapter)."""
    import numpy as np

    from sera.models import add_lora, build_tiny_llama, iterate_view, lora_config
    from sera.scoring import sequence_logps

    def ids(text):
        return tokenizer(text).input_ids

    eos = [tokenizer.eos_token_id]
    sequences = [(ids("reverse abc ?"), ids(" cba.") + eos), (ids("reverse abc ?"), ids(" abc") + eos),
                 (ids("x"), ids("yy") + eos), (ids("reverse abc ?"), ids(" c") + eos), (ids("q"), []),
                 ([], ids("ab") + eos), (ids("x"), ids("zzzz") + eos)]
    model = build_tiny_llama(tokenizer, seed=5)
    shared = sequence_logps(model, sequences, batch_size=3)
    alone = sequence_logps(model, sequences, batch_size=3, share_prompts=False)
    np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-5)
    policy = add_lora(build_tiny_llama(tokenizer, seed=5), lora_config(4))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    for view in (policy, iterate_view(policy, None)):
        np.testing.assert_allclose(sequence_logps(view, sequences, batch_size=3),
                                   sequence_logps(view, sequences, batch_size=3, share_prompts=False),
                                   rtol=1e-5, atol=1e-5)

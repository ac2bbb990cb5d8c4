"""The paper's Table 4 as shipped presets: listed by `sera presets`, layered below --config and flags."""

import pytest

from sera.config import resolve_config
from sera.errors import SeraInputError
from sera.presets import describe_presets, preset_names, preset_values
from tests.test_cli_train import run_cli

BASE = {"model": "m", "dataset": "d.jsonl", "output_dir": "out"}


def test_the_three_presets_hold_table_4():
    assert preset_names() == ["mistral-7b-lora", "pythia-2.8b", "recommended", "tinyllama-1.1b"]
    tiny = resolve_config(None, BASE, preset="tinyllama-1.1b")
    assert (tiny.learning_rate, tiny.beta, tiny.batch_size, tiny.grad_accum) == (3e-6, 0.2, 8, 2)
    assert (tiny.iterations, tiny.selection_ratio, tiny.ensemble_gamma, tiny.lora_r) == (3, 0.7, 0.3, None)
    pythia = resolve_config(None, BASE, preset="pythia-2.8b")
    assert (pythia.learning_rate, pythia.batch_size, pythia.grad_accum) == (3e-6, 4, 4)
    mistral = resolve_config(None, BASE, preset="mistral-7b-lora")
    assert (mistral.learning_rate, mistral.beta, mistral.batch_size, mistral.grad_accum) == (5e-6, 0.01, 4, 4)
    assert mistral.lora_r == 8 and mistral.model == "m"  # the user names the model


def test_beta_follows_the_daa_and_layers_override_the_preset(tmp_path):
    assert resolve_config(None, {**BASE, "daa": "ipo"}, preset="tinyllama-1.1b").beta == 1.0
    assert resolve_config(None, {**BASE, "daa": "slic"}, preset="pythia-2.8b").beta == 0.2
    with pytest.raises(SeraInputError, match="pass --beta for --daa simpo"):
        resolve_config(None, {**BASE, "daa": "simpo"}, preset="tinyllama-1.1b")
    assert resolve_config(None, {**BASE, "daa": "simpo", "beta": 2.0}, preset="tinyllama-1.1b").beta == 2.0
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 1.0e-5\nbatch_size: 2\n")
    config = resolve_config(recipe, {**BASE, "batch_size": 1}, preset="mistral-7b-lora")
    assert (config.learning_rate, config.batch_size, config.grad_accum) == (1e-5, 1, 4)  # flag > recipe > preset
    with pytest.raises(SeraInputError, match="unknown preset 'llama-70b'"):
        resolve_config(None, BASE, preset="llama-70b")


def test_every_preset_value_is_a_train_option():
    for name, description, values in describe_presets():
        assert description and "model" not in values and "dataset" not in values
        resolve_config(None, BASE, preset=name)  # validates
        assert preset_values(name) == {k: v for k, v in values.items()}


def test_presets_command_lists_names_and_values(monkeypatch, capsys):
    code, output = run_cli(["presets"], monkeypatch, capsys)
    assert code == 0, output
    for name in preset_names():
        assert name in output
    assert "--lora-r" in output and "5e-06" in output and "ipo 1.0" in output


def test_train_flag_preset_reaches_the_run(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    import sera.loop
    import sera.report

    seen = []
    monkeypatch.setattr(sera.loop, "run", lambda config, **kwargs: seen.append(config) or {})
    monkeypatch.setattr(sera.report, "print_summary", lambda summary: None)
    common = ["--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir", str(tmp_path / "o")]
    code, output = run_cli(["train", "--preset", "pythia-2.8b", *common, "--batch-size", "8", "--daa", "ipo"],
                           monkeypatch, capsys)
    assert code == 0, output
    config = seen[0]
    assert (config.learning_rate, config.beta, config.batch_size, config.grad_accum) == (3e-6, 1.0, 8, 4)
    code, output = run_cli(["train", "--preset", "nope", *common], monkeypatch, capsys)
    assert code == 2 and "unknown preset" in output


def test_the_recommended_self_review_preset():
    """Chosen by the evidence of docs/self-review.md; beta stays the user's (or the default)."""
    config = resolve_config(None, BASE, preset="recommended")
    assert (config.method, config.selection, config.bootstrap, config.bootstrap_labeller, config.guard,
            config.lr_schedule, config.carry_optimizer) == ("sera", False, True, "likelihood", "none", "run", True)
    assert config.validation_ratio > 0 and config.beta == 0.1

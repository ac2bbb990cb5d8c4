"""Security defaults: no remote code unless asked, safetensors only, no secrets in run outputs."""

import yaml

from tests.test_cli_train import FAST, run_cli
from tests.test_self_review import GOLD


def test_run_outputs_are_safetensors_and_hold_no_secrets(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    secret = "sk-test-never-written-0123456789"
    monkeypatch.setenv("SERA_JUDGE_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    (tmp_path / "gold.py").write_text(GOLD)
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "2", *FAST,
                            "--bootstrap-labeller", f"judge:gold:{tmp_path / 'gold.py'}:reversal",
                            "--carry-optimizer"],  # its optimizer state is saved too: as safetensors
                           monkeypatch, capsys)
    assert code == 0, output
    assert secret not in output
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
            assert path.suffix not in (".bin", ".pt", ".pkl", ".pickle"), path
    assert yaml.safe_load((out / "config.yaml").read_text())["trust_remote_code"] is False
    assert (out / "final" / "model.safetensors").exists() and (out / "optimizer.safetensors").exists()

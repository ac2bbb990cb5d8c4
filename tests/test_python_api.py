"""The Python API: `SeraTrainer(model, args, train_dataset, processing_class).train()`, and the README's
example run as written (its hub downloads answered by a tiny model, its tokenizer and small data)."""

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset

from sera import SeraConfig, SeraTrainer
from sera.errors import SeraInputError
from tests.conftest import make_pairs

SMALL = dict(max_new_tokens=8, num_samples=3, batch_size=4, grad_accum=1, max_validation_pairs=4)
README = Path(__file__).resolve().parents[1] / "README.md"
TINY = dict(validation_ratio=0.15, batch_size=4, grad_accum=1, learning_rate=1e-3, max_new_tokens=8,
            logging_steps=1, num_samples=3)


def _readme_example() -> str:
    section = README.read_text().split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    import datasets
    import transformers

    asked = []
    load_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def model_from_hub(name, *args, **kwargs):
        asked.append(name)
        return load_pretrained(str(tiny_model_dir))

    def data_from_hub(name, split=None, **kwargs):
        asked.append(name)
        return Dataset.from_list([{"prompt": r["prompt"], "prompt_id": str(i),
                                   "chosen": [{"role": "user", "content": r["prompt"]},
                                              {"role": "assistant", "content": r["chosen"]}],
                                   "rejected": [{"role": "user", "content": r["prompt"]},
                                                {"role": "assistant", "content": r["rejected"]}]}
                                  for i, r in enumerate(make_pairs(16))])

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(datasets, "load_dataset", data_from_hub)
    import sera  # the example's own options, with a tiny model's sampling length and batch (CPU seconds)

    monkeypatch.setattr(sera, "SeraConfig", lambda **options: SeraConfig(**{**options, **SMALL}))
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), str(README), "exec"), {})
    out = tmp_path / "runs" / "sera-smollm2"
    summary = json.loads((out / "summary.json").read_text())
    assert asked[:2] == ["HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceH4/ultrafeedback_binarized"]
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2, 3]
    assert summary["data"]["format"] == "ultrafeedback-binarized"
    assert (out / "final" / "model.safetensors").exists() and (out / "iter_3" / "selection.jsonl").exists()


def test_a_path_model_and_a_list_of_dicts_write_what_sera_train_writes(tmp_path, tiny_model_dir, pairs_file):
    from tests.test_cli_train import FAST

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    args = SeraConfig(output_dir=str(tmp_path / "api"), iterations=2, **TINY)
    summary = SeraTrainer(model=str(tiny_model_dir), args=args, train_dataset=rows).train()
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
    import subprocess
    import sys

    cli = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "sera.cli", "train", "--model", str(tiny_model_dir), "--dataset",
                    str(pairs_file), "--output-dir", str(cli), "--iterations", "2", *FAST,
                    "--validation-ratio", "0.15"], check=True, capture_output=True, timeout=600)
    for name in ("iter_2/selection.jsonl", "iter_2/generated.jsonl"):
        assert (tmp_path / "api" / name).read_text() == (cli / name).read_text(), name
    files = {str(p.relative_to(cli)) for p in cli.rglob("*")}
    assert files == {str(p.relative_to(tmp_path / "api")) for p in (tmp_path / "api").rglob("*")}


def test_bad_arguments_are_input_errors(tmp_path, tiny_model_dir):
    with pytest.raises(SeraInputError, match="SeraConfig"):
        SeraTrainer(model=str(tiny_model_dir), args={"output_dir": "x"}, train_dataset=[])
    with pytest.raises(SeraInputError, match="output-dir is required"):
        SeraTrainer(model=str(tiny_model_dir), args=SeraConfig(), train_dataset=[{"prompt": "a"}])

"""`final/README.md`: a Hugging Face model card for the model a `sera train` run returns.

:func:`render_model_card` is a pure function of the run's `summary.json` and its resolved config
(`config.yaml`); :func:`write_model_card` writes it atomically. The card follows the Hub's convention: YAML
front matter (`base_model`, `library_name`, `tags`, `datasets` where the data is a hub dataset, `license`
where known), then the method and DAA, the key options, the data counts, the per-iteration table, the final
self-review diagnostics and warnings, and how to cite SeRA.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sera.io import _write_atomic

PAPER_URL = "https://arxiv.org/abs/2410.09362"

CITATION = """@inproceedings{ko2025sera,
  title     = {{SeRA}: Self-Reviewing and Alignment of Large Language Models using Implicit Reward Margins},
  author    = {Ko, Jongwoo and Dingliwal, Saket and Ganesh, Bhavana and Sengupta, Sailik and Bodapati, Sravan and
               Galstyan, Aram},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2025},
  url       = {https://arxiv.org/abs/2410.09362}
}"""

DAA_NAMES = {"dpo": "DPO", "ipo": "IPO", "slic": "SLiC-HF", "simpo": "SimPO"}

METHODS = {
    "sera": "SeRA (Algorithm 1 of the paper): after a warm-up iteration on the offline pairs, each iteration "
            "bootstraps new pairs from the policy's own samples (best vs worst of N by the labeller), ranks the "
            "offline and generated pairs by their implicit reward margin (IRM, the current and previous iterate's "
            "rewards blended by gamma) and trains one epoch of the DAA on the top-K pairs.",
    "daa": "the plain DAA baseline: its loss on every offline pair, for `iterations` epochs in one run.",
    "curri-dpo": "the Curri-DPO baseline: pairs of rated responses in a curriculum, largest rating gap first, one "
                 "stage per iteration, with the previous iterate as the reference.",
    "spa": "the SPA baseline: a labelled seed, then the policy's own samples labelled by its DPO implicit reward, "
           "low-confidence labels smoothed, with the previous iterate as the reference.",
}

KEY_OPTIONS = [  # (config key, label); shown where the config has them
    ("method", "method"), ("ablation", "ablation"), ("daa", "DAA"), ("beta", "beta"),
    ("simpo_margin", "SimPO margin"), ("iterations", "iterations T"), ("selection", "IRM selection"),
    ("selection_ratio", "selection ratio K"), ("selection_count", "selection count"),
    ("selection_mode", "selection mode"), ("selection_pool", "selection pool"), ("bootstrap", "bootstrapping"),
    ("num_samples", "samples per prompt N"), ("temperature", "temperature"), ("top_p", "top-p"),
    ("bootstrap_labeller", "bootstrap labeller"), ("ensemble_gamma", "ensemble gamma"), ("reference", "reference"),
    ("warmup", "warm-up iteration"), ("guard", "iteration guard"), ("learning_rate", "learning rate"),
    ("batch_size", "batch size (per device)"), ("grad_accum", "gradient accumulation"),
    ("lr_scheduler_type", "LR scheduler"), ("lr_schedule", "LR schedule"), ("carry_optimizer", "carry optimizer"),
    ("max_length", "max length"), ("lora_r", "LoRA rank"), ("lora_alpha", "LoRA alpha"), ("merge", "LoRA merged"),
    ("dtype", "dtype"), ("seed", "seed"),
]

ITERATION_COLUMNS = [  # (summary key, column title, digits; None = integer)
    ("pool_size", "pool", None), ("generated", "generated", None), ("selected", "kept", None),
    ("train_steps", "steps", None), ("final_loss", "loss", 4), ("mean_margin_selected", "IRM kept", 4),
    ("mean_margin_dropped", "IRM dropped", 4), ("val_irm_accuracy", "held-out IRM acc", 3),
    ("labeller_accuracy", "labeller acc", 3), ("length_drift", "length drift", 3),
    ("seconds_training", "train s", 1),
]

DIAGNOSTICS = [("val_irm_accuracy", "held-out IRM accuracy"), ("labeller_accuracy", "labeller accuracy"),
               ("displacement_corr", "implicit reward vs reference likelihood (Spearman)"),
               ("generated_share_kept", "share of kept pairs bootstrapped"),
               ("length_drift", "held-out response length / SFT's"), ("guard_score", "guard score")]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".txt", ".gguf", ".yaml", ".yml")


def is_hub_id(value: Any, local_paths: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether `value` reads as a Hugging Face Hub id (`name` or `namespace/name`), not a local path."""
    return (isinstance(value, str) and value not in local_paths and bool(_HUB_ID.match(value))
            and not value.lower().endswith(_DATA_SUFFIXES) and ".." not in value)


def front_matter(summary: dict, config: dict, *, local_paths: frozenset[str] | set[str] = frozenset(),
                 base_model: str | None = None, license: str | None = None) -> dict:
    """The card's metadata: base_model, library_name, tags, datasets, license (the keys that are known)."""
    meta: dict[str, Any] = {}
    base = base_model or config.get("model")
    if is_hub_id(base, local_paths):
        meta["base_model"] = base
    adapter = bool(config.get("lora_r")) and not config.get("merge")
    meta["library_name"] = "peft" if adapter else "transformers"
    daa = summary.get("daa") or config.get("daa") or "dpo"
    tags = ["sera", daa, "trl"]
    method = summary.get("method") or config.get("method") or "sera"
    if method not in ("sera", "daa"):
        tags.append(method)
    tags += ["alignment", "preference-optimization"]
    if config.get("lora_r"):
        tags += ["lora"] + (["peft"] if adapter else [])
    meta["tags"] = tags
    if is_hub_id(config.get("dataset"), local_paths):
        meta["datasets"] = [config["dataset"]]
    if license:
        meta["license"] = license
    meta["pipeline_tag"] = "text-generation"
    return meta


def render_model_card(summary: dict, config: dict, *, local_paths: frozenset[str] | set[str] = frozenset(),
                      base_model: str | None = None, license: str | None = None) -> str:
    """The model card of a finished run, as Markdown with YAML front matter.

    `local_paths`: values of `model`/`dataset` known to be local paths (never written as hub ids);
    `base_model`: the hub model to name as `base_model` when `config["model"]` is local; `license`: if known."""
    meta = front_matter(summary, config, local_paths=local_paths, base_model=base_model, license=license)
    method = summary.get("method") or config.get("method") or "sera"
    daa = summary.get("daa") or config.get("daa") or "dpo"
    daa_name = DAA_NAMES.get(daa, daa.upper())
    title = f"SeRA-{daa_name}" if method == "sera" else f"{daa_name} ({method})"
    model = config.get("model")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {title} of {_display(model)}", ""]
    lines += [f"This model was aligned from `{model}` with `sera`, an implementation of "
              f"[SeRA: Self-Reviewing and Alignment of Large Language Models using Implicit Reward Margins]"
              f"({PAPER_URL}) (Ko et al., ICLR 2025) on top of [TRL](https://github.com/huggingface/trl).", ""]
    if base_model and base_model != model:
        lines += [f"`{model}` was fine-tuned from [{base_model}](https://huggingface.co/{base_model}).", ""]
    lines += [f"**Method:** {METHODS.get(method, method)}", "",
              f"**DAA:** {daa_name} (its loss trains each iteration; its implicit reward "
              f"`r = beta * log(pi / pi_ref)`{' (length-normalised, reference-free)' if daa == 'simpo' else ''} "
              "reviews the data).", ""]
    final = summary.get("final_iterate")
    if final is not None:
        lines += [f"**This model** is iterate {final} of {_last_iteration(summary)}"
                  + (f" (chosen by the `{summary.get('guard')}` guard)" if summary.get("guard") not in (None, "none")
                     else "") + ".", ""]
    if meta["library_name"] == "peft":
        lines += ["This folder holds a LoRA adapter (load it with PEFT on the base model).", ""]
    lines += ["## Key options", "", "| option | value |", "|---|---|"]
    lines += [f"| {label} | {_value(config[key])} |" for key, label in KEY_OPTIONS if _applies(key, config)]
    lines += ["", "## Data", ""] + _data_lines(summary, config)
    lines += ["", "## Iterations", ""] + _iteration_table(summary)
    lines += ["", "## Final diagnostics", ""] + _diagnostics_lines(summary)
    lines += ["", "## Warnings", ""]
    warnings = summary.get("warnings") or []
    lines += [f"- {w}" for w in warnings] if warnings else ["None."]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def write_model_card(path: str | Path, summary: dict, config: dict) -> Path:
    """Render the card and write it atomically (rank 0 only). Local `model`/`dataset` paths are never named as
    hub ids; a local model made by `sera sft` from a hub model names that model as `base_model`, and a local
    model's own card lends its `license`."""
    path = Path(path)
    local = {value for value in (config.get("model"), config.get("dataset"))
             if isinstance(value, str) and _exists(value)}
    base_model, license = None, None
    model = config.get("model")
    if isinstance(model, str) and model in local and Path(model).is_dir():
        base_model = _sft_base(Path(model))
        license = _card_license(Path(model) / "README.md")
    _write_atomic(path, render_model_card(summary, config, local_paths=local, base_model=base_model,
                                          license=license))
    return path


# -- the body's parts ---------------------------------------------------------------------------

def _data_lines(summary: dict, config: dict) -> list[str]:
    data = summary.get("data", {})
    skipped = data.get("skipped") or {}
    dataset = config.get("dataset")
    lines = [f"- dataset: `{dataset}`" + (f" (format: {data['format']})" if data.get("format") else "")]
    if config.get("dataset_split"):
        lines.append(f"- split: `{config['dataset_split']}`")
    lines.append(f"- rows read: {data.get('rows_read', '-')}")
    if skipped:
        lines.append(f"- rows skipped: {sum(skipped.values())} ("
                     + ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) + ")")
    else:
        lines.append("- rows skipped: 0")
    lines.append(f"- offline (training) pairs: {data.get('offline_pairs', '-')}")
    lines.append(f"- validation (held-out) pairs: {data.get('validation_pairs', 0)}")
    generated = sum(int(it.get("generated") or 0) for it in summary.get("iterations", []))
    if generated:
        lines.append(f"- bootstrapped pairs (all iterations): {generated}")
    return lines


def _iteration_table(summary: dict) -> list[str]:
    rows = summary.get("iterations", [])
    columns = [c for c in ITERATION_COLUMNS if any(c[0] in it for it in rows)]
    lines = ["| iteration | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for it in rows:
        lines.append(f"| {it.get('iteration')} | "
                     + " | ".join(_number(it.get(key), digits) for key, _, digits in columns) + " |")
    return lines


def _diagnostics_lines(summary: dict) -> list[str]:
    rows = [("SFT model (iterate 0)", summary.get("sft_review") or {})]
    iterations = summary.get("iterations", [])
    final = summary.get("final_iterate")
    chosen = next((it for it in iterations if it.get("iteration") == final), iterations[-1] if iterations else {})
    rows.append((f"this model (iterate {chosen.get('iteration', '-')})", chosen))
    keys = [(key, label) for key, label in DIAGNOSTICS if any(key in row for _, row in rows)]
    if not keys:
        return ["No held-out diagnostics (the run held out no validation pairs)."]
    lines = ["Self-review on held-out pairs (see `sera`'s docs/self-review.md).", "",
             "| | " + " | ".join(label for _, label in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(_number(row.get(key), 3) for key, _ in keys) + " |")
    if summary.get("seconds_total") is not None:
        lines += ["", f"Total run time: {summary['seconds_total']:.0f} s."]
    return lines


# -- helpers ------------------------------------------------------------------------------------

_SERA_ONLY = {"selection", "selection_ratio", "selection_count", "selection_mode", "selection_pool", "bootstrap",
              "num_samples", "temperature", "top_p", "bootstrap_labeller", "ensemble_gamma", "warmup", "ablation"}


def _applies(key: str, config: dict) -> bool:
    """Whether an option is set and matters for this run (e.g. SeRA's own options only for --method sera)."""
    if config.get(key) is None:
        return False
    if key in _SERA_ONLY and config.get("method", "sera") != "sera":
        return False
    if key == "ablation":
        return config[key] != "none"
    if key == "simpo_margin":
        return config.get("daa") == "simpo"
    if key in ("lora_alpha", "merge"):
        return bool(config.get("lora_r"))
    if key in ("num_samples", "temperature", "top_p", "bootstrap_labeller"):
        return config.get("bootstrap", True)
    if key in ("selection_ratio", "selection_count", "selection_mode", "selection_pool"):
        return config.get("selection", True)
    return True


def _number(value: Any, digits: int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(int(value)) if digits is None else f"{value:.{digits}f}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return f"`{value}`" if isinstance(value, str) else str(value)


def _display(model: Any) -> str:
    text = str(model or "a model")
    return text if is_hub_id(text) else Path(text).name or text


def _last_iteration(summary: dict) -> Any:
    iterations = summary.get("iterations") or [{}]
    return iterations[-1].get("iteration", "-")


def _exists(value: str) -> bool:
    try:
        return Path(value).expanduser().exists()
    except (OSError, ValueError):
        return False


def _sft_base(model_dir: Path) -> str | None:
    """The hub model a local `sera sft` output was fine-tuned from (its sft_summary.json), if any."""
    import json

    try:
        base = json.loads((model_dir / "sft_summary.json").read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return base if is_hub_id(base) and not _exists(base) else None


def _card_license(readme: Path) -> str | None:
    """`license` from the front matter of a model card, if it has one."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None

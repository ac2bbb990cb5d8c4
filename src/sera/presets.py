"""The paper's Table 4 settings, shipped as YAML recipes in `sera/recipes/` (`--preset NAME`).

A preset is the lowest layer above the defaults: `--config` and command-line flags override it.
It never names the model -- the user does (`--model`). `beta` may be given per DAA
(`{dpo: 0.2, ipo: 1.0}`); the chosen `--daa` picks its value, and a DAA the preset has no value
for needs `--beta`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from sera.errors import SeraInputError

META_KEYS = ("description",)


def preset_names() -> list[str]:
    folder = resources.files("sera") / "recipes"
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """The preset's YAML as written (description included)."""
    if name not in preset_names():
        raise SeraInputError(f"--preset: unknown preset {name!r} (available: {', '.join(preset_names())}; "
                             "see `sera presets`)")
    text = (resources.files("sera") / "recipes" / f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise SeraInputError(f"preset {name}: not a mapping of option: value")
    return {key.replace("-", "_"): value for key, value in data.items()}


def preset_values(name: str) -> dict[str, Any]:
    """The options a preset sets (its description left out)."""
    return {key: value for key, value in read_preset(name).items() if key not in META_KEYS}


def describe_presets() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, description, options) for each shipped preset."""
    result = []
    for name in preset_names():
        data = read_preset(name)
        result.append((name, str(data.get("description", "")), preset_values(name)))
    return result


def format_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)

"""Recipes: YAML files that are serialized config dataclasses, plus `key=value` overrides from the CLI.

A recipe is data (see STYLE.md): `load_config(SFTConfig, "recipes/sft/x.yaml", ["train.epochs=1"])` returns
a checked dataclass, and `save_config` writes the resolved values next to a run's outputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kotune.common.options import ConfigError, from_dict

T = TypeVar("T")


# libyaml's loader where PyYAML has it: it refuses nesting deeper than 1,000 levels at once, where the pure Python
# scanner takes seconds (quadratic in depth) before it hits Python's recursion limit.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides; values are parsed as YAML (`1e-4`, `true`, `[a, b]`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = _override_value(item, raw)
    return data


def _override_value(item: str, raw: str):
    """The YAML value of one override; bad or absurdly nested YAML is the override's error, never a traceback."""
    if not raw.strip():
        return ""
    try:
        return yaml.load(raw, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"override {item[:80]!r}: value is not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"override {item[:80]!r}: value is nested too deeply") from None


# Recipes are a few dozen lines; a file this large is not one (and YAML would hold it several times over).
MAX_RECIPE_BYTES = 2**20


def read_recipe(path: str | Path) -> dict:
    """The mapping in YAML file `path` ({} for an empty file).

    Raises:
        ConfigError: `FILE:LINE: yaml: reason (column C)` for bad syntax, and a clear line for unreadable,
            non-UTF-8, deeply nested or enormous files, or a file that is not a mapping.
    """
    try:
        if Path(path).stat().st_size > MAX_RECIPE_BYTES:
            raise ConfigError(f"{path}: {Path(path).stat().st_size:,} bytes is not a recipe (at most {MAX_RECIPE_BYTES:,})")
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: encoding: invalid UTF-8 byte 0x{raw[e.start]:02x}; save the recipe as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        column = f" (column {mark.column + 1})" if mark else ""
        context = f", {e.context}" if e.context else ""
        raise ConfigError(f"{where}: yaml: {e.problem or 'invalid YAML'}{context}{column}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: yaml: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: yaml: nested too deeply to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: recipe: expected a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | None, overrides: list[str] | None = None) -> T:
    """Read recipe `path` (or nothing), apply overrides, and build `cls`."""
    data = apply_overrides(read_recipe(path) if path else {}, overrides or [])
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        # A key given on the command line is blamed on the override that set it, not on the recipe file.
        given = [o for o in overrides or [] if e.key and sets(o.partition("=")[0].strip(), e.key)]
        raise ConfigError(f"override {given[-1]!r}: {e}" if given else f"{path or 'overrides'}: {e}") from None


def sets(override_key: str, key: str) -> bool:
    """Whether an override of `override_key` sets (or is inside) the dotted `key`."""
    return key == override_key or key.startswith((f"{override_key}.", f"{override_key}["))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False), encoding="utf-8")

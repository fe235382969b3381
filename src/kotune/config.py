"""Recipes: YAML files that are serialized config dataclasses, plus `key=value` overrides from the CLI.

A recipe is data (see STYLE.md): `load_config(SFTConfig, "recipes/sft/x.yaml", ["train.epochs=1"])` returns
a checked dataclass, and `save_config` writes the resolved values next to a run's outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the file and the key (`key`: the dotted key, when one)."""

    key: str | None = None


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, cli: str | None = None,
        **kw: Any) -> Any:
    """A dataclass field with a help text shown by `kotune <stage> --help` (and as its flag's help).

    `flag` names the command-line flag when it is not `--field-name`; `cli` says how `add_flags` reads the field:
    "flag" (a required field given as a flag, not a positional), "comma" (a list as `a,b,c`), "repeat" (a list
    as a repeated flag); by default a required field is positional and a list takes several values.
    """
    metadata = {"help": help, "flag": flag, "cli": cli}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _optional_section(tp: Any) -> type | None:
    """The dataclass X of a field typed `X | None` (an optional recipe section), else None."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1])
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, get_args(tp)))}")
        return value
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(value, (str, int, float)) and item is str:
            value = [value]  # `files: a.json` means a one-element list
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads `2e-5` (no dot) as a string; accept it as the number everyone means.
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and type.

    Raises:
        ConfigError: naming `where` and the key for unknown, missing or ill-typed fields.
    """
    prefix = f"{where}." if where else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(fields)})"
            error = ConfigError(f"unknown key {prefix}{key}{hint}")
            error.key = f"{prefix}{key}"
            raise error
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            try:
                kwargs[name] = _coerce(data[name], hints[name], f"{prefix}{name}")
            except ConfigError as e:
                e.key = e.key or f"{prefix}{name}"  # the innermost key that is wrong
                raise
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {prefix}{name}: {f.metadata.get('help', '')}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


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
    data = read_recipe(path) if path else {}
    data = apply_overrides(data, overrides or [])
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


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field, `key (type, default): help`, nested sections flattened with dots."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.extend(describe(tp, f"{prefix}{f.name}."))
            continue
        section = _optional_section(tp)
        if section is not None:
            lines.append(f"  {prefix}{f.name} (optional section; absent = stage skipped): {f.metadata.get('help', '')}")
            lines.extend("  " + line for line in describe(section, f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f"default {f.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            default = f"default {f.default_factory()!r}"
        else:
            default = "required"
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, {default}): {f.metadata.get('help', '')}")
    return lines


# --- command-line flags generated from a config dataclass ---------------------------------------------------


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _comma_list(item: type):
    """argparse `type` for `--shots 0,5,10`: the comma-separated values as a list of `item`."""

    def parse(text: str) -> list:
        import argparse

        try:
            return [item(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {_type_name(item)} values, "
                                             f"got {text!r}") from None

    return parse


def add_flags(parser: Any, cls: type) -> None:
    """An argparse argument per field of dataclass `cls`, named, typed and documented by the field.

    `max_new_tokens: int` becomes `--max-new-tokens N`; a `Literal` gives choices, a `bool` a switch, a list several
    values (or see `opt`'s `cli`). Defaults stay in the dataclass: an absent flag leaves its field unset, so
    `from_args` builds `cls` with the dataclass's own default (shown in the help).
    """
    import argparse

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, style, help = hints[f.name], f.metadata.get("cli"), f.metadata.get("help", "")
        required = _required(f)
        default = None if required else _default(f)
        if default not in (None, False, [], "") and "default" not in help:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help = f"{help} (default {shown})"
        kw: dict[str, Any] = {"help": help.replace("%", "%%")}
        union = get_origin(tp) in (typing.Union, types.UnionType)
        args = [a for a in get_args(tp) if a is not type(None)] if union else [tp]
        base = args[0] if len(args) == 1 else str  # `int | str` (a number or `auto`) is read as text, checked by cls
        if get_origin(base) is list:
            (item,) = get_args(base)
            if style == "comma":
                kw.update(type=_comma_list(item), metavar=f.name.upper().rstrip("S") + ",...")
            elif style == "repeat":
                kw.update(action="append", type=item, metavar=f.name.upper().rstrip("S"))
            else:
                kw.update(nargs="+" if required else "*", type=item)
        elif base is bool:
            kw["action"] = "store_true"
        elif get_origin(base) is Literal:
            kw["choices"] = list(get_args(base))
        else:
            kw["type"] = base if base in (int, float) else str
        if required and style != "flag":
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument(_flag(f), dest=f.name, required=required, default=argparse.SUPPRESS, **kw)


def from_args(cls: type[T], args: Any) -> T:
    """Build `cls` from the argparse namespace `add_flags` filled (the flags given; defaults from `cls`).

    Raises:
        ConfigError: naming the flag of a value `cls` refuses.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        # the field a type error is about, or the one a `__post_init__` check names first ("limit: must be ...")
        name = (e.key or "").split(".")[0].split("[")[0] or str(e).partition(":")[0]
        if name in data and not _required(fields[name]):  # a flag's value: say the flag the user typed
            raise ConfigError(f"{_flag(fields[name])}: {str(e).removeprefix(f'{name}: ')}") from None
        raise

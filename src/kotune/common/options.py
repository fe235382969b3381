"""Config dataclass fields: `opt` (a field with its help), checked building from a mapping (`from_dict`), the
`--help` listing of recipe keys (`describe`), and command-line flags generated from the fields (`add_flags`,
`from_args`). Recipe files and overrides are kotune.config's job; this module reads no files.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the file and the key (`key`: the dotted key, when one)."""

    key: str | None = None


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, cli: str | None = None,
        metavar: str | None = None, **kw: Any) -> Any:
    """A dataclass field with a help text shown by `kotune <stage> --help` (and as its flag's help).

    `flag` names the command-line flag when it is not `--field-name`; `cli` says how `add_flags` reads the field:
    "flag" (a required field given as a flag, not a positional), "comma" (a list as `a,b,c`), "repeat" (a list
    as a repeated flag), "rest" (a list taking the trailing positionals, e.g. `key=value` overrides); by default a
    required field is positional and a list takes several values. `metavar` names the flag's value in `--help`.
    """
    metadata = {"help": help, "flag": flag, "cli": cli, "metavar": metavar}
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
    prefix, data = f"{where}." if where else "", {} if data is None else data
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
        default = "required" if _required(f) else f"default {_default(f)!r}"
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, {default}): {f.metadata.get('help', '')}")
    return lines


# --- command-line flags generated from a config dataclass ---------------------------------------------------


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def _comma_list(item: type):
    """argparse `type` for `--shots 0,5,10`: the comma-separated values as a list of `item`."""

    def parse(text: str) -> list:
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
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, style, help = hints[f.name], f.metadata.get("cli"), f.metadata.get("help", "")
        required = _required(f)
        default = None if required else _default(f)
        if default not in (None, False, [], "") and "default" not in help:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help = f"{help} (default {shown})"
        kw: dict[str, Any] = {"help": help.replace("%", "%%")}
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        union = get_origin(tp) in (typing.Union, types.UnionType)
        args = [a for a in get_args(tp) if a is not type(None)] if union else [tp]
        base = args[0] if len(args) == 1 else str  # `int | str` (a number or `auto`) is read as text, checked by cls
        if get_origin(base) is list:
            (item,) = get_args(base)
            if style == "comma":
                kw.update(type=_comma_list(item), metavar=f.name.upper().rstrip("S") + ",...")
            elif style == "repeat":
                kw.update(action="append", type=item, metavar=f.name.upper().rstrip("S"))
            elif style == "rest":  # a positional that may be empty; argparse wants a default for that
                parser.add_argument(f.name, nargs="*", type=item, default=default, **kw)
                continue
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

"""Commands' flags are generated from their config dataclasses: every field is a flag (or positional) that reaches
the config, and a command given no flags runs with exactly the dataclass's defaults."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pkgutil import resolve_name
from typing import Literal, get_args, get_origin

import pytest

import kotune.cli as cli
from kotune.common.options import ConfigError, from_args



def _config_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(command words, config class) of every command built from a config dataclass, found in the parser itself."""
    found = [(words, parser.get_default("config"))] if parser.get_default("config") else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _config_commands(sub, (*words, name))
    return found


COMMANDS = _config_commands(cli.build_parser())


def test_every_command_that_is_not_a_recipe_stage_is_built_from_a_config():
    assert {" ".join(words) for words, _ in COMMANDS} == {
        "tokenizer train", "eval kobest", "eval lm-eval", "eval generate", "eval judge", "chat", "serve", "model tiny", "lora merge",
        "data dedup", "data check", "data preview", "plan"}


def _changed(name: str, tp, default):
    """A valid value for the field that differs from its default."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    if name == "tasks":
        return ["copa", "wic"]
    if name == "moderation":
        return ["openai", "words:b b.txt"]
    if name.endswith("key_env"):
        return "SOME_API_KEY"
    if name.endswith("_url"):
        return "http://127.0.0.1:8000/v1"
    if name == "endpoints":
        return ["gpt-4o-mini@https://api.openai.com/v1@OPENAI_API_KEY"]
    if get_origin(tp) is list:
        return [0, 5] if get_args(tp)[0] is int else ["a.txt", "b b.txt"]
    if get_origin(tp) is Literal:
        return next(c for c in reversed(get_args(tp)) if c != default)
    if tp is bool:
        return True
    if tp in (int, float):
        return (default or 0) + (3 if tp is int else 0.25)
    return "some value"


def _argv(f: dataclasses.Field, value) -> list[str]:
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    if f.metadata.get("cli") == "rest":  # trailing positionals (key=value overrides)
        return list(map(str, value))
    if required and f.metadata.get("cli") != "flag":
        return list(map(str, value)) if isinstance(value, list) else [str(value)]
    if value is True:
        return [flag]
    if isinstance(value, list):
        style = f.metadata.get("cli")
        if style == "comma":
            return [flag, ",".join(map(str, value))]
        if style == "repeat":
            return [token for v in value for token in (flag, str(v))]
        return [flag, *map(str, value)]
    return [flag, str(value)]


@pytest.mark.parametrize("words, config", COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_every_field_is_a_flag_and_unset_flags_keep_the_dataclass_defaults(words, config):
    cls = resolve_name(config)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    required = {f.name: _changed(f.name, hints[f.name], None) for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    argv = [*words, *(t for f in fields if f.name in required for t in _argv(f, required[f.name]))]
    assert from_args(cls, cli.parse_args(argv)) == cls(**required)  # the defaults live in the dataclass only
    for f in fields:
        if f.name in required:
            continue
        value = _changed(f.name, hints[f.name], f.default if f.default is not dataclasses.MISSING else None)
        cfg = from_args(cls, cli.parse_args([*argv, *_argv(f, value)]))
        assert getattr(cfg, f.name) == value, f.name


def test_a_value_the_dataclass_refuses_names_the_flag():
    with pytest.raises(ConfigError, match=r"^--max-new-tokens: must be >= 1, got 0$"):
        from_args(resolve_name("kotune.serve.config.ChatConfig"), cli.parse_args(["chat", "m", "--max-new-tokens", "0"]))
    with pytest.raises(SystemExit):  # argparse refuses what is not even a number
        cli.parse_args(["eval", "kobest", "m", "--shots", "0,five"])


def test_building_every_commands_flags_imports_no_torch():
    """`kotune --help` answers at once: the config modules the flags come from stay light."""
    import subprocess
    import sys

    code = "import sys, kotune.cli as c; c.build_parser(); print(sorted({'torch', 'transformers', 'fastapi'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

"""Recipes are YAML of a dataclass; overrides are dotted keys; errors name the key."""

import re
from pathlib import Path
from pkgutil import resolve_name

import pytest
import yaml

from kotune.stages import RECIPE_STAGES
from kotune.config import ConfigError, load_config, save_config
from kotune.sft.config import SFTConfig

REPO = Path(__file__).resolve().parents[2]


def write_recipe(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_overrides_and_yaml_number_forms(tmp_path):
    path = write_recipe(tmp_path, "model: m\noutput_dir: o\ndata:\n  files: a.json\ntrain:\n  learning_rate: 2e-5\n")
    cfg = load_config(SFTConfig, path, ["train.epochs=1", "method=lora", "lora.r=4", "data.files=[x.json, y.json]"])
    assert cfg.train.learning_rate == 2e-5  # YAML 1.1 reads 2e-5 as a string
    assert (cfg.train.epochs, cfg.method, cfg.lora.r, cfg.data.files) == (1.0, "lora", 4, ["x.json", "y.json"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learnig_rate=1", "unknown key train.learnig_rate (did you mean train.learning_rate?)"),
        ("method=dora", "method: 'dora' is not one of full, lora, qlora"),
        ("train.global_batch_size=10", "must be a multiple of micro_batch_size"),
        ("train.epochs=many", "train.epochs: expected a number"),
        ("data.template=alpaca", "template: unknown 'alpaca'"),
        ("nokey", "not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, message):
    path = write_recipe(tmp_path, "model: m\noutput_dir: o\ndata: {files: [a.json]}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_config(SFTConfig, path, [override])


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match="missing required key output_dir"):
        load_config(SFTConfig, write_recipe(tmp_path, "model: m\ndata: {files: [a.json]}\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(SFTConfig, None, ["model=m", "output_dir=o", "data.files=[a.json]", "train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(SFTConfig, str(tmp_path / "config.yaml")) == cfg


# recipes/accelerate/ holds launch configs for `accelerate launch`, not kotune recipes (tests/unit/training/test_launch.py).
RECIPES = sorted(r for r in (REPO / "recipes").rglob("*.yaml") if r.parent.name != "accelerate")


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r.relative_to(REPO)) for r in RECIPES])
def test_every_recipe_is_valid(recipe):
    """Each recipe starts with the exact command that runs it, and validates against that stage's config."""
    first = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and "kotune " in first, f"{recipe}: first line must be the command"
    command = first.split("kotune ")[-1].split()
    if command[:2] == ["eval", "lm-eval"]:  # a task list; its names are checked in tests/unit/eval/test_eval_lm_tasks.py
        from kotune.eval.config import LmEvalSection

        assert load_config(LmEvalSection, str(recipe)).tasks and f"--tasks {recipe.relative_to(REPO)}" in first
        return
    stage = command[0]
    assert stage in RECIPE_STAGES, f"{recipe} is for `kotune {stage}`, which is not a recipe stage"
    cfg = load_config(resolve_name(RECIPE_STAGES[stage][1]), str(recipe))
    data = getattr(cfg, "data", None)
    for f in getattr(data, "files", []):
        # Shipped data must exist; real-scale recipes name files users download (documented in the recipe).
        if f.startswith("data/samples/"):
            assert (REPO / f).is_file(), f"{recipe}: {f} does not exist"
        else:
            assert "download" in recipe.read_text(encoding="utf-8").lower(), f"{recipe}: say where {f} comes from"
    assert yaml.safe_load(recipe.read_text(encoding="utf-8"))
    if stage == "pipeline":
        from kotune.pipeline.run import _stage_config

        for name in cfg.stages():
            spec = getattr(cfg, name)
            if getattr(spec, "recipe", None):
                assert (REPO / spec.recipe).is_file(), f"{recipe}: {spec.recipe} does not exist"
                wiring = {"model": "m", "output_dir": "o", "reward_model": "r"} if name != "selfinstruct" else {"output": "o"}
                _stage_config(name, spec, {k: v for k, v in wiring.items() if not (name != "ppo" and k == "reward_model")})


@pytest.mark.parametrize("body, message", [
    (b"model: m\ndata: {files: [a.json]\noutput_dir: o\n", r"r.yaml:3: yaml: did not find expected ',' or '}', while parsing a flow mapping \(column \d+\)"),
    (b"model: m\n  output_dir: o\n", r"r.yaml:2: yaml: mapping values are not allowed .*\(column \d+\)"),
    (b"model: m\noutput_dir: \xff\n", r"r.yaml:2: encoding: invalid UTF-8 byte 0xff"),
    (b"model: " + b"[" * 5000 + b"\n", r"r.yaml:1: yaml: .*nesting depth|r.yaml: yaml: nested too deeply"),
    (b"- model\n- m\n", r"r.yaml:1: recipe: expected a mapping of keys, got list"),
])
def test_bad_recipe_files_name_file_and_line(tmp_path, body, message):
    path = tmp_path / "r.yaml"
    path.write_bytes(body)
    with pytest.raises(ConfigError, match=message):
        load_config(SFTConfig, str(path))


def test_an_override_is_blamed_for_its_own_mistake_and_the_recipe_for_its_own(tmp_path):
    """Issue 22: a typo on the command line was reported as the recipe file's."""
    path = write_recipe(tmp_path, "model: m\noutput_dir: o\ndata: {files: [a.json]}\ntrain: {epochs: many}\n")
    with pytest.raises(ConfigError, match=r"^override 'train\.learnig_rate=1': unknown key train\.learnig_rate"):
        load_config(SFTConfig, path, ["train.epochs=1", "train.learnig_rate=1"])
    with pytest.raises(ConfigError, match=r"^override 'data\.files=\{a: 1\}': data\.files: expected a list"):
        load_config(SFTConfig, path, ["train.epochs=1", "data.files={a: 1}"])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: train\.epochs: expected a number"):
        load_config(SFTConfig, path, ["train.seed=1"])


@pytest.mark.parametrize("value, reason", [("[a, b", "not valid YAML"), ("[" * 5000, "not valid YAML|nested too deeply")])
def test_a_bad_override_value_is_the_overrides_error_not_a_traceback(tmp_path, value, reason):
    """Issue 20: a truncated or absurdly nested value typed on the command line."""
    path = write_recipe(tmp_path, "model: m\noutput_dir: o\ndata: {files: [a.json]}\n")
    with pytest.raises(ConfigError, match=rf"^override 'train\.epochs=.*': value is ({reason})"):
        load_config(SFTConfig, path, [f"train.epochs={value}"])

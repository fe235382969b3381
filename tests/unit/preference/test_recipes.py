"""Every preference recipe is a valid config, starts with its exact command, and the pipelines chain: each stage
reads the folder the previous one writes."""

from pathlib import Path

import pytest
import yaml
from kotune_test_paths import REPO

from kotune.config import load_config
from kotune.preference.config import DPOConfig, PPOConfig, RewardConfig

RECIPES = sorted((REPO / "recipes" / "preference").glob("*.yaml"))
STAGES = {"rm": ("reward", RewardConfig), "dpo": ("dpo", DPOConfig), "ppo": ("ppo", PPOConfig)}


def stage_of(path: Path):
    return STAGES[path.stem.rsplit("_", 1)[-1]]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_a_valid_config_with_its_command_first(path):
    command, cls = stage_of(path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# kotune {command} recipes/preference/{path.name}"
    cfg = load_config(cls, str(path))
    for f in cfg.data.files + getattr(cfg.data, "eval_files", []):
        if f.startswith("data/samples/"):
            assert (REPO / f).is_file(), f"{path.name}: {f} does not exist"
        else:  # real-scale data is downloaded by the user: the recipe must say from where
            assert "curl -L -o" in path.read_text(encoding="utf-8"), f"{path.name}: say where {f} comes from"


def load(name):
    path = REPO / "recipes" / "preference" / name
    return load_config(stage_of(path)[1], str(path))


@pytest.mark.parametrize("prefix", ["tiny", "chatkoalpaca_polyglot-ko-1.3b"])
def test_pipelines_chain_sft_reward_ppo_and_dpo(prefix):
    rm, ppo, dpo = load(f"{prefix}_rm.yaml"), load(f"{prefix}_ppo.yaml"), load(f"{prefix}_dpo.yaml")
    assert ppo.reward_model == rm.output_dir
    assert rm.model == ppo.model == dpo.model
    sft_recipe = {"tiny": "quickstart_tiny.yaml", "chatkoalpaca_polyglot-ko-1.3b": "polyglot-ko-1.3b_full.yaml"}[prefix]
    sft_path = REPO / "recipes" / "sft" / sft_recipe
    if sft_path.is_file():
        assert yaml.safe_load(sft_path.read_text(encoding="utf-8"))["output_dir"] == rm.model

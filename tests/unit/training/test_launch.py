"""Launching many processes: the shipped accelerate configs, kotune's --nproc shortcut, and the stages that refuse a
launch they cannot run correctly."""

import sys
from pathlib import Path

import pytest

from kotune.config import from_dict
from kotune.launch import launch_command, relaunch

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_accelerate_configs_load_and_say_how_to_launch(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # accelerate's own loader: unknown keys or bad values fail here
    expected = {"ddp.yaml": "MULTI_GPU", "fsdp2.yaml": "FSDP", "deepspeed_zero2.yaml": "DEEPSPEED",
                "deepspeed_zero3.yaml": "DEEPSPEED"}[path.name]
    assert config.distributed_type.value == expected
    assert path.read_text().startswith(f"# accelerate launch --config_file recipes/accelerate/{path.name} ")
    if expected == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
    if expected == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])


def test_nproc_runs_torchrun_and_accelerate_config_runs_accelerate_launch():
    stage = ["sft", "r.yaml", "train.epochs=1"]
    assert launch_command(stage, 2, None) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node", "2", "-m", "kotune.cli", *stage]
    config = str(REPO / "recipes/accelerate/fsdp2.yaml")
    assert launch_command(stage, 4, config) == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                                config, "--num_processes", "4", "-m", "kotune.cli", *stage]
    assert "--num_processes" not in launch_command(stage, None, config)  # the config's count


def test_launch_mistakes_are_refused_before_starting(monkeypatch):
    with pytest.raises(FileNotFoundError, match="recipes/accelerate"):
        launch_command(["sft", "r.yaml"], 2, "no/such/config.yaml")
    with pytest.raises(ValueError, match="at least 1"):
        relaunch(["sft", "r.yaml"], 0, None)
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="inside a launched process"):
        relaunch(["sft", "r.yaml"], 2, None)


def test_ppo_with_nproc_is_refused_before_anything_launches(capsys, monkeypatch):
    from kotune.cli import main

    monkeypatch.chdir(REPO)
    assert main(["ppo", "recipes/preference/tiny_ppo.yaml", "--nproc", "2"]) == 1
    assert "algo=rloo or algo=grpo" in capsys.readouterr().err


def test_ppo_refuses_to_run_in_several_processes(monkeypatch):
    from kotune.preference.config import PPOConfig
    from kotune.preference.ppo import run

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = from_dict(PPOConfig, {"model": "m", "reward_model": "rm", "output_dir": "unused", "data": {"files": ["p.jsonl"]}})
    with pytest.raises(ValueError, match="algo=rloo or algo=grpo"):
        run(cfg)


@pytest.mark.parametrize("env", [{"ACCELERATE_USE_FSDP": "true"}, {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}])
def test_trl_stages_refuse_sharded_launches(monkeypatch, tmp_path, env):
    from kotune.preference.config import DPOConfig
    from kotune.preference.trl_backend import start_stage

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = from_dict(DPOConfig, {"model": "m", "output_dir": str(tmp_path / "out"), "data": {"files": ["p.json"]}})
    with pytest.raises(ValueError, match="DDP"):
        start_stage(cfg, "dpo")
    assert not (tmp_path / "out").exists()

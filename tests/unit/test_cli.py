"""The command line: `key=value` overrides are taken wherever they stand after a command's positionals."""

import json

import pytest

import kotune.cli as cli
import kotune.launch
from kotune.stages import LAUNCHABLE_STAGES, RECIPE_STAGES
from kotune_test_paths import REPO

# A shipped recipe per stage, and an override its config shows back (a key every recipe of that stage has).
STAGE_CASES = {
    "sft": ("recipes/sft/quickstart_tiny.yaml", "output_dir", lambda c: c.output_dir),
    "pretrain": ("recipes/pretrain/tiny_ko.yaml", "output_dir", lambda c: c.output_dir),
    "reward": ("recipes/preference/tiny_rm.yaml", "output_dir", lambda c: c.output_dir),
    "dpo": ("recipes/preference/tiny_dpo.yaml", "output_dir", lambda c: c.output_dir),
    "ppo": ("recipes/preference/tiny_ppo.yaml", "output_dir", lambda c: c.output_dir),
    "pipeline": ("recipes/quickstart.yaml", "run_dir", lambda c: c.run_dir),
    "selfinstruct": ("recipes/selfinstruct/local_serve.yaml", "output", lambda c: c.output),
    "corpus": ("recipes/corpus/samples_ko.yaml", "output_dir", lambda c: c.output_dir),
}
# A flag each command takes, put between two overrides (algo=ppo refuses a launch, so the PPO case asks for GRPO).
FLAGS = {"pipeline": ["--force", "sft"], **{name: ["--nproc", "1"] for name in LAUNCHABLE_STAGES},
         "ppo": ["--nproc", "1", "algo=grpo"]}


def test_every_recipe_stage_is_covered():
    assert set(STAGE_CASES) == set(RECIPE_STAGES)


@pytest.mark.parametrize("stage", sorted(STAGE_CASES))
def test_overrides_after_flags_reach_the_stage(stage, monkeypatch):
    """`kotune STAGE RECIPE a=1 --flag x b=2`: both overrides are applied to the config the stage runs."""
    recipe, key, read = STAGE_CASES[stage]
    monkeypatch.chdir(REPO)
    ran, launched = [], []
    real_import = cli.resolve_name

    def fake_import(dotted):  # the stage's run function only records the config it is given
        return (lambda cfg, **kw: ran.append(cfg)) if dotted == RECIPE_STAGES[stage][2] else real_import(dotted)

    monkeypatch.setattr(cli, "resolve_name", fake_import)
    monkeypatch.setattr(kotune.launch, "relaunch", lambda args, nproc, config: launched.append(args) or 0)
    flags = FLAGS.get(stage, [])
    argv = [stage, recipe, f"{key}=first", *flags, f"{key}=second"]
    assert cli.main(argv) == 0
    overrides = [token for token in argv[2:] if "=" in token]
    if stage in LAUNCHABLE_STAGES:  # the launched command carries every override, in the order given
        assert launched == [[stage, recipe, *overrides]]
        assert cli.main([stage, recipe, *overrides]) == 0  # run here, without a launch
    assert read(ran[-1]) == "second"


def test_flags_and_overrides_in_any_order_parse_alike():
    orders = [
        ["sft", "r.yaml", "--nproc", "2", "train.epochs=1", "method=lora"],
        ["sft", "r.yaml", "train.epochs=1", "--nproc", "2", "method=lora"],
        ["sft", "--nproc", "2", "r.yaml", "train.epochs=1", "method=lora"],
    ]
    for argv in orders:
        args = cli.parse_args(argv)
        assert (args.recipe, args.overrides, args.nproc) == ("r.yaml", ["train.epochs=1", "method=lora"], 2)


def test_unknown_flags_are_still_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["sft", "r.yaml", "--nprocs", "2", "train.epochs=1"])
    assert "unrecognized arguments: --nprocs 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides takes no key=value
        cli.parse_args(["model", "tiny", "--out", "x", "hidden=8"])
    assert "unrecognized arguments: hidden=8" in capsys.readouterr().err


def test_data_preview_takes_overrides_after_its_flags(tiny_neox, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli.main(["data", "preview", "recipes/sft/quickstart_tiny.yaml", "--json", "--limit", "2",
                     f"model={tiny_neox}", "data.max_length=16"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    assert all(len(r["input_ids"]) <= 16 for r in rows)  # data.max_length=16, given after the flags, was applied

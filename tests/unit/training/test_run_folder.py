"""One run per output folder (issue 22): a fresh run refuses a used folder, --overwrite clears it, a resume continues
only a checkpoint of the same configuration and says from which step, and a resume without a checkpoint says so."""

import json

import pytest

from kotune.common.checkpoint import begin_checkpoint, publish_checkpoint
from kotune.common.run_folder import RUN_FILE, RunFolderError, check_resume_step, prepare_run_folder

IDENTITY = {"stage": "sft", "model": "/m", "data": {"files": [{"path": "/d.json", "bytes": 10}], "max_length": 256},
            "train": {"global_batch_size": 8, "micro_batch_size": 4, "seed": 42}, "method": "full"}


def finished_run(out, identity=IDENTITY, steps=(3, 6)):
    """A folder as a run leaves it: run.json, config.yaml, outputs and step checkpoints carrying the identity."""
    prepare_run_folder(out, identity, log=lambda *_: None)
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors"):
        (out / name).write_text("x")
    for step in steps:
        begin_checkpoint(out / "checkpoints", step)
        publish_checkpoint(out / "checkpoints", step, {"step": step, "run": identity})


def test_a_fresh_run_refuses_a_folder_with_another_runs_outputs_and_names_the_fixes(tmp_path):
    finished_run(tmp_path / "out")
    with pytest.raises(RunFolderError, match=r"already holds another run's checkpoints and outputs .*--overwrite.*"
                                             r"train\.resume=true.*another output_dir"):
        prepare_run_folder(tmp_path / "out", IDENTITY, log=lambda *_: None)
    # An empty or absent folder is fine.
    (tmp_path / "empty").mkdir()
    assert prepare_run_folder(tmp_path / "empty", IDENTITY) is None
    assert json.loads((tmp_path / "empty" / RUN_FILE).read_text()) == IDENTITY


def test_overwrite_clears_the_earlier_run_but_keeps_caches(tmp_path):
    out = tmp_path / "out"
    finished_run(out)
    (out / "tokens").mkdir()
    (out / "tokens" / "train.bin").write_text("cache")
    lines = []
    assert prepare_run_folder(out, IDENTITY, overwrite=True, keep=("tokens",), log=lines.append) is None
    assert sorted(p.name for p in out.iterdir()) == [RUN_FILE, "tokens"]
    assert "cleared" in lines[0]


def test_overwrite_refuses_a_folder_kotune_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="kotune did not write it"):
        prepare_run_folder(tmp_path, IDENTITY, overwrite=True)
    assert (tmp_path / "notes.txt").is_file()


def test_resume_says_which_step_it_continues_from(tmp_path):
    finished_run(tmp_path)
    lines = []
    found = prepare_run_folder(tmp_path, IDENTITY, resume=True, log=lines.append)
    assert found[1]["step"] == 6 and found[0].name == "step-0000006"
    assert "resuming from" in lines[0] and "(step 6)" in lines[0]


@pytest.mark.parametrize("key, value", [
    ("model", "/other-model"), ("method", "lora"), ("train", {**IDENTITY["train"], "global_batch_size": 16}),
    ("data", {**IDENTITY["data"], "files": [{"path": "/d.json", "bytes": 11}]}),
])
def test_resume_refuses_a_checkpoint_of_another_configuration_and_says_what_differs(tmp_path, key, value):
    finished_run(tmp_path)
    changed = {**IDENTITY, key: value}
    with pytest.raises(RunFolderError, match=rf"cannot resume from .*step-0000006.*\n  {key}[.:]"):
        prepare_run_folder(tmp_path, changed, resume=True)


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(tmp_path):
    lines = []
    assert prepare_run_folder(tmp_path / "new", IDENTITY, resume=True, log=lines.append) is None
    assert "holds no complete checkpoint: starting from step 0" in lines[0]


def test_resume_refuses_a_checkpoint_without_a_run_record(tmp_path):
    begin_checkpoint(tmp_path / "checkpoints", 4)
    publish_checkpoint(tmp_path / "checkpoints", 4, {"step": 4})
    with pytest.raises(RunFolderError, match="no run record"):
        prepare_run_folder(tmp_path, IDENTITY, resume=True)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(RunFolderError, match="contradict"):
        prepare_run_folder(tmp_path, IDENTITY, resume=True, overwrite=True)


def test_a_checkpoint_at_or_past_the_last_step_is_refused(tmp_path):
    found = (tmp_path / "checkpoints" / "step-0000009", {"step": 9})
    with pytest.raises(RunFolderError, match="at step 9, and this run has 3 step"):
        check_resume_step(found, 3)
    check_resume_step(found, 10)


def test_a_run_that_stopped_before_training_does_not_block_the_next(tmp_path):
    """A wrong model path or bad data stops a run after it wrote run.json and config.yaml: nothing to mix with."""
    prepare_run_folder(tmp_path, IDENTITY)
    (tmp_path / "config.yaml").write_text("x")
    assert prepare_run_folder(tmp_path, {**IDENTITY, "model": "/fixed"}) is None
    (tmp_path / "metrics.jsonl").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds another run's outputs"):
        prepare_run_folder(tmp_path, IDENTITY)

"""A kill during a checkpoint save never leaves the newest checkpoint unreadable."""

import json

from kotune.common.checkpoint import begin_checkpoint, latest_checkpoint, list_checkpoints, publish_checkpoint


def save(root, step, payload, keep=2):
    folder = begin_checkpoint(root, step)
    (folder / "weights.txt").write_text(payload)
    return publish_checkpoint(root, step, {"step": step}, keep)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path):
    save(tmp_path, 10, "ten")
    folder = begin_checkpoint(tmp_path, 20)
    (folder / "weights.txt").write_text("half-writ")  # killed here: never published
    found, state = latest_checkpoint(tmp_path)
    assert state == {"step": 10} and (found / "weights.txt").read_text() == "ten"
    # A checkpoint folder without state.json (written last) is not complete either.
    (tmp_path / "step-0000030").mkdir()
    assert latest_checkpoint(tmp_path)[1] == {"step": 10}
    # The next save clears the leftover and publishes.
    save(tmp_path, 20, "twenty")
    assert latest_checkpoint(tmp_path)[1] == {"step": 20}
    assert not (tmp_path / "step-0000020.tmp").exists()


def test_old_checkpoints_are_pruned(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path, step, str(step), keep=2)
    assert [json.loads((p / "state.json").read_text())["step"] for p in list_checkpoints(tmp_path)] == [3, 4]

"""Fingerprints: content hashes (streamed, cached by stat) and the words that say what changed."""

from __future__ import annotations

import hashlib
import os
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from kotune.pipeline import fingerprint
from kotune.pipeline.fingerprint import FileHashes, changes, flatten


def test_a_file_is_hashed_by_its_whole_content_read_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "CHUNK", 7)  # many chunks, the last one short
    data = tmp_path / "big.bin"
    content = os.urandom(1000)
    data.write_bytes(content)
    assert FileHashes().file(data) == hashlib.blake2b(content, digest_size=20).hexdigest()


def test_a_folder_is_each_file_under_it_by_path_hidden_ones_left_out(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / ".cache").mkdir()
    for name in ["config.json", "sub/weights.bin", ".cache/lock", ".hidden"]:
        (model / name).write_text(name)
    hashes = FileHashes().tree(str(model))
    assert list(hashes) == [str(model / "config.json"), str(model / "sub" / "weights.bin")]


def test_content_hashes_are_cached_by_stat_and_a_same_size_edit_is_still_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "RACY_NS", 0)  # trust stats at once (the real rule waits out clock ticks)
    data = tmp_path / "a.json"
    data.write_text("[1]")
    hashes = FileHashes(tmp_path / "cache.json")
    first = hashes.file(data)
    hashes.save()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    cached = FileHashes(tmp_path / "cache.json")
    assert cached.file(data) == first and reads == []  # unchanged: not read again
    stat = data.stat()
    time.sleep(0.05)  # past the file system's timestamp tick, so the ctime of the edit differs
    data.write_text("[2]")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: the ctime still moved
    assert cached.file(data) != first and reads == [data]


def test_a_file_written_just_now_is_not_trusted_by_its_stat(tmp_path):
    data = tmp_path / "a.json"
    data.write_text("[1]")
    hashes = FileHashes(tmp_path / "cache.json")
    hashes.file(data)
    assert hashes.entries == {}  # a second write within the same clock tick could keep size and mtime


def test_flatten_gives_dotted_keys_with_json_values():
    assert flatten({"train": {"lr": 1e-4, "betas": (0.9, 0.95)}, "set": {}, "files": ["a"]}) == {
        "train.lr": 1e-4, "train.betas": [0.9, 0.95], "set": {}, "files": ["a"]}


def test_changes_name_each_key_file_and_earlier_stage():
    old = {"config": {"train.learning_rate": 0.002, "data.template": "koalpaca"},
           "files": {"data/a.json": "1", "data/b.json": "2"}, "upstream": {"pretrain": "r1"}}
    new = {"config": {"train.learning_rate": 0.0001, "train.max_steps": 5},
           "files": {"data/a.json": "9", "data/c.json": "3"}, "upstream": {"pretrain": "r2", "selfinstruct": "r3"}}
    assert changes(old, new) == [
        "train.learning_rate 0.002 -> 0.0001", 'data.template "koalpaca" -> (no longer set)',
        "train.max_steps (not set) -> 5", "data/a.json changed", "data/b.json no longer read", "data/c.json newly read",
        "pretrain was redone since", "now starts from selfinstruct"]


values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                   st.lists(st.integers(), max_size=3))
prints = st.fixed_dictionaries({"config": st.dictionaries(st.sampled_from("abcde"), values, max_size=4),
                                "files": st.dictionaries(st.sampled_from("fgh"), st.sampled_from("xyz"), max_size=3),
                                "upstream": st.dictionaries(st.sampled_from(["sft", "pretrain"]),
                                                            st.sampled_from(["r1", "r2"]), max_size=2)})


@settings(max_examples=100, deadline=None)
@given(prints, prints)
def test_changes_are_empty_exactly_when_the_fingerprints_agree(a, b):
    assert (changes(a, b) == []) == (a == b)
    assert changes(a, a) == []

"""What a pipeline stage was made from, so a rerun reuses a stage only when none of it changed.

A fingerprint is `{"config": {dotted key: value}, "files": {path: content hash}, "upstream": {stage: run id}}`:
the stage's resolved configuration, the content of every file or folder it reads (data, corpora, seeds, prompt
files, a base model given as a folder) and which run of each earlier stage it starts from. `changes` compares two
fingerprints and says what differs in words a user can act on.

Content hashes are BLAKE2b over the file, read in 1 MiB chunks, and cached in the run folder by (size, mtime,
ctime, inode): the shipped data hashes in milliseconds, and a 25 GB base model is read once per run folder, not on
every rerun. A file changed within the last seconds is not cached, since a second write in the same clock tick
could keep its size and mtime (git's "racy clean" problem).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
RACY_NS = 2_000_000_000  # files touched this recently are hashed again next time instead of trusted by their stat
LARGE = 1 << 30  # files above this say they are being hashed (a 25 GB model takes a while, once)
SHOWN = 6  # changes named in one message; the rest are counted


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1}}` -> `{"train.lr": 1}`, values as they read back from JSON (tuples become lists)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.loads(json.dumps(value, ensure_ascii=False, default=str))
    return flat


class FileHashes:
    """Content hashes of files, cached in `cache` (JSON) by their stat so unchanged files are not read again."""

    def __init__(self, cache: Path | None = None, log=None):
        self.cache, self.log = cache, log
        self.entries: dict[str, list] = {}
        if cache is not None and cache.is_file():
            try:
                self.entries = json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache only costs reading the files again

    def file(self, path: Path) -> str:
        st = path.stat()
        key = os.path.abspath(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        cached = self.entries.get(key)
        if cached and cached[:4] == stamp:
            return cached[4]
        if st.st_size > LARGE and self.log:
            self.log(f"hashing {path} ({st.st_size / 2**30:.1f} GiB): once, later runs trust its size and time")
        digest = hashlib.blake2b(digest_size=20)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            self.entries[key] = [*stamp, value]
        else:
            self.entries.pop(key, None)
        return value

    def tree(self, name: str) -> dict[str, str]:
        """`name`'s hash, or for a folder each file's under it (hidden files and folders left out), by path."""
        path = Path(name)
        if path.is_file():
            return {name: self.file(path)}
        hashes = {}
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(f for f in files if not f.startswith(".")):
                full = Path(root) / file
                hashes[str(Path(name) / full.relative_to(path))] = self.file(full)
        return hashes

    def save(self) -> None:
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            self.cache.write_text(json.dumps(self.entries), encoding="utf-8")


def strings(value: Any):
    """Every string inside a (nested) config value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (dict, list, tuple)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from strings(v)


_ABSENT = object()


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints: `train.learning_rate 0.002 -> 0.0001`, `data/x.json changed`, ...

    Returns:
        One phrase per change, configuration first, then files, then earlier stages; empty when they agree.
    """
    found = []
    for part, gone, added, changed in (
            ("config", "{} {old} -> (no longer set)", "{} (not set) -> {new}", "{} {old} -> {new}"),
            ("files", "{} no longer read", "{} newly read", "{} changed"),
            ("upstream", "no longer starts from {}", "now starts from {}", "{} was redone since")):
        before, after = old.get(part, {}), new.get(part, {})
        absent = None if part == "upstream" else _ABSENT  # an upstream run id may be None: as good as absent
        for key in [*before, *(k for k in after if k not in before)]:
            if before.get(key, absent) != after.get(key, absent):
                phrase = gone if key not in after else added if key not in before else changed
                found.append(phrase.format(key, old=_shown(before.get(key)), new=_shown(after.get(key))))
    return found


def summary(found: list[str]) -> str:
    """The changes as one line, the first few named and the rest counted."""
    more = len(found) - SHOWN
    return ", ".join(found[:SHOWN]) + (f" and {more} more" if more > 0 else "")

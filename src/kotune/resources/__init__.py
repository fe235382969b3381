"""Data the commands read at run time, shipped inside the package so that a wheel install has it too.

- `kobest/v1.0/<task>/<split>.jsonl`: KoBEST v1.0 for `kotune eval kobest` (CC BY-SA 4.0; kobest/README.md);
- `prompts/ko_generation_50.jsonl`: the prompt set of `kotune eval generate` (prompts/README.md);
- `judge/questions.jsonl`: the Korean questions of `kotune eval judge` (judge/README.md);
- `corpus/`: the Korean text `kotune model tiny` trains its tokenizer on, copies of three files of data/samples/
  (corpus/README.md).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """The file or folder `parts` below this package, as a real path.

    lm-eval and `datasets` open data by file name, so a resource must be a file on disk: true of a source checkout
    and of any wheel pip installs (pip unpacks wheels). A zipped import has no such path, and this says so.

    Returns:
        Path to the resource (it exists).
    """
    found = files(__name__).joinpath(*parts)
    if not isinstance(found, Path):
        raise RuntimeError(f"kotune's data {'/'.join(parts)} is inside an archive ({found}); "
                           "install kotune unpacked (pip install) to run this command")
    if not found.exists():
        raise FileNotFoundError(f"kotune's data {found} is missing: the install is incomplete; reinstall kotune")
    return found

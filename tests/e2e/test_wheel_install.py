"""What runs from a wheel, ships in the wheel: kotune built as a wheel, installed into a fresh venv outside the
checkout, runs `kotune model tiny`, `kotune eval kobest --limit 5` and `kotune eval generate --limit 2` there,
with the KoBEST data, the prompts and the tokenizer corpus read from the installed package.

The new venv sees the test venv's installed dependencies (torch, lm-eval, ...) through a .pth line naming that
site-packages folder; a .pth path line only adds the folder to sys.path, it does not run that folder's own .pth
files, so the test venv's editable kotune install stays invisible and the wheel's kotune is the one imported.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kotune_test_paths import REPO

pytestmark = pytest.mark.slow


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the project (a build in the checkout would leave build/ and egg-info there)."""
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(project)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp / "dist").glob("kotune-*.whl")
    return wheel


def _venv_with_wheel(tmp: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel; the .pth line is added after pip ran, so pip never sees the editable kotune."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)
    site = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "kotune-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_runs_tiny_kobest_and_generate_outside_the_checkout(tmp_path):
    venv = _venv_with_wheel(tmp_path, _build_wheel(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"

    def run(*args: str) -> str:
        result = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    where = run(venv / "bin" / "python", "-c", "import kotune; print(kotune.__file__)").strip()
    assert Path(where).is_relative_to(venv), f"kotune imported from {where}, not from the wheel"
    installed = Path(where).parent / "resources"

    kotune = venv / "bin" / "kotune"
    assert "saved tiny gpt-neox model" in run(kotune, "model", "tiny", "--out", "tiny", "--vocab-size", "2000")
    # the packaged corpus is the checkout's: the same tokenizer comes out of the checkout's build
    from kotune.models.tiny import build_tiny_model

    ours = build_tiny_model(tmp_path / "checkout-tiny", vocab_size=2000)
    assert (work / "tiny" / "tokenizer.json").read_bytes() == (ours / "tokenizer.json").read_bytes()

    assert "KoBEST 0-shot, macro-F1" in run(kotune, "eval", "kobest", "tiny", "--limit", "5", "--out", "kobest")
    kobest = json.loads((work / "kobest" / "kobest.json").read_text(encoding="utf-8"))
    assert Path(kobest["settings"]["data_dir"]) == installed / "kobest" / "v1.0"
    (model,) = kobest["models"]
    assert sorted(s["task"] for s in model["scores"]) == sorted(["boolq", "copa", "wic", "hellaswag", "sentineg"])
    assert all(s["n"] == 5 and 0 <= s["acc"] <= 1 for s in model["scores"])

    run(kotune, "eval", "generate", "tiny", "--limit", "2", "--max-new-tokens", "8", "--out", "generate")
    generation = json.loads((work / "generate" / "generation.json").read_text(encoding="utf-8"))
    assert Path(generation["settings"]["prompts"]) == installed / "prompts" / "ko_generation_50.jsonl"
    rows = [json.loads(line) for line in (work / "generate" / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    shipped = (REPO / "src/kotune/resources/prompts/ko_generation_50.jsonl").read_text(encoding="utf-8").splitlines()
    assert [r["id"] for r in rows] == [json.loads(line)["id"] for line in shipped[:2]]
    assert all(0 <= r["n_tokens"] <= 8 for r in rows)

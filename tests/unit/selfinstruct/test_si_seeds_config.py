"""Shipped seeds are Korean end to end; seed and recipe errors name the file, line and key."""

import json
import re
from pathlib import Path

import pytest

from kotune_test_paths import REPO
from kotune.config import ConfigError, load_config
from kotune.data.schema import DataError
from kotune.selfinstruct.config import SelfInstructConfig
from kotune.selfinstruct.prompt import load_header
from kotune.selfinstruct.seeds import load_seed_tasks

RECIPES = sorted((REPO / "recipes" / "selfinstruct").glob("*.yaml"))


def hangul_share(text):
    letters = [c for c in text if c.isalpha()]
    return sum("\uac00" <= c <= "\ud7a3" for c in letters) / max(1, len(letters))


def test_shipped_seed_tasks_are_korean_in_instruction_and_output():
    cfg = SelfInstructConfig(output="x.jsonl", teacher=load_config(SelfInstructConfig, str(RECIPES[0])).teacher)
    tasks = load_seed_tasks([str(REPO / p) for p in cfg.seeds])
    assert len(tasks) >= 140
    assert all(hangul_share(t.instruction) > 0.5 for t in tasks)
    # outputs: Korean, except code and bare numbers/lists (no letters, or a handful of code tasks)
    english = [t for t in tasks if hangul_share(t.output) < 0.5 and sum(c.isalpha() for c in t.output) > 12]
    assert len(english) <= 3, [t.output[:40] for t in english]


def test_both_seed_formats_load_and_errors_name_file_line_field(tmp_path):
    good = tmp_path / "seeds.jsonl"
    good.write_text(
        json.dumps({"instruction": "요약하세요.", "input": "긴 글", "output": "짧은 글"}, ensure_ascii=False) + "\n"
        + json.dumps({"id": "t1", "instruction": "시를 쓰세요.", "instances": [{"input": "", "output": "봄"}],
                      "is_classification": False}, ensure_ascii=False) + "\n", encoding="utf-8")
    tasks = load_seed_tasks([str(good)])
    assert [(t.instruction, t.input, t.output) for t in tasks] == [("요약하세요.", "긴 글", "짧은 글"), ("시를 쓰세요.", "", "봄")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "출력 없음", "input": ""}\n{"instruction": "x", "instances": [{"input": ""}]}\n'
                   '{"instruction": "x", "instances": []}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_seed_tasks([str(good), str(bad)])
    assert f"{bad}:1: output: missing" in str(e.value)
    assert f"{bad}:2: instances[0].output: missing" in str(e.value)
    assert f"{bad}:3: instances: expected a non-empty list" in str(e.value)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipes_validate_and_name_their_command(recipe):
    first = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and "kotune selfinstruct recipes/selfinstruct/" + recipe.name in first
    cfg = load_config(SelfInstructConfig, str(recipe))
    assert all((REPO / p).is_file() for p in cfg.seeds)
    assert cfg.dedup_threshold == 0.7 and cfg.num_prompt_instructions == 3 and cfg.num_tasks == 20


@pytest.mark.parametrize("override, message", [
    ("num_prompt_instructions=20", "num_prompt_instructions (20) < num_tasks (20)"),
    ("teacher.base_url=localhost:8000", "base_url: 'localhost:8000' is not an http(s) URL"),
    ("teacher.concurency=2", "did you mean teacher.concurrency"),
    ("dedup_threshold=1.5", "dedup_threshold: must be between 0 and 1"),
    ("filters.min_hangul_ratio=2", "min_hangul_ratio: must be in"),
])
def test_bad_recipe_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(SelfInstructConfig, str(RECIPES[0]), [override])


def test_requirements_prompt_is_korean_and_asks_for_korean_output(tmp_path):
    header = load_header(None, 20)
    assert header.rstrip().endswith("20개의 작업 목록:")
    for requirement in ("동사를 반복하지", "한국어로 작성", "<noinput>", "100단어", "모든 지시문, 입력, 출력은 한국어로"):
        assert requirement in header
    numbers = [m.group(1) for line in header.splitlines() if (m := re.match(r"(\d+)\. ", line))]
    assert numbers == [str(i) for i in range(1, 11)]  # Alpaca's doubled numbering (1, 2, 3, 2, 3, ...) is fixed
    custom = tmp_path / "p.txt"
    custom.write_text("나만의 요구 사항\n", encoding="utf-8")
    assert load_header(str(custom), 20) == "나만의 요구 사항\n"
    with pytest.raises(ValueError, match="prompt_file: cannot read"):
        load_header(str(Path(tmp_path) / "missing.txt"), 20)

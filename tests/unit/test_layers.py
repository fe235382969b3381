"""STYLE.md's layering: `common` imports nothing of ours; `data` and `models` import only the layers below the stages
(`common`, each other, and the packaged `resources`), never `kotune.config` or a stage. Imports inside functions
count too: a lazy import is still a dependency."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kotune"
ALLOWED = {"common": {"common"}, "data": {"common", "data"}, "models": {"common", "data", "models", "resources"}}


def kotune_imports(path: Path) -> set[str]:
    """The `kotune.X` packages or modules (X only) that a source file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module or "")
    return {name.split(".")[1] for name in found if name.startswith("kotune.")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_only_what_is_below_them(layer):
    wrong = {f"{path.relative_to(SRC)}: kotune.{name}" for path in (SRC / layer).rglob("*.py")
             for name in kotune_imports(path) - ALLOWED[layer]}
    assert not wrong, sorted(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from kotune.config import load_config\n    import kotune.sft.train\n")
    assert kotune_imports(source) == {"config", "sft"}

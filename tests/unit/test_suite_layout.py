"""The suite itself: pytest imports test files by their base name (no __init__.py, rootdir `prepend` mode), so two
files of one name in different folders stop the whole run at collection, as CI's does. Caught here, by name."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_name_is_unique_across_folders():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, n in names.items() if n > 1]

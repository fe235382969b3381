"""Paths the tests share. A module of its own (not `conftest`): several conftest.py files exist, and
`from kotune_test_paths import ...` would pick whichever was imported first."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"

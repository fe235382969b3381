"""benchmarks/gpu_sft.py is a GPU measurement: on a machine without one it must say so and exit 0, not fail."""

import subprocess
import sys

import pytest
import torch

from kotune_test_paths import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the benchmark measures for real (minutes)")
def test_gpu_benchmark_skips_cleanly_without_a_gpu():
    result = subprocess.run([sys.executable, "benchmarks/gpu_sft.py"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped: no CUDA GPU" in result.stdout

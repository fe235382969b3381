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


def test_mfu_uses_the_dense_bf16_peak_of_the_gpu_it_names():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_sft

    assert gpu_sft.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0  # SXM, not the PCIe card's 756
    assert gpu_sft.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert gpu_sft.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert gpu_sft.peak_tflops("Some New GPU", None) is None and gpu_sft.peak_tflops("Some New GPU", 500.0) == 500.0
    # polyglot-ko-1.3b without its input embedding: ~1.27B parameters -> 6N plus attention at 512 tokens of context
    model = {"params_without_embedding": 1_270_000_000, "layers": 24, "hidden": 2048}
    per_token = gpu_sft.flops_per_token(model, {"mean_context": 512})
    assert per_token == pytest.approx(6 * 1.27e9 + 12 * 24 * 2048 * 512)

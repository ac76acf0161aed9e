"""bench/gpu_check.py: the bf16 peak by device name, the FLOPs a token costs, MFU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # gpu_check.py imports its sibling report.py
spec = importlib.util.spec_from_file_location("bench_gpu_check", BENCH / "gpu_check.py")
assert spec is not None and spec.loader is not None
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", None),  # not an L4
        ("Tesla T4", None),
    ],
)
def test_peak_by_device_name(name: str, peak: float | None) -> None:
    assert gpu_check.bf16_peak_tflops(name, {}) == peak


def test_the_environment_names_the_peak_of_any_gpu() -> None:
    assert gpu_check.bf16_peak_tflops("NVIDIA H100", {"GPU_PEAK_TFLOPS": "500"}) == 500.0


def test_gpt2_small_costs_nanogpts_flops_per_token() -> None:
    pytest.importorskip("torch")
    n = gpu_check.gpt_params(50257)
    # GPT-2 small without biases: 85M in the blocks, 38.6M in the tied embedding.
    assert n == 50257 * 768 + 12 * (12 * 768 * 768 + 2 * 768) + 768
    per_token = gpu_check.flops_per_token(n, **gpu_check.SHAPE)
    assert per_token == 6 * n + 12 * 12 * 12 * 64 * 1024
    # 100k tokens/s at 0.855 GFLOP a token is 27.4% of an A100's 312 TFLOP/s.
    assert gpu_check.mfu(100_000, per_token, 312.0) == pytest.approx(0.274, abs=1e-3)
    assert gpu_check.mfu(100_000, per_token, None) is None


def test_a_section_fails_on_an_error_or_failing_tests() -> None:
    assert not gpu_check.failed({"eager": {"tokens_per_sec": 1.0}, "text": "x"})
    assert gpu_check.failed({"eager": {"error": "mlx train failed"}})
    assert gpu_check.failed({"error": "grpo failed"})
    assert gpu_check.failed({"returncode": 1, "summary": "1 failed"})

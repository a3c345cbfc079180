"""The arithmetic behind the GPU benchmark figures, checked against the figure issue 9
quotes for plain PEFT LoRA on an H100 (1.24B parameters, about 33,000 tokens/s = 16.6% MFU)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from common import GPU_PEAKS, gpu_peaks, machine_limits, mfu, read_rate, shape_config  # noqa: E402


def test_lora_mfu_matches_the_quoted_h100_figure():
    assert mfu(1.24e9, 33_000, GPU_PEAKS["H100"][0]) == pytest.approx(0.166, abs=0.001)
    assert mfu(1.24e9, 33_000, GPU_PEAKS["H100"][0], full=True) == pytest.approx(1.5 * 0.1655, abs=0.001)


def test_gpu_names_find_their_peaks():
    # matched by substring in the table's order: every entry is reachable, none shadowed by a shorter name
    for key in GPU_PEAKS:
        assert gpu_peaks(f"NVIDIA {key}") == GPU_PEAKS[key], key
    assert gpu_peaks("NVIDIA H100 80GB HBM3") == GPU_PEAKS["H100"]  # the SXM part, as torch names it
    assert gpu_peaks("NVIDIA A100-PCIE-40GB") == GPU_PEAKS["A100"]
    assert gpu_peaks("Tesla T4") is None


@pytest.mark.parametrize("shape, params", [("smollm2-360m", 361.8e6), ("qwen2.5-0.5b", 494.0e6),
                                           ("llama-3.2-1b", 1235.8e6)])
def test_random_shapes_have_the_named_models_parameter_counts(shape, params):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(shape_config(shape))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.002)


def test_machine_limits_are_measured_on_this_machine():
    limits = machine_limits("cpu", seconds=0.05, size=256, tries=1)  # 2048² bf16: ~17 s a call where emulated
    assert set(limits) == {"matmul_float32_flops", "matmul_bfloat16_flops", "bandwidth_bytes_per_s"}
    assert all(v > 1e8 for v in limits.values())  # even an emulated bf16 matmul does 0.1 GFLOP/s


def test_read_rate_reads_weights_of_any_dtype_and_size_where_they_lie(tmp_path):
    import numpy as np
    import torch

    odd = tmp_path / "model.gguf"
    odd.write_bytes(bytes(range(255)) * 4099)  # a file of any length, read from its pages as llama.cpp maps it
    tensors = [torch.randn(3, 5, dtype=torch.bfloat16), torch.randn(7, dtype=torch.float16), torch.from_numpy(
        np.memmap(odd, mode="c"))]
    assert read_rate(tensors, seconds=0.01) > 1e6
    assert (torch.tensor([1e-30]) * 1e-10).item() != 0  # a denormal result: flushing was switched back off

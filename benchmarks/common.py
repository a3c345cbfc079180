"""What every benchmark records with its figures: machine, versions, command."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from lifecycle.core import quiet

quiet.setup()  # every benchmark imports this first: the libraries' notes filtered as in `python -m lifecycle`

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path.home() / ".cache" / "lifecycle" / "bench"  # randomly initialised models of real shapes
BANDWIDTH_TRIES = 8  # fresh 512 MiB allocations the bandwidth probe reads


# Dense bf16 tensor-core peak (FLOP/s, no sparsity) and memory bandwidth (bytes/s), from NVIDIA's datasheets;
# matched against torch.cuda.get_device_name in this order.
GPU_PEAKS = {"H200": (989e12, 4.8e12), "H100 PCIe": (756e12, 2.0e12), "H100": (989e12, 3.35e12),
             "A100-SXM4-80GB": (312e12, 2.04e12), "A100": (312e12, 1.56e12), "L4": (121e12, 0.3e12)}


def gpu_peaks(name: str | None = None) -> tuple[float, float] | None:
    """(bf16 FLOP/s, bytes/s) of the GPU called `name` (default: this machine's), or None on CPU or an unlisted GPU."""
    import torch

    if name is None and not torch.cuda.is_available():
        return None
    name = name or torch.cuda.get_device_name(0)
    return next((peaks for key, peaks in GPU_PEAKS.items() if key in name), None)


def best_seconds(fn, budget: float, device: str = "cpu") -> float:
    """The fastest of repeated calls of `fn` for `budget` seconds, after one warm-up call."""
    import time

    import torch

    fn()
    best, began = float("inf"), time.perf_counter()
    while time.perf_counter() - began < budget:
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def machine_limits(device: str = "cpu", seconds: float = 1.0, size: int = 2048, tries: int = BANDWIDTH_TRIES) -> dict:
    """This machine's limits, measured in the same run as the figures they bound: dense matmul FLOP/s in
    fp32 and bf16 (`size`² @ `size`², the best of repeated calls for `seconds` each) and memory read
    bandwidth in bytes/s (the best of repeated sums of `tries` fresh 512 MiB tensors in `seconds`). On a GPU, its
    datasheet peaks too. A CPU without native bf16 emulates it at ~1 GFLOP/s: one 2048² bf16 matmul there takes ~17 s."""
    import torch

    limits = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, dtype=dtype, device=device)
        limits[f"matmul_{str(dtype).removeprefix('torch.')}_flops"] = 2 * size**3 / best_seconds(lambda: a @ a, seconds,
                                                                                                 device)
    # Written first: a never-written CPU tensor reads Linux's shared zero page from cache. Several, all kept: a VM's
    # memory can come at different speeds (35 and 60 GB/s on these 2-vCPU VMs), and this is the machine's best.
    tensors = [torch.ones(128 * 2**20, dtype=torch.float32, device=device) for _ in range(tries)]
    limits["bandwidth_bytes_per_s"] = max(read_rate([t], seconds / len(tensors)) for t in tensors)
    if peaks := gpu_peaks() if device.startswith("cuda") else None:
        limits["datasheet_bf16_flops"], limits["datasheet_bandwidth_bytes_per_s"] = peaks
    return {k: round(v) for k, v in limits.items()}


def read_rate(tensors: list, seconds: float = 1.0) -> float:
    """Bytes/s at which `tensors` are read where they lie in memory: what bounds a batch-1 decode of weights, each
    token reading each once. Their bytes are summed as float32 with denormals flushed, so neither their dtype nor
    their bits slow the sum down."""
    import torch

    views = [t.detach().reshape(-1).view(torch.uint8)[: t.nbytes // 4 * 4].view(torch.float32) for t in tensors]
    device, flushing = str(views[0].device), torch.set_flush_denormal(True)
    try:
        seconds = best_seconds(lambda: [v.sum() for v in views], seconds, device)
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    return sum(v.numel() * 4 for v in views) / seconds


def mfu(params: int, tokens_per_s: float, peak_flops: float, full: bool = False) -> float:
    """Model FLOPs utilisation: 6·N FLOPs per trained token for full training, 4·N for LoRA (no weight gradients)."""
    return (6 if full else 4) * params * tokens_per_s / peak_flops


# Randomly initialised models of real shapes, for throughput on GPUs (no weights to download):
# the architecture fields of each model's config.json on the hub.
SHAPES = {
    "smollm2-360m": {"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "vocab_size": 49152,
                     "tie_word_embeddings": True, "rope_theta": 100000.0},
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "tie_word_embeddings": True, "rope_theta": 1000000.0},
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "tie_word_embeddings": True, "rope_theta": 500000.0},
}


def shape_config(shape: str):
    from transformers import AutoConfig

    fields = dict(SHAPES[shape])
    return AutoConfig.for_model(fields.pop("model_type"), max_position_embeddings=4096, **fields)


def random_model(shape: str, folder: Path, tokenizer_from: str = "SmolLM2-135M-Instruct") -> str:
    """Save a randomly initialised `shape` model (bf16) with the packaged SmolLM2 tokenizer, whose
    ids fit every shape's vocabulary; returns the folder for `--model`."""
    import torch
    from transformers import AutoModelForCausalLM

    from lifecycle.core import models

    if not (folder / "config.json").is_file():
        tokenizer = models.load_tokenizer(models.resolve(tokenizer_from))
        config = shape_config(shape)
        config.bos_token_id, config.eos_token_id, config.pad_token_id = (
            tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def environment() -> dict:
    import torch

    versions = {name: metadata.version(name) for name in ("torch", "transformers", "trl", "peft")}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
            "device": device, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), **versions}


def write_results(name: str, rows: list[dict], table: list[str], command: str, workload: str) -> None:
    env = environment()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"command": command, "workload": workload, "environment": env,
                                                      "results": rows}, indent=2) + "\n")
    header = [f"# {name} benchmark", "", f"Command: `{command}`", "", f"Workload: {workload}", "",
              "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(header + table) + "\n")
    print("\n".join(table))

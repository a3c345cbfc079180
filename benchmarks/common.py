"""What every benchmark records with its figures: machine, versions, command."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


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


def mfu(params: int, tokens_per_s: float, peak_flops: float, full: bool = False) -> float:
    """Model FLOPs utilisation: 6·N FLOPs per trained token for full training, 4·N for LoRA (no weight gradients)."""
    return (6 if full else 4) * params * tokens_per_s / peak_flops


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

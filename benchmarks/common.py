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

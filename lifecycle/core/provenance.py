"""Where and with what a stage ran: the host, its device and the library versions a manifest records."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

LIBRARIES = ("lifecycle", "torch", "transformers", "datasets", "peft", "trl", "evaluate", "accelerate", "bitsandbytes")


def versions() -> dict:
    """The installed version of each library a manifest records (None when absent)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def host(cfg) -> dict:
    from lifecycle.core.models import pick_device

    device = pick_device(cfg.models.device)
    info = {"hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
            "device": device, "processes": int(os.environ.get("WORLD_SIZE", "1"))}
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
    return info

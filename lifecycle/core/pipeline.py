"""Running a stage: check its upstream, skip it when up to date, record its manifest.

A stage module declares `UPSTREAM` (the stages whose manifests it consumes),
optionally `OPTIONAL` (stages it consumes when they have run, like the models
evaluate compares), and `SECTIONS` (the config sections its result depends on);
this module does the rest, so each stage's `run(cfg, run)` is only its recipe.
"""

from __future__ import annotations

import importlib
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import ModuleType

from lifecycle.core.config import fingerprint, to_dict
from lifecycle.core.errors import StageError
from lifecycle.core.store import MANIFEST, Run, list_outputs

STAGES = ("scope", "select", "prompt", "finetune", "rlhf", "evaluate", "quantize")
LIBRARIES = ("lifecycle", "torch", "transformers", "datasets", "peft", "trl", "evaluate", "accelerate", "bitsandbytes")


@dataclass
class StageResult:
    metrics: dict
    summary: str = ""


@dataclass
class StageRun:
    """What a stage's `run(cfg, run)` gets: where to write, and what came before."""

    run: Run
    stage: str
    out: Path
    inputs: dict[str, dict]

    def upstream(self, stage: str) -> Path:
        """The folder of an upstream stage this one consumes (through its manifest)."""
        if stage not in self.inputs:
            raise KeyError(f"{self.stage} did not declare {stage} upstream")
        return self.run.dir(stage)


@dataclass
class Status:
    state: str  # missing | failed | interrupted | stale | up to date
    reason: str = ""
    manifest: dict | None = None


def module(stage: str) -> ModuleType:
    return importlib.import_module(f"lifecycle.{stage}")


def config_hash(cfg, stage: str) -> str:
    sections = {name: getattr(cfg, name) for name in module(stage).SECTIONS}
    return fingerprint({"seed": cfg.run.seed, **sections})


def upstream(cfg, stage: str) -> list[str]:
    """The stages this one consumes: its required ones, and the optional ones that have run."""
    mod, run = module(stage), Run(cfg.run)
    optional = [up for up in getattr(mod, "OPTIONAL", ()) if run.manifest(up) or run.interrupted(up)]
    return [*mod.UPSTREAM, *optional]


def command(stage: str, config_path: str) -> str:
    return f"python -m lifecycle {stage} --config {shlex.quote(str(config_path))}"


def status(cfg, stage: str) -> Status:
    """Whether the stage's artifacts are current for this config and its upstream."""
    run = Run(cfg.run)
    manifest = run.manifest(stage)
    if manifest is None:
        return Status("interrupted" if run.interrupted(stage) else "missing", "never completed")
    if manifest["status"] == "failed":
        return Status("failed", manifest.get("error", ""), manifest)
    if manifest["config_hash"] != config_hash(cfg, stage):
        return Status("stale", "its config changed since it ran", manifest)
    for up in upstream(cfg, stage):
        if manifest["inputs"].get(up, {}).get("hash") != run.manifest_hash(up):
            return Status("stale", f"{up} re-ran since", manifest)
        if status(cfg, up).state != "up to date":
            return Status("stale", f"upstream {up} is not up to date", manifest)
    return Status("up to date", "", manifest)


def execute(cfg, stage: str, config_path: str, force: bool = False) -> dict:
    """Run one stage (unless up to date) and return its manifest."""
    run, mod = Run(cfg.run), module(stage)
    inputs = {}
    for up in upstream(cfg, stage):
        state = status(cfg, up)
        if state.state != "up to date":
            raise StageError(f"stage `{stage}` needs `{up}`, which is {state.state} ({state.reason}). "
                             f"Run `{command(up, config_path)}` first, or `{command('all', config_path)}` for every stage.")
        inputs[up] = {"path": str(run.dir(up) / MANIFEST), "hash": run.manifest_hash(up)}
    current = status(cfg, stage)
    main = is_main_process()
    if current.state == "up to date" and not force:
        if main:
            print(f"[lifecycle] {stage}: up to date in {run.dir(stage)}, skipped (use --force to run it again)")
        return current.manifest
    if main:
        print(f"\n===== [lifecycle] stage: {stage}  ·  run: {run.root}  ·  {_now()} =====")
    chash = config_hash(cfg, stage)
    out = run.begin(stage, chash) if main else run.partial_dir(stage)
    _wait_for_everyone()  # under `accelerate launch`, one process keeps the books; all of them run the stage
    started = time.time()
    base = {
        "stage": stage,
        "started_at": _now(),
        "command": " ".join([command(stage, config_path), *(["--force"] if force else [])]),
        "host": _host(cfg),
        "versions": _versions(),
        "config": to_dict({"seed": cfg.run.seed, **{s: getattr(cfg, s) for s in mod.SECTIONS}}),
        "config_hash": chash,
        "inputs": inputs,
    }
    try:
        result = mod.run(cfg, StageRun(run, stage, out, {up: run.manifest(up) for up in inputs}))
    except Exception as err:
        if main:
            run.fail(stage, {**base, "status": "failed", "finished_at": _now(),
                             "duration_s": round(time.time() - started, 2), "error": f"{type(err).__name__}: {err}"})
        raise
    if not main:
        return {}
    manifest = {**base, "status": "completed", "finished_at": _now(), "duration_s": round(time.time() - started, 2),
                "outputs": list_outputs(out), "metrics": result.metrics}
    run.commit(stage, manifest)
    print(f"[lifecycle] {stage}: completed in {manifest['duration_s']:.1f}s -> {run.dir(stage)}"
          + (f"\n{result.summary}" if result.summary else ""))
    return manifest


def is_main_process() -> bool:
    """True outside `accelerate launch`/torchrun, and on its rank 0 inside."""
    return int(os.environ.get("RANK", "0")) == 0


def _wait_for_everyone() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _host(cfg) -> dict:
    from lifecycle.core.models import pick_device

    device = pick_device(cfg.models.device)
    info = {"hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
            "device": device}
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
    return info

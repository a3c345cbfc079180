"""Toxicity scorers: text in, probability of being toxic in [0, 1] out.

One small registry shared by the `toxicity` metric (evaluate, quantize) and the
RLHF reward, so that the toxicity a stage reports is the toxicity it optimised.
`profanity-check` (the scikit-learn model shipped in alt-profanity-check) is the
offline default; a sequence-classification model backend registers here too.
"""

from __future__ import annotations

import functools
from typing import Callable, Protocol

import numpy as np

from lifecycle.core.errors import ModelError


class ToxicityScorer(Protocol):
    name: str

    def score(self, texts: list[str]) -> np.ndarray:
        """Toxicity probability of each text, float64 in [0, 1], same order and length."""
        ...


class ProfanityCheck:
    """Calibrated linear SVM over TF-IDF word unigrams (alt-profanity-check); fast, CPU only, no network.

    It knows words, not context: it flags profanity, and misses politely worded hostility.
    """

    name = "profanity-check"

    def __init__(self, batch_size: int = 1024):
        # Imported here: the package unpickles its model at import time (about a second).
        from profanity_check import predict_prob

        self._predict_prob = predict_prob
        self.batch_size = batch_size

    def score(self, texts: list[str]) -> np.ndarray:
        batches = [self._predict_prob(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        scores = np.concatenate(batches) if batches else np.zeros(0)
        return np.clip(scores.astype(np.float64), 0.0, 1.0)


# name -> factory; a new backend is one entry (or one resolver in `load_scorer` for model ids and paths).
SCORERS: dict[str, Callable[[], ToxicityScorer]] = {
    ProfanityCheck.name: ProfanityCheck,
}


@functools.cache
def load_scorer(name: str) -> ToxicityScorer:
    """The scorer registered under `name`, built once per process."""
    if name not in SCORERS:
        raise ModelError(f"unknown toxicity scorer `{name}`; the known scorers are {', '.join(sorted(SCORERS))}. "
                         "Set the scorer in the config to one of them (`profanity-check` needs no network).")
    return SCORERS[name]()


def probe_check(scorer: ToxicityScorer, path: str | None = None) -> dict:
    """How well a scorer ranks toxic above non-toxic text on a labelled set (the demo probe set by
    default): ROC AUC, accuracy at 0.5, and the AUC of each kind (plain, hard negatives vs hard
    positives). A reward that cannot rank is a bug to catch before spending RL compute on it.

        python -c "from lifecycle.core.toxicity import *; print(probe_check(load_scorer('profanity-check')))"
    """
    import json
    from pathlib import Path

    from sklearn.metrics import roc_auc_score

    from lifecycle.core.data import DEMO_DIR

    rows = [json.loads(line) for line in Path(path or DEMO_DIR / "toxicity_probe.jsonl").read_text().splitlines()]
    labels = np.array([r["toxic"] for r in rows])
    scores = scorer.score([r["text"] for r in rows])
    kinds = {"plain": ("plain", "plain"), "hard": ("hard_negative", "hard_positive")}
    by_kind = {}
    for name, (negative, positive) in kinds.items():
        pick = np.array([(r["toxic"] == 0 and r.get("kind") == negative) or (r["toxic"] == 1 and r.get("kind") == positive)
                         for r in rows])
        if pick.any() and len(set(labels[pick])) == 2:
            by_kind[name] = round(float(roc_auc_score(labels[pick], scores[pick])), 3)
    return {"scorer": scorer.name, "examples": len(rows), "roc_auc": round(float(roc_auc_score(labels, scores)), 3),
            "accuracy_at_0.5": round(float(((scores > 0.5) == labels).mean()), 3), "roc_auc_by_kind": by_kind,
            "mean_score": {"toxic": round(float(scores[labels == 1].mean()), 3),
                           "non_toxic": round(float(scores[labels == 0].mean()), 3)}}

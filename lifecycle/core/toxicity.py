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

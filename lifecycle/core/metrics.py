"""Quality and safety numbers with their uncertainty, computed offline.

The metrics are local `evaluate` modules shipped in `lifecycle/metrics/` and
loaded by path, so nothing here touches the hub. Every headline number comes
with a 95% bootstrap confidence interval, and two systems scored on the same
examples are compared with a paired bootstrap: on a test split of a hundred
dialogues, a one-point ROUGE gain is often noise, and a stage should say so.

Scales: ROUGE and toxicity in [0, 1]; BLEU and chrF in [0, 100] (sacrebleu's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import sacrebleu

from lifecycle.core.config import option, require
from lifecycle.core.errors import LifecycleError
from lifecycle.core.toxicity import ScorerConfig

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TOXIC = 0.5  # a text counts as toxic above this probability


@dataclass
class MetricsConfig:
    toxicity: str | ScorerConfig = option("profanity-check", help="Toxicity scorer for every stage's outputs, so "
                                          "scope's max_mean_toxicity means one thing throughout: a built-in name "
                                          "(profanity-check) or {model: <classifier>, nontoxic_label: <label>} "
                                          "(see lifecycle.core.toxicity.ScorerConfig).")
    bootstrap: int = option(1000, help="Bootstrap resamples behind every 95% CI and paired test of evaluate, rlhf and quantize.")

    def __post_init__(self):
        require(self.bootstrap >= 100, "bootstrap", self.bootstrap, "at least 100 resamples")


class MetricError(LifecycleError):
    """A metric name does not match a packaged metric."""


@dataclass
class Estimate:
    """A number with its 95% bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """The packaged metric `lifecycle/metrics/<name>`, loaded by path (no network), once per process."""
    known = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
    if name not in known:
        raise MetricError(f"unknown metric `{name}`; the packaged metrics are {', '.join(known)}. "
                          "Use one of those names (hub metrics are not loaded, so runs stay offline).")
    import evaluate  # here, not at the top: it imports transformers (seconds), and the CLI should start fast

    # In memory: no arrow cache files or lock files left behind per compute() call.
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


def per_example(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """ROUGE-1/2/L/Lsum F1 (0-1) and sentence chrF (0-100) of each example."""
    _check_pairs(predictions, references)
    rouge = load_metric("rouge").compute(predictions=predictions, references=references, use_aggregator=False)
    chrf = load_metric("chrf").compute(predictions=predictions, references=references, per_example=True)
    scores = {name: np.asarray(rouge[name], dtype=np.float64) for name in ROUGE_TYPES}
    scores["chrf"] = np.asarray(chrf["scores"], dtype=np.float64)
    return scores


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0,
                 statistic: Callable[..., np.ndarray] = np.mean) -> Estimate:
    """`statistic(values)` with the 2.5/97.5 percentiles of it over `n_boot` resamples.

    `statistic` must accept `axis=` like the numpy reductions (np.mean, np.median, ...).
    """
    values = _as_1d(values, "values")
    resampled = statistic(values[_indices(len(values), n_boot, seed)], axis=1)
    return _estimate(float(statistic(values)), resampled)


def corpus_scores(predictions: list[str], references: list[str], toxicity: np.ndarray | None = None,
                  n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Headline scores with 95% CIs: rouge1/2/L/Lsum (mean F1), bleu and chrf (corpus), toxicity_mean/_share.

    All metrics share one set of resampled example indices, so their intervals
    describe the same hypothetical test sets. BLEU and chrF are not means of
    sentence scores: each resample recomputes the corpus score of its examples.
    """
    _check_pairs(predictions, references)
    rouge = load_metric("rouge").compute(predictions=predictions, references=references, use_aggregator=False)
    idx = _indices(len(predictions), n_boot, seed)
    out = {name: _mean_estimate(np.asarray(rouge[name], dtype=np.float64), idx) for name in ROUGE_TYPES}
    out["bleu"] = _corpus_estimate(sacrebleu.BLEU(), predictions, references, idx)
    out["chrf"] = _corpus_estimate(sacrebleu.CHRF(), predictions, references, idx)
    if toxicity is not None:
        toxicity = _as_1d(toxicity, "toxicity")
        if len(toxicity) != len(predictions):
            raise ValueError(f"{len(toxicity)} toxicity scores for {len(predictions)} predictions")
        out["toxicity_mean"] = _mean_estimate(toxicity, idx)
        out["toxicity_share"] = _mean_estimate((toxicity > TOXIC).astype(np.float64), idx)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Do systems a and b differ on the same examples? Paired bootstrap of mean(b - a).

    Returns {"delta": mean(b - a), "low", "high": the 2.5/97.5 percentiles of the
    resampled mean deltas, "p_value"}. The p-value is two-sided for "no
    difference": with d* the resampled mean deltas,
    p = min(1, 2 * min(share(d* <= 0), share(d* >= 0))),
    i.e. twice the share of resamples that land on the far side of zero. It is
    below 0.05 when zero lies outside the percentile interval (up to ties and
    interpolation), and 0 means "below 1 / n_boot" rather than impossible.
    """
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired scores must cover the same examples, got {len(a)} and {len(b)}")
    diff = b - a
    deltas = diff[_indices(len(diff), n_boot, seed)].mean(axis=1)
    p_value = min(1.0, 2.0 * min(float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return {"delta": float(diff.mean()), "low": float(low), "high": float(high), "p_value": p_value}


def _corpus_estimate(metric, predictions: list[str], references: list[str], idx: np.ndarray) -> Estimate:
    """A sacrebleu corpus score and its resampled values, from per-example sufficient statistics.

    The n-grams are extracted once; a corpus score is a function of the summed
    statistics (that is how sacrebleu's `corpus_score` and its own `--confidence`
    bootstrap compute it, through the same private methods used here), so a
    resample costs one matrix product and one cheap formula. The metrics'
    default settings match the `sacrebleu` and `chrf` modules, which a test checks.
    """
    stats = np.asarray(metric._extract_corpus_statistics(predictions, [references]), dtype=np.int64)
    counts = np.zeros(idx.shape, dtype=np.int64)  # counts[r, i]: how often example i is drawn in resample r
    np.add.at(counts, (np.arange(len(idx))[:, None], idx), 1)
    resampled = np.array([metric._compute_score_from_stats(row.tolist()).score for row in counts @ stats])
    return _estimate(metric._compute_score_from_stats(stats.sum(axis=0).tolist()).score, resampled)


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """One (n_boot, n) matrix of example indices drawn with replacement."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _mean_estimate(values: np.ndarray, idx: np.ndarray) -> Estimate:
    return _estimate(float(values.mean()), values[idx].mean(axis=1))


def _estimate(value: float, resampled: np.ndarray) -> Estimate:
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Estimate(float(value), float(low), float(high))


def _as_1d(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    return array


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need as many predictions as references, and at least one; "
                         f"got {len(predictions)} and {len(references)}")

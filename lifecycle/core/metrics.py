"""Quality and safety numbers with their uncertainty, computed offline.

The metrics are local `evaluate` modules shipped in `lifecycle/metrics/` and
loaded by path, so nothing here touches the hub. Every headline number comes
with a 95% bootstrap confidence interval (`scipy.stats.bootstrap`; sacrebleu's own for
corpus BLEU/chrF), and two systems scored on the same examples are compared with a paired
approximate-randomisation test (`scipy.stats.permutation_test`): on a test split of a hundred
dialogues, a one-point ROUGE gain is often noise, and a stage should say so. Only public APIs
of scipy and sacrebleu are used.

Scales: ROUGE and toxicity in [0, 1]; BLEU and chrF in [0, 100] (sacrebleu's).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

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
    chrf = load_metric("chrf").compute(predictions=predictions, references=references, per_example=True)
    return {**_rouge(predictions, references), "chrf": np.asarray(chrf["scores"], dtype=np.float64)}


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0,
                 statistic: Callable[..., np.ndarray] = np.mean) -> Estimate:
    """`statistic(values)` with its 95% percentile bootstrap interval over `n_boot` resamples
    (`scipy.stats.bootstrap`). `statistic` must accept `axis=` like the numpy reductions."""
    values = _as_1d(values, "values")
    return _estimate(float(statistic(values)), (values,), lambda x, axis: statistic(x, axis=axis), n_boot, seed)


def ratio_ci(numerators, denominators, n_boot: int = 1000, seed: int = 0,
             transform: Callable[[np.ndarray], np.ndarray] = lambda r: r) -> Estimate:
    """`transform(sum(numerators) / sum(denominators))` with a paired bootstrap interval over examples,
    e.g. perplexity = exp(summed NLL / summed tokens) with `transform=np.exp`."""
    num, den = _as_1d(numerators, "numerators"), _as_1d(denominators, "denominators")
    if num.shape != den.shape or den.sum() <= 0:
        raise ValueError(f"need one positive denominator per numerator, got {len(num)} and {len(den)}")

    def stat(a, b, axis):
        return transform(a.sum(axis=axis) / np.maximum(b.sum(axis=axis), 1e-12))

    return _estimate(float(transform(num.sum() / den.sum())), (num, den), stat, n_boot, seed, paired=True)


def corpus_scores(predictions: list[str], references: list[str], toxicity: np.ndarray | None = None,
                  n_boot: int = 1000, seed: int = 0, each: dict[str, np.ndarray] | None = None) -> dict[str, Estimate]:
    """Headline scores with 95% CIs: rouge1/2/L/Lsum (mean F1), bleu and chrf (corpus), toxicity_mean/_share.
    `each`: the examples' scores when already computed (`per_example`), so ROUGE is not computed twice.

    Means of per-example scores get a percentile bootstrap interval (`scipy.stats.bootstrap`, one
    seed, so every metric is resampled over the same example indices). BLEU and chrF are not means
    of sentence scores: their interval is sacrebleu's own (`sacrebleu.significance.PairedTest` with
    paired bootstrap, which recomputes the corpus score of each resample): bootstrap mean ± half the
    2.5-97.5 percentile range, seeded by `SACREBLEU_SEED` (12345 unless set).
    """
    _check_pairs(predictions, references)
    rouge = each if each is not None else _rouge(predictions, references)
    out = {name: bootstrap_ci(rouge[name], n_boot, seed) for name in ROUGE_TYPES}
    out |= _sacrebleu_estimates(predictions, references, n_boot)
    if toxicity is not None:
        toxicity = _as_1d(toxicity, "toxicity")
        if len(toxicity) != len(predictions):
            raise ValueError(f"{len(toxicity)} toxicity scores for {len(predictions)} predictions")
        out["toxicity_mean"] = bootstrap_ci(toxicity, n_boot, seed)
        out["toxicity_share"] = bootstrap_ci((toxicity > TOXIC).astype(np.float64), n_boot, seed)
    return out


def paired_test(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Do systems a and b differ on the same examples? mean(b - a) with two answers:

    - `p_value`: two-sided approximate randomisation (a paired permutation test,
      `scipy.stats.permutation_test` with `permutation_type="samples"`): under "no difference"
      each example's two scores are exchangeable, so their labels are swapped at random
      `n_boot` times; p = (1 + #|mean shuffled delta| >= |observed|) / (1 + n_boot), never 0.
      This is the test sacrebleu's `PairedTest` defaults to and the MT literature uses.
    - `low`, `high`: the 95% percentile bootstrap interval of the mean delta (`scipy.stats.bootstrap`).
    """
    from scipy import stats

    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired scores must cover the same examples, got {len(a)} and {len(b)}")
    diff = b - a
    ci = bootstrap_ci(diff, n_boot, seed)
    if np.all(diff == 0):
        p_value = 1.0
    else:
        test = stats.permutation_test((a, b), lambda x, y, axis: np.mean(y - x, axis=axis), vectorized=True,
                                      permutation_type="samples", n_resamples=n_boot, rng=np.random.default_rng(seed))
        p_value = float(min(1.0, test.pvalue))
    return {"delta": float(diff.mean()), "low": ci.low, "high": ci.high, "p_value": p_value,
            "test": "approximate randomisation"}


def corpus_paired_test(a: list[str], b: list[str], references: list[str], n_boot: int = 1000) -> dict:
    """Corpus BLEU and chrF of system b against a on the same examples: the change, and the p-value of
    sacrebleu's own paired approximate-randomisation test (`sacrebleu.significance.PairedTest`,
    test_type="ar"), which shuffles whole sentences' sufficient statistics between the systems.
    sacrebleu counts only shuffles whose difference is strictly larger than the observed one (the
    multeval convention), so identical outputs would get its smallest p-value: they get 1 here."""
    import sacrebleu  # here, not at the top: config loads import this module
    from sacrebleu.significance import PairedTest

    _check_pairs(a, references)
    _check_pairs(b, references)
    if list(a) == list(b):
        return {key: {"delta": 0.0, "p_value": 1.0, "test": "approximate randomisation (sacrebleu)"} for key in ("bleu", "chrf")}
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)
    test = PairedTest([("a", a), ("b", b)], {"bleu": sacrebleu.BLEU(), "chrf": sacrebleu.CHRF()}, [references],
                      test_type="ar", n_samples=n_boot)
    _, results = test()
    return {key: {"delta": float(results[name][1].score - results[name][0].score),
                  "p_value": float(results[name][1].p_value), "test": "approximate randomisation (sacrebleu)"}
            for key, name in (("bleu", "BLEU"), ("chrf", "chrF2"))}


def preference(wins: int, ties: int, losses: int) -> dict:
    """A pairwise preference (human or judge ratings of B against A) with 95% CIs.

    Shares of win/tie/loss with Wilson score intervals (`scipy.stats.binomtest(...).proportion_ci`),
    and a two-sided sign test of wins against losses (ties left out), the binomial test for
    "B is preferred as often as A"."""
    from scipy import stats

    n = wins + ties + losses
    if n == 0:
        raise ValueError("no ratings to summarise")
    out = {"n": n, "wins": wins, "ties": ties, "losses": losses}
    for name, k in (("win", wins), ("tie", ties), ("loss", losses)):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        out[name] = {"value": k / n, "low": float(ci.low), "high": float(ci.high)}
    out["p_value"] = float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
    return out


def share(k: int, n: int) -> dict:
    """k of n as a share with its 95% Wilson interval (rates of flagged summaries, agreement)."""
    from scipy import stats

    if n == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "k": 0, "n": 0}
    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    return {"value": k / n, "low": float(ci.low), "high": float(ci.high), "k": k, "n": n}


def _sacrebleu_estimates(predictions: list[str], references: list[str], n_boot: int) -> dict[str, Estimate]:
    """Corpus BLEU and chrF with sacrebleu's bootstrap interval, through its public significance API.
    The default settings are sacrebleu's, as in `sacrebleu.corpus_bleu` / `corpus_chrf`, which a test checks."""
    import sacrebleu
    from sacrebleu.significance import PairedTest

    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # it logs every resampling step at INFO
    test = PairedTest([("system", predictions)], {"bleu": sacrebleu.BLEU(), "chrf": sacrebleu.CHRF()},
                      [references], test_type="bs", n_samples=n_boot)
    _, results = test()
    out = {}
    for key, name in (("bleu", "BLEU"), ("chrf", "chrF2")):
        r = results[name][0]
        out[key] = Estimate(float(r.score), float(r.mean - r.ci), float(r.mean + r.ci))
    return out


def _rouge(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    rouge = load_metric("rouge").compute(predictions=predictions, references=references, use_aggregator=False)
    return {name: np.asarray(rouge[name], dtype=np.float64) for name in ROUGE_TYPES}


def _estimate(value: float, data: tuple, statistic, n_boot: int, seed: int, paired: bool = False) -> Estimate:
    from scipy import stats

    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if len(data[0]) < 2 or all(np.all(d == d[0]) for d in data):  # one value, or all equal: no spread to resample
        return Estimate(value, value, value)
    res = stats.bootstrap(data, statistic, n_resamples=n_boot, vectorized=True, paired=paired, method="percentile",
                          rng=np.random.default_rng(seed))
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high))


def _as_1d(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    return array


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need as many predictions as references, and at least one; "
                         f"got {len(predictions)} and {len(references)}")

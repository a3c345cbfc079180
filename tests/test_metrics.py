"""The offline metrics layer: packaged evaluate modules against hand-computed
values, bootstrap intervals and paired tests on synthetic data with a known
answer, and the toxicity scorer registry. No models, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from lifecycle.core import metrics
from lifecycle.core.data import DEMO_DIR
from lifecycle.core.errors import LifecycleError
from lifecycle.core.metrics import Estimate, bootstrap_ci, corpus_scores, load_metric, paired_test
from lifecycle.core.toxicity import load_scorer

PRED, REF = "the cat sat on the mat", "the cat lay on the rug"


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[str]]:
    """100 demo summaries as references, each with ~30% of its words dropped as the prediction."""
    rows = [json.loads(line) for line in (DEMO_DIR / "dialogues" / "train.jsonl").read_text().splitlines()][:100]
    rng = np.random.default_rng(0)
    refs = [r["summary"] for r in rows]
    preds = [" ".join(w for w in ref.split() if rng.random() > 0.3) or ref for ref in refs]
    return preds, refs


# --- rouge -------------------------------------------------------------------------------------

def test_rouge_matches_hand_computed_values():
    # Tokens: the cat sat on the mat / the cat lay on the rug.
    # Unigram overlap the x2, cat, on = 4 of 6 each side -> F1 2/3. Bigrams: "the cat", "on the"
    # = 2 of 5 -> 0.4. LCS "the cat on the" = 4 -> 2/3.
    out = load_metric("rouge").compute(predictions=[PRED], references=[REF])
    assert out["rouge1"] == pytest.approx(2 / 3)
    assert out["rouge2"] == pytest.approx(0.4)
    assert out["rougeL"] == pytest.approx(2 / 3)
    assert out["rougeLsum"] == pytest.approx(2 / 3)


def test_rouge_stems_by_default():
    # cats -> cat and running/runs -> run under Porter; without stemming nothing matches.
    rouge = load_metric("rouge")
    assert rouge.compute(predictions=["cats running"], references=["cat runs"])["rouge1"] == pytest.approx(1.0)
    assert rouge.compute(predictions=["cats running"], references=["cat runs"], use_stemmer=False)["rouge1"] == 0.0


def test_rouge_lsum_splits_sentences_on_newlines():
    # Same two sentences in swapped order: the flat LCS is 2 of 4 tokens, the sentence-level union LCS is 4 of 4.
    out = load_metric("rouge").compute(predictions=["a b\nc d"], references=["c d\na b"])
    assert out["rougeL"] == pytest.approx(0.5)
    assert out["rougeLsum"] == pytest.approx(1.0)


def test_rouge_equals_rouge_score_with_and_without_newlines(pairs):
    preds, refs = pairs
    preds, refs = preds[:30] + [p.replace(". ", ".\n") for p in preds[:30]], refs[:30] + [r.replace(". ", ".\n") for r in refs[:30]]
    scorer = rouge_scorer.RougeScorer(list(metrics.ROUGE_TYPES), use_stemmer=True)
    expected = [scorer.score(r, p) for p, r in zip(preds, refs)]
    got = load_metric("rouge").compute(predictions=preds, references=refs, use_aggregator=False)
    for name in metrics.ROUGE_TYPES:
        assert got[name] == pytest.approx([e[name].fmeasure for e in expected], abs=1e-12)


def test_rouge_aggregate_is_the_mean_of_per_example(pairs):
    preds, refs = pairs
    rouge = load_metric("rouge")
    each = rouge.compute(predictions=preds, references=refs, use_aggregator=False)
    mean = rouge.compute(predictions=preds, references=refs)
    for name in metrics.ROUGE_TYPES:
        assert len(each[name]) == len(preds)
        assert mean[name] == pytest.approx(np.mean(each[name]))


# --- bleu and chrf -----------------------------------------------------------------------------

def test_corpus_bleu_identical_no_overlap_and_hand_computed():
    assert corpus_scores([PRED], [PRED], n_boot=100)["bleu"].value == pytest.approx(100.0)
    assert corpus_scores(["alpha beta gamma delta"], ["one two three four"], n_boot=100)["bleu"].value == 0.0
    # the cat sat on the mat / the cat sat on a mat: 1-4-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (BP 1).
    out = corpus_scores([PRED], ["the cat sat on a mat"], n_boot=100)["bleu"]
    assert out.value == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)


def test_chrf_identical_no_overlap_and_per_example(pairs):
    chrf = load_metric("chrf")
    assert chrf.compute(predictions=[PRED], references=[PRED])["score"] == pytest.approx(100.0)
    assert chrf.compute(predictions=["xyz"], references=["abc"])["score"] == 0.0
    preds, refs = pairs
    assert chrf.compute(predictions=preds, references=refs)["score"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    out = chrf.compute(predictions=preds, references=refs, per_example=True)
    assert out["scores"] == pytest.approx([sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(preds, refs)])
    assert "score" not in out  # the sentence scores only: the corpus score is computed where it is used


def test_per_example_has_every_score_for_every_example(pairs):
    preds, refs = pairs
    scores = metrics.per_example(preds, refs)
    assert set(scores) == {*metrics.ROUGE_TYPES, "chrf"}
    assert all(v.shape == (len(preds),) for v in scores.values())
    assert all(((0 <= scores[n]) & (scores[n] <= 1)).all() for n in metrics.ROUGE_TYPES)
    assert scores["chrf"].max() > 1  # sacrebleu's 0-100 scale


# --- loading -----------------------------------------------------------------------------------

def test_modules_load_by_path_offline_from_a_fresh_cache(tmp_path):
    # A fresh modules cache and an unreachable endpoint: any hub lookup would fail.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    script = (
        "import evaluate\n"
        "from lifecycle.core.metrics import METRICS_DIR\n"
        "for name in ('rouge', 'chrf'):\n"
        "    m = evaluate.load(str(METRICS_DIR / name))\n"
        "    assert isinstance(m, evaluate.Metric), type(m)\n"
        "    print(name, type(m).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["rouge", "Rouge", "chrf", "Chrf"]


def test_load_metric_is_cached_and_rejects_unknown_names():
    assert load_metric("rouge") is load_metric("rouge")
    with pytest.raises(LifecycleError, match=r"unknown metric `bertscore`.*chrf, rouge\. "):
        load_metric("bertscore")


# --- bootstrap ---------------------------------------------------------------------------------

def test_bootstrap_ci_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.4, 0.1, 50), rng.normal(0.4, 0.1, 5000)
    a, b = bootstrap_ci(small), bootstrap_ci(large)
    assert a.low < a.value < a.high and a.value == pytest.approx(small.mean())
    assert b.low < b.value < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # width ~ 1/sqrt(n): 10x narrower for 100x the data
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert bootstrap_ci(small, statistic=np.median).value == pytest.approx(np.median(small))


def test_corpus_scores_values_intervals_and_toxicity(pairs):
    preds, refs = pairs
    tox = np.r_[np.full(90, 0.1), np.full(10, 0.9)]
    out = corpus_scores(preds, refs, toxicity=tox, n_boot=500)
    assert set(out) == {*metrics.ROUGE_TYPES, "bleu", "chrf", "toxicity_mean", "toxicity_share"}
    assert all(isinstance(e, Estimate) and e.low <= e.value <= e.high for e in out.values())
    assert out["rouge1"].value == pytest.approx(load_metric("rouge").compute(predictions=preds, references=refs)["rouge1"])
    # BLEU and chrF come from summed sufficient statistics: sacrebleu's corpus scores, not means of sentence scores.
    assert out["bleu"].value == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert out["chrf"].value == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    assert out["chrf"].value != pytest.approx(metrics.per_example(preds, refs)["chrf"].mean())
    assert out["bleu"].high - out["bleu"].low > 0.5  # resampling examples really moves the corpus score
    assert out["toxicity_mean"].value == pytest.approx(0.18)
    assert out["toxicity_share"].value == pytest.approx(0.10)
    assert "toxicity_mean" not in corpus_scores(preds[:10], refs[:10], n_boot=50)


def test_corpus_scores_rejects_mismatched_inputs(pairs):
    preds, refs = pairs
    with pytest.raises(ValueError, match="as many predictions as references"):
        corpus_scores(preds, refs[:-1])
    with pytest.raises(ValueError, match="toxicity scores"):
        corpus_scores(preds, refs, toxicity=np.zeros(3))


def test_paired_test_detects_a_clear_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(0.3, 0.1, 100)
    b = a + 0.05 + rng.normal(0, 0.02, 100)
    out = paired_test(a, b)
    assert out["p_value"] < 0.05 and out["p_value"] >= 1 / 1001  # a permutation p-value is never 0
    assert out["low"] > 0 and out["delta"] == pytest.approx(np.mean(b - a))
    assert out["test"] == "approximate randomisation"


def test_paired_test_finds_no_difference_between_samples_of_the_same_noise():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 0.1, 100), rng.normal(0.3, 0.1, 100)
    out = paired_test(a, b)
    assert out["p_value"] > 0.05
    assert out["low"] < 0 < out["high"]
    assert paired_test(a, a)["p_value"] == 1.0


def test_paired_test_is_scipy_approximate_randomisation():
    # The p-value is scipy's paired permutation test (labels swapped within pairs), as sacrebleu's AR test does.
    from scipy import stats

    rng = np.random.default_rng(4)
    a = rng.normal(0.3, 0.1, 40)
    b = a + rng.normal(0.02, 0.05, 40)
    expected = stats.permutation_test((a, b), lambda x, y, axis: np.mean(y - x, axis=axis), vectorized=True,
                                      permutation_type="samples", n_resamples=500, rng=np.random.default_rng(7))
    assert paired_test(a, b, n_boot=500, seed=7)["p_value"] == pytest.approx(expected.pvalue)
    # A small sample is tested exactly: with 6 pairs all 2^6 sign patterns are enumerated.
    small = paired_test(np.zeros(6), np.ones(6), n_boot=1000)
    assert small["p_value"] == pytest.approx(2 / 64)


def test_paired_test_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="same examples"):
        paired_test(np.zeros(5), np.zeros(6))


def test_corpus_bleu_chrf_interval_is_sacrebleus_own(pairs):
    # BLEU/chrF CIs come from sacrebleu's public significance API (paired bootstrap of the corpus score).
    from sacrebleu.significance import PairedTest

    preds, refs = pairs
    _, res = PairedTest([("s", preds)], {"bleu": sacrebleu.BLEU()}, [refs], test_type="bs", n_samples=300)()
    est = corpus_scores(preds, refs, n_boot=300)["bleu"]
    r = res["BLEU"][0]
    assert est.value == pytest.approx(r.score) and est.low == pytest.approx(r.mean - r.ci)
    assert est.high == pytest.approx(r.mean + r.ci)


def test_corpus_paired_test_is_sacrebleus_approximate_randomisation(pairs):
    preds, refs = pairs
    same = metrics.corpus_paired_test(preds, preds, refs, n_boot=200)
    assert same["bleu"]["delta"] == 0 and same["bleu"]["p_value"] == 1.0 and same["chrf"]["p_value"] == 1.0
    worse = [" ".join(p.split()[:3]) for p in preds]  # much shorter outputs: BLEU and chrF drop for sure
    out = metrics.corpus_paired_test(preds, worse, refs, n_boot=200)
    assert out["bleu"]["delta"] < 0 and out["chrf"]["delta"] < 0
    assert out["bleu"]["p_value"] == pytest.approx(1 / 201) and out["chrf"]["test"] == "approximate randomisation (sacrebleu)"


def test_ratio_ci_is_a_corpus_perplexity_with_an_interval():
    nll, tokens = np.array([2.0, 4.0, 9.0, 1.0]), np.array([1, 2, 3, 1])
    est = metrics.ratio_ci(nll, tokens, n_boot=500, transform=np.exp)
    assert est.value == pytest.approx(np.exp(16 / 7))
    assert est.low <= est.value <= est.high and est.high > est.low
    assert metrics.ratio_ci([2.0, 2.0], [1, 1]).value == pytest.approx(2.0)


def test_preference_and_share_use_wilson_intervals_and_a_sign_test():
    from scipy import stats

    out = metrics.preference(wins=12, ties=3, losses=5)
    assert out["n"] == 20 and out["win"]["value"] == pytest.approx(0.6)
    ci = stats.binomtest(12, 20).proportion_ci(method="wilson")
    assert (out["win"]["low"], out["win"]["high"]) == pytest.approx((ci.low, ci.high))
    assert out["p_value"] == pytest.approx(stats.binomtest(12, 17).pvalue)
    assert metrics.preference(0, 4, 0)["p_value"] == 1.0
    assert metrics.share(3, 10)["value"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no ratings"):
        metrics.preference(0, 0, 0)


def test_no_private_sacrebleu_api():
    import inspect

    from lifecycle.core import metrics as m

    sources = inspect.getsource(m) + (m.METRICS_DIR / "chrf" / "chrf.py").read_text()
    assert "_extract_corpus_statistics" not in sources and "_compute_score_from_stats" not in sources


# --- toxicity ----------------------------------------------------------------------------------

def test_profanity_check_ranks_insults_above_thanks():
    scores = load_scorer("profanity-check").score(["you are a fucking idiot", "thank you for your help"])
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()
    assert scores[0] > 0.5 > scores[1]


def test_a_system_is_scored_once_with_the_scorers_toxicity(monkeypatch):
    """systems.score, the path evaluate, rlhf and quantize take: per-example toxicity is the scorer's, its
    mean and share above 0.5 are the headline, and ROUGE is computed once for scores and per-example values."""
    from types import SimpleNamespace

    from lifecycle.core import systems
    from lifecycle.core.generate import Generation

    texts = ["you are a fucking idiot", "thank you for your help", "have a nice day"]
    refs = ["thank you", "thank you for your help", "nice day"]
    outputs = [Generation(str(i), "p", t, r, 1, len(t.split()), 0, 0.1) for i, (t, r) in enumerate(zip(texts, refs))]
    rouge = load_metric("rouge")
    calls, compute = [], rouge.compute
    monkeypatch.setattr(rouge, "compute", lambda **kw: calls.append(1) or compute(**kw))
    cfg = SimpleNamespace(run=SimpleNamespace(seed=0), data=SimpleNamespace(slice_column=None))
    scorer = load_scorer("profanity-check")
    out = systems.score(cfg, outputs, scorer, None, n_boot=100)
    assert len(calls) == 1
    assert out["per_example"]["toxicity"] == pytest.approx(scorer.score(texts).tolist())
    assert out["scores"]["toxicity_mean"]["value"] == pytest.approx(np.mean(out["per_example"]["toxicity"]))
    assert out["scores"]["toxicity_share"]["value"] == pytest.approx(1 / 3)  # the insult only
    assert out["per_example"]["rougeL"][1] == pytest.approx(1.0)
    assert out["scores"]["rougeL"]["value"] == pytest.approx(np.mean(out["per_example"]["rougeL"]))
    assert "slice" not in out


def test_unknown_scorer_names_the_known_ones():
    with pytest.raises(LifecycleError, match=r"`perspective` is not a built-in scorer \(profanity-check\)"):
        load_scorer("perspective")


def test_probe_check_ranks_the_demo_probe_set():
    from lifecycle.core.toxicity import load_scorer, probe_check

    check = probe_check(load_scorer("profanity-check"))
    assert check["examples"] == 360 and set(check["roc_auc_by_kind"]) == {"plain", "hard"}
    assert 0.5 < check["roc_auc"] <= 1 and check["roc_auc_by_kind"]["plain"] > check["roc_auc_by_kind"]["hard"]
    assert check["mean_score"]["toxic"] > check["mean_score"]["non_toxic"]

"""ROUGE-1/2/L/Lsum F1 with `rouge_score`, as a local `evaluate` module.

Loaded by path (`evaluate.load(".../metrics/rouge")`) so that no hub download is
needed. It matches the hub `rouge` metric on single references, with two
deliberate differences: stemming is on by default (the usual setting for
summarization), and the aggregate is the plain mean of the per-example scores
rather than the median of a randomly seeded bootstrap, so that it is
reproducible and equals the mean of `use_aggregator=False`.
"""

import functools

import datasets
import evaluate
import numpy as np
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenize, tokenizers

_DESCRIPTION = """ROUGE F1 between predictions and references: unigram (rouge1) and bigram
(rouge2) overlap, longest common subsequence over the whole text (rougeL) and
summary-level LCS over newline-separated sentences (rougeLsum). Text is
lowercased and split on non-alphanumeric characters by `rouge_score`."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    rouge_types: subset of ["rouge1", "rouge2", "rougeL", "rougeLsum"] (default: all four).
    use_aggregator: True returns the mean F1 per type; False returns a list per type, one value per example.
    use_stemmer: Porter-stem tokens before matching (default True).
Returns:
    {rouge_type: float in [0, 1]} or {rouge_type: list of floats}.
Examples:
    >>> rouge = evaluate.load("lifecycle/metrics/rouge")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])["rouge1"]
    0.857...
"""

_CITATION = """@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew", booktitle = "Text Summarization Branches Out", year = "2004",
    url = "https://aclanthology.org/W04-1013"}"""

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
_FLAT = {"rougeLsum": "rougeL"}  # what a type reduces to on text without newlines


class _MemoStemmer:
    """nltk's Porter stemmer (rouge_score's) with a per-process cache of its stems.

    Stemming is most of ROUGE's run time and summaries reuse few words, so the
    cache roughly halves it; the tokens are identical.
    """

    def __init__(self):
        self.stem = functools.lru_cache(maxsize=200_000)(porter.PorterStemmer().stem)


_STEMMER = _MemoStemmer()


class _Tokenizer(tokenizers.Tokenizer):
    """rouge_score's default tokenizer (lowercase, split on non-alphanumerics, stem words over 3 letters)."""

    def __init__(self, use_stemmer: bool):
        self._stemmer = _STEMMER if use_stemmer else None

    def tokenize(self, text):
        return tokenize.tokenize(text, self._stemmer)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=True):
        rouge_types = list(rouge_types or ROUGE_TYPES)
        unknown = sorted(set(rouge_types) - set(ROUGE_TYPES))
        if unknown:
            raise ValueError(f"unknown rouge_types {unknown}; choose from {ROUGE_TYPES}")
        tokenizer = _Tokenizer(use_stemmer)
        # rouge_score splits rougeLsum's sentences on "\n" itself, like the hub metric.
        scorer = rouge_scorer.RougeScorer(rouge_types, tokenizer=tokenizer)
        # Without a newline, rougeLsum scores one sentence against one, where the union LCS is
        # the LCS and rougeLsum equals rougeL; reusing it skips the second (slowest) LCS pass.
        flat = rouge_scorer.RougeScorer(sorted({_FLAT.get(t, t) for t in rouge_types}), tokenizer=tokenizer)

        def score(pred, ref):
            if "\n" in pred or "\n" in ref:
                return scorer.score(ref, pred)
            flat_scores = flat.score(ref, pred)
            return {t: flat_scores[_FLAT.get(t, t)] for t in rouge_types}

        scores = [score(pred, ref) for pred, ref in zip(predictions, references)]
        per_type = {t: [float(s[t].fmeasure) for s in scores] for t in rouge_types}
        if not use_aggregator:
            return per_type
        return {t: float(np.mean(v)) if v else 0.0 for t, v in per_type.items()}

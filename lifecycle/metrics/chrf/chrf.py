"""chrF with `sacrebleu` (0-100), corpus or per example, as a local `evaluate` module.

Loaded by path so that no hub download is needed. chrF is character n-gram
F-score (beta=2, orders 1-6), robust to morphology and needing no tokenizer,
which makes it a useful companion to ROUGE on short summaries.
"""

import datasets
import evaluate
import sacrebleu as scb

_DESCRIPTION = """chrF: character n-gram F-beta score (orders 1-6, beta 2). The corpus score is
computed from n-gram statistics summed over the corpus; the sentence scores use
each example's own statistics."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    word_order: 0 for chrF, 2 for chrF++ (default 0).
    lowercase: compare lowercased text (default False).
    per_example: return `scores`, the sentence chrF of each example, instead of the corpus `score` (default False).
Returns:
    score (0-100) or, when per_example=True, scores (list); char_order, word_order, beta.
Examples:
    >>> chrf = evaluate.load("lifecycle/metrics/chrf")
    >>> chrf.compute(predictions=["the cat"], references=["the cat"])["score"]
    100.0
"""

_CITATION = """@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation", author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation", year = "2015",
    url = "https://aclanthology.org/W15-3049"}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/mjpost/sacreBLEU"],
        )

    def _compute(self, predictions, references, word_order=0, lowercase=False, per_example=False):
        chrf = scb.CHRF(word_order=word_order, lowercase=lowercase)
        settings = {"char_order": chrf.char_order, "word_order": chrf.word_order, "beta": chrf.beta}
        # sacrebleu's public API: one sentence score per example, or the corpus score (not their mean)
        if per_example:
            return {"scores": [chrf.sentence_score(p, [r]).score for p, r in zip(predictions, references)], **settings}
        return {"score": chrf.corpus_score(predictions, [references]).score if predictions else 0.0, **settings}

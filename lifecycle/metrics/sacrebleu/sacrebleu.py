"""Corpus BLEU with `sacrebleu` (0-100), as a local `evaluate` module.

Loaded by path so that no hub download is needed. One reference per prediction,
sacrebleu's defaults (13a tokenizer, exponential smoothing), which is what the
hub `sacrebleu` metric computes for single references.
"""

import datasets
import evaluate
import sacrebleu as scb

_DESCRIPTION = """Corpus-level BLEU: geometric mean of 1-4-gram precisions times a brevity
penalty, computed on the n-gram counts summed over the whole corpus (so it is not
the mean of sentence BLEU)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    lowercase: compare lowercased text (default False).
    tokenize: sacrebleu tokenizer name (default "13a").
Returns:
    score (0-100), counts, totals, precisions, bp, sys_len, ref_len.
Examples:
    >>> bleu = evaluate.load("lifecycle/metrics/sacrebleu")
    >>> round(bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])["score"], 2)
    100.0
"""

_CITATION = """@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores", author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation", year = "2018",
    url = "https://www.aclweb.org/anthology/W18-6319"}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/mjpost/sacreBLEU"],
        )

    def _compute(self, predictions, references, lowercase=False, tokenize=None):
        if not predictions:  # sacrebleu raises on an empty corpus; score it 0 like the other metrics
            return {"score": 0.0, "counts": [0] * 4, "totals": [0] * 4, "precisions": [0.0] * 4,
                    "bp": 0.0, "sys_len": 0, "ref_len": 0}
        bleu = scb.BLEU(lowercase=lowercase, tokenize=tokenize)
        out = bleu.corpus_score(predictions, [references])
        return {"score": out.score, "counts": out.counts, "totals": out.totals, "precisions": out.precisions,
                "bp": out.bp, "sys_len": out.sys_len, "ref_len": out.ref_len}

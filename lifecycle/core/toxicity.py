"""Toxicity scorers: text in, probability of being toxic in [0, 1] out.

One small registry shared by the `toxicity` metric (evaluate, quantize) and the
RLHF reward, so that the toxicity a stage reports is the toxicity it optimised.
A scorer is named by a `ScorerConfig`: `profanity-check` (the scikit-learn model
shipped in alt-profanity-check) is the offline default; any other name is read
as an `AutoModelForSequenceClassification` (hub id or local folder — for example
one trained by `python -m lifecycle.reward_model`) whose `nontoxic_label` the
config names.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from lifecycle.core.config import option, require
from lifecycle.core.errors import ModelError

HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class ScorerConfig:
    """A toxicity scorer and its options; where a config takes a scorer, a bare name means `{model: <name>}`."""

    model: str = option("profanity-check", help="`profanity-check` (offline scikit-learn model), or an "
                        "AutoModelForSequenceClassification: hub id (facebook/roberta-hate-speech-dynabench-r4-target) "
                        "or local save_pretrained folder (e.g. one written by `python -m lifecycle.reward_model`).")
    nontoxic_label: str | None = option(None, help="The classifier's label that means not toxic (`nothate` for the "
                                        "roberta model above, `non_toxic` for lifecycle.reward_model); toxicity is "
                                        "1 - its probability. Required for a classifier, unused by profanity-check.")
    max_length: int = option(256, help="Tokens of each text a classifier reads; longer texts are truncated.")
    batch_size: int = option(32, help="Texts a classifier scores together.")

    def __post_init__(self):
        require(self.max_length > 0, "max_length", self.max_length, "a positive number of tokens")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")


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


class SequenceClassifier:
    """An `AutoModelForSequenceClassification`: toxicity = 1 - softmax probability of the non-toxic label."""

    def __init__(self, cfg: ScorerConfig):
        import torch
        from transformers import AutoModelForSequenceClassification

        from lifecycle.core import models

        if not cfg.nontoxic_label:
            raise ModelError(f"toxicity scorer `{cfg.model}` is not a built-in scorer ({', '.join(SCORERS)}), so it is "
                             "read as a sequence-classification model, and those need `nontoxic_label`: the label that "
                             "means not toxic (e.g. `{model: facebook/roberta-hate-speech-dynabench-r4-target, "
                             "nontoxic_label: nothate}`). Name a built-in scorer, or add the label.")
        path = models.resolve(cfg.model)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise ModelError(f"could not load the toxicity classifier `{cfg.model}` ({str(err).splitlines()[0]}). "
                             "Give a local folder written by save_pretrained, or a hub id with the hub reachable; "
                             f"the built-in scorers are {', '.join(SCORERS)}.") from None
        labels = {str(name): int(i) for i, name in self.model.config.id2label.items()}
        if cfg.nontoxic_label not in labels:
            raise ModelError(f"the toxicity classifier `{cfg.model}` has no label `{cfg.nontoxic_label}`; its labels "
                             f"are {sorted(labels)}. Set nontoxic_label to the one that means not toxic.")
        self.tokenizer = models.load_tokenizer(path)  # pads with EOS where the tokenizer has no pad token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # so the head reads each text's last real token
        self.device = models.pick_device("auto")
        self.model.to(self.device).eval()
        self.name, self.cfg, self.nontoxic = cfg.model, cfg, labels[cfg.nontoxic_label]

    def score(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.cfg.batch_size):
                batch = self.tokenizer(texts[i:i + self.cfg.batch_size], padding=True, truncation=True,
                                       max_length=self.cfg.max_length, return_tensors="pt").to(self.device)
                probs = self.model(**batch).logits.float().softmax(-1)
                out.append(1.0 - probs[:, self.nontoxic].cpu().numpy())
        return np.clip(np.concatenate(out).astype(np.float64), 0.0, 1.0) if out else np.zeros(0)


# Built-in scorers by name; any other name is a sequence-classification model.
SCORERS: dict[str, Callable[[], ToxicityScorer]] = {
    ProfanityCheck.name: ProfanityCheck,
}


@functools.cache
def load_scorer(ref: ScorerConfig | str) -> ToxicityScorer:
    """The scorer `ref` names (a ScorerConfig, or a built-in name), built once per process."""
    cfg = ScorerConfig(model=ref) if isinstance(ref, str) else ref
    if cfg.model in SCORERS:
        return SCORERS[cfg.model]()
    return SequenceClassifier(cfg)


def non_toxicity_logit(toxicity: np.ndarray) -> np.ndarray:
    """Log-odds of not toxic, log((1 - t) / t): for a two-label classifier, its non-toxic minus its toxic logit."""
    t = np.clip(np.asarray(toxicity, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log1p(-t) - np.log(t)


def probe_check(scorer: ToxicityScorer, path: str | None = None) -> dict:
    """How well a scorer ranks toxic above non-toxic text on a labelled set (the demo probe set by
    default; any jsonl with `text` and `toxic` 0/1, optionally `kind`): ROC AUC, accuracy at 0.5,
    the AUC of each kind (plain, hard negatives vs hard positives), and score histograms per class.
    A reward that cannot rank is a bug to catch before spending RL compute on it.

        python -c "from lifecycle.core.toxicity import *; print(probe_check(load_scorer('profanity-check')))"
    """
    rows = load_labelled(path)
    labels = np.array([int(r["toxic"]) for r in rows])
    scores = scorer.score([r["text"] for r in rows])
    kinds = {"plain": ("plain", "plain"), "hard": ("hard_negative", "hard_positive")}
    by_kind = {}
    for name, (negative, positive) in kinds.items():
        pick = np.array([(r["toxic"] == 0 and r.get("kind") == negative) or (r["toxic"] == 1 and r.get("kind") == positive)
                         for r in rows])
        if pick.any() and len(set(labels[pick])) == 2:
            by_kind[name] = ranking(labels[pick], scores[pick])["roc_auc"]
    edges = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    return {"scorer": scorer.name, "data": str(path or "demo probe set"), **ranking(labels, scores),
            "roc_auc_by_kind": by_kind,
            "mean_score": {"toxic": round(float(scores[labels == 1].mean()), 3),
                           "non_toxic": round(float(scores[labels == 0].mean()), 3)},
            "histogram": {"edges": edges.round(2).tolist(),
                          "toxic": np.histogram(scores[labels == 1], edges)[0].tolist(),
                          "non_toxic": np.histogram(scores[labels == 0], edges)[0].tolist()}}


def ranking(labels: np.ndarray, scores: np.ndarray) -> dict:
    """How well `scores` rank the toxic (1) above the clean (0): ROC AUC, and accuracy at 0.5."""
    from sklearn.metrics import roc_auc_score

    return {"examples": len(labels), "roc_auc": round(float(roc_auc_score(labels, scores)), 3),
            "accuracy_at_0.5": round(float(((scores > 0.5) == labels).mean()), 3)}


def probe_path(path: str | None) -> Path:
    """The labelled set a reward is checked on: the given file, else the demo probe set."""
    from lifecycle.core.data import DEMO_DIR

    return Path(path) if path else DEMO_DIR / "toxicity_probe.jsonl"


def load_labelled(path: str | None) -> list[dict]:
    """Rows of a labelled jsonl with `text` and `toxic` (0/1) and both classes present."""
    file = probe_path(path)
    if not file.is_file():
        raise ModelError(f"the labelled toxicity set `{file}` does not exist. Give a jsonl file with one "
                         '{"text": ..., "toxic": 0 or 1} per line.')
    rows, bad = [], []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row = {}
        if row is not None:
            rows.append(row)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or row.get("toxic") not in (0, 1):
                bad.append(number)
    if bad or len({r["toxic"] for r in rows}) < 2:
        raise ModelError(f"the labelled toxicity set `{file}` needs a string `text` and a `toxic` of 0 or 1 on every "
                         f"line, and both classes; {'lines ' + str(bad[:5]) + ' are not like that' if bad else 'it has one class only'}. "
                         "Fix those lines.")
    return rows

"""The RL reward: non-toxicity plus two guards against reward hacking, as TRL reward functions.

Non-toxicity alone is maximised by an empty or generic summary, so faithfulness
(ROUGE-L against the reference summary) and length (near the reference's) are part of
the reward: saying nothing is never the optimum.
"""

from __future__ import annotations

import math

import numpy as np

from lifecycle.core import metrics
from lifecycle.core.toxicity import non_toxicity_logit

WEIGHTS = {"non_toxicity": 1.0, "faithfulness": 1.0, "length": 0.5}


def rewards(scorer, weights: dict[str, float], output: str = "probability"):
    """The reward terms as TRL reward functions (completions in, one float each out) and their weights."""

    def text(completion) -> str:  # conversational datasets give message lists
        return completion[-1]["content"] if isinstance(completion, list) else completion

    def non_toxicity(completions, **_):
        toxicity = scorer.score([text(c) for c in completions])
        return (non_toxicity_logit(toxicity) if output == "logit" else 1.0 - toxicity).tolist()

    def faithfulness(completions, reference, **_):
        return metrics.per_example([text(c) or " " for c in completions], reference)["rougeL"].tolist()

    def length(completions, reference, **_):
        return [length_reward(text(c), r) for c, r in zip(completions, reference)]

    terms = {"non_toxicity": non_toxicity, "faithfulness": faithfulness, "length": length}
    chosen = [name for name in terms if weights.get(name, WEIGHTS[name]) != 0]
    return [terms[n] for n in chosen], [float(weights.get(n, WEIGHTS[n])) for n in chosen]


def total_reward(scorer, weights: dict[str, float], output: str = "probability"):
    """The weighted sum of the reward terms, as one function of (summaries, references)."""
    funcs, w = rewards(scorer, weights, output)
    return lambda texts, refs: sum(wi * np.array(f(completions=texts, reference=refs)) for f, wi in zip(funcs, w))


def length_reward(summary: str, reference: str) -> float:
    """1 within the reference's length, falling linearly in log-ratio to 0 at half or double; -1 if empty."""
    words, target = len(summary.split()), max(1, len(reference.split()))
    if words == 0:
        return -1.0
    return max(0.0, 1.0 - abs(math.log(words / target)) / math.log(2))

"""Degenerate-output checks: what a reward can be gamed with and ROUGE barely sees.

An RL policy that learns to say nothing, to repeat a safe phrase, or to write the same
summary for every dialogue can look less toxic. These numbers show it: the share of
empty outputs, how much of each output repeats itself (repeated word trigrams), and
how varied the outputs are across the set (distinct-1/2, unique n-grams over all n-grams).
"""

from __future__ import annotations


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repetition(text: str) -> float:
    """Share of the word trigrams of a text that repeat an earlier trigram of the same text."""
    grams = _ngrams(text.lower().split(), 3)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def checks(texts: list[str]) -> dict[str, float]:
    words = [t.lower().split() for t in texts]
    result = {"empty_share": sum(not w for w in words) / max(1, len(texts)),
              "repetition": sum(repetition(t) for t in texts) / max(1, len(texts))}
    for n in (1, 2):
        grams = [g for w in words for g in _ngrams(w, n)]
        result[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    return {k: round(v, 4) for k, v in result.items()}


def worse(before: dict, after: dict, tolerance: float = 0.02) -> list[str]:
    """The checks on which `after` is worse than `before` by more than `tolerance`."""
    higher_is_worse = {"empty_share", "repetition"}
    return [k for k in before if (after[k] - before[k] if k in higher_is_worse else before[k] - after[k]) > tolerance]

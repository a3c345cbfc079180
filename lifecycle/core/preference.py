"""Preference pairs for DPO, built once before training: no generation per training step.

On a CPU, GRPO spends most of a step generating, and after SFT on neutral references
only 1-3% of its samples copy a spliced insult (measured, docs/rlhf-experiments.md):
most groups have nothing to push away from. Two ways to get pairs that do:

- `counterfactual` (with `rlhf.splice`): a clean summary of a spliced dialogue against
  the same summary with the spliced turn copied in, attributed to its speaker the way an
  extractive summary does. The pair differs only where the insult enters, so the
  preference is about exactly that. The clean side is the neutral reference
  (`chosen: reference`, no generation at all) or the policy's own greedy summary
  (`chosen: own`; the reference where the own one already copies the insult). Chosen
  always shorter than rejected teaches "shorter is better" too: measured, own-summary
  pairs shrank the summaries and cost ROUGE-L; the reference as chosen with an SFT term
  on it (`preference.loss_type: [sigmoid, sft]`) keeps ROUGE-L but not the length.
  `rejected: replacing` takes that lever away: the copied turn replaces one sentence of a
  summary of two or more, so both sides are about as long and lose against each other
  only by what they say (the offline default, with the SFT term x2 and a larger step:
  docs/rlhf-experiments.md, stop 17).
- `sampled`: `samples` summaries per prompt at temperature 1, best against worst by
  the reward (the way TRL's docs build on-policy pairs), for rewards without a splice.

Either way the reward ranks every pair, and a pair it does not rank the right way
round is dropped and counted: the pairs are the reward's judgement, not ours.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lifecycle.core import generate, models, prompts, splice
from lifecycle.core.artifacts import Prompt
from lifecycle.core.config import option, require
from lifecycle.core.errors import StageError
from lifecycle.core.rewards import total_reward
from lifecycle.core.toxicity import load_scorer

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class PairsConfig:
    source: Literal["counterfactual", "sampled"] = option(
        "counterfactual", help="counterfactual: a clean summary (see chosen) vs the same with the spliced turn "
        "copied in (needs rlhf.splice); sampled: best vs worst of `samples` sampled summaries by the reward.")
    chosen: Literal["reference", "own"] = option("reference", help="counterfactual: the clean side is the reference "
                                                 "summary, or the policy's own greedy summary (one generation pass).")
    rejected: Literal["adding", "replacing"] = option(
        "adding", help="counterfactual: the copied turn is added to the clean summary, or replaces one of its "
        "sentences (summaries of two or more), so that chosen and rejected are about as long.")
    samples: int = option(4, help="sampled: summaries sampled per prompt (temperature 1.0).")
    prompts: int | None = option(128, help="Training prompts to build pairs from, shortest dialogues first (each "
                                 "pair is two training sequences); null: all.")
    batch_size: int = option(32, help="Prompts generated together while building the pairs.")

    def __post_init__(self):
        require(self.samples >= 2, "samples", self.samples, "at least 2 summaries per prompt to rank")
        require(self.prompts is None or self.prompts > 0, "prompts", self.prompts, "a positive count, or null for all")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")


def shortest(dialogues: list[str], limit: int | None) -> list[int]:
    """Indices of the `limit` shortest dialogues, in their original order."""
    order = sorted(range(len(dialogues)), key=lambda i: (len(dialogues[i]), i))
    return sorted(order[:limit] if limit else order)


def copy_in(summary: str, turn: splice.Turn, dialogue: str, rng: random.Random, replacing: bool = False) -> str:
    """`summary` with `turn` reported in it at a sentence boundary, the way an extractive summary copies one
    (`replacing`: in place of one of its sentences, when it has two or more)."""
    other = next((s for s in splice.speakers(dialogue) if s != turn.speaker), "the others")
    text = turn.text.strip()
    lower = text[:1].lower() + text[1:]
    clause = rng.choice([f'{turn.speaker} says, "{text}"', f'{turn.speaker} tells {other}, "{text}"',
                         f"{turn.speaker} tells {other} {lower}", f"{turn.speaker} says {lower}"])
    sentences = SENTENCE_END.split(summary.strip()) if summary.strip() else []
    if replacing and len(sentences) > 1:
        at = rng.randrange(len(sentences))
        return " ".join(sentences[:at] + [clause] + sentences[at + 1:])
    at = rng.randint(0, len(sentences))
    if at and rng.random() < 0.5:  # woven into a sentence of the summary, not only a sentence of its own
        sentences[at - 1] = f"{sentences[at - 1].rstrip('.!?')}, and {clause[:1].lower() + clause[1:]}"
        return " ".join(sentences)
    return " ".join(sentences[:at] + [clause] + sentences[at:])


def counterfactual(own: list[str], references: list[str], turns: list[splice.Turn | None], dialogues: list[str],
                   toxic: np.ndarray, seed: int, replacing: bool = False) -> list[tuple[str, str] | None]:
    """(chosen, rejected) per prompt: the clean own summary (else the reference) and it with the turn copied in."""
    rng = random.Random(seed)
    out = []
    for summary, ref, turn, dialogue, is_toxic in zip(own, references, turns, dialogues, toxic):
        chosen = ref if is_toxic else summary
        out.append((chosen, copy_in(chosen, turn, dialogue, rng, replacing)) if turn else None)
    return out


def best_and_worst(candidates: list[list[str]], totals: list[np.ndarray]) -> list[tuple[str, str]]:
    """(highest-reward, lowest-reward) candidate per prompt."""
    return [(c[int(np.argmax(t))], c[int(np.argmin(t))]) for c, t in zip(candidates, totals)]


def sample(model, tokenizer, prompts: list[str], gen_config, samples: int, batch_size: int, seed: int) -> list[list[str]]:
    """`samples` summaries per prompt at temperature 1."""
    config = gen_config.__class__(**{**gen_config.to_dict(), "do_sample": True, "temperature": 1.0, "top_p": 1.0})
    flat = generate.generate(model, tokenizer, [p for p in prompts for _ in range(samples)], config, batch_size, seed,
                             desc="rlhf pairs: sampling")
    texts = [g.prediction for g in flat]
    return [texts[i:i + samples] for i in range(0, len(texts), samples)]


def rows(tokenizer, template: str, dialogues: list[str], pairs: list[tuple[str, str]]) -> list[dict]:
    """TRL's preference format (prompt, chosen, rejected), conversational for a chat model like SFT's."""
    out = []
    for dialogue, (chosen, rejected) in zip(dialogues, pairs):
        good = prompts.training_example(tokenizer, template, dialogue, chosen)
        out.append({"prompt": good["prompt"], "chosen": good["completion"],
                    "rejected": prompts.training_example(tokenizer, template, dialogue, rejected)["completion"]})
    return out


def build(cfg, policy: str, prompt: Prompt, tokenizer, device: str, dialogues: list[str], references: list[str],
          turns: list[splice.Turn | None], seed: int) -> dict:
    """The pairs in TRL's format and what they are: from the references or generated with the SFT model,
    ranked by the reward, pairs the reward does not rank the right way round dropped."""
    began, pc = time.perf_counter(), cfg.rlhf.pairs
    scorer = load_scorer(cfg.rlhf.reward)
    total = total_reward(scorer, cfg.rlhf.weights, cfg.rlhf.reward_output)
    own_toxic = 0
    if pc.source == "counterfactual" and pc.chosen == "reference":  # nothing to generate
        candidates = counterfactual(references, references, turns, dialogues, np.zeros(len(references), bool), seed,
                                    pc.rejected == "replacing")
    else:
        model = models.load_model(policy, device, cfg.models.dtype)
        gen = generate.generation_config(prompt.generation, "prompt generation")
        texts = prompts.format_prompts(tokenizer, prompt.template, dialogues, [],
                                       models.context_length(model.config, tokenizer), gen.max_new_tokens)[0]
        if pc.source == "counterfactual":
            own = [g.prediction for g in generate.generate(model, tokenizer, texts, gen, pc.batch_size, seed,
                                                            desc="rlhf pairs: own summaries")]
            toxic = scorer.score(own) > 0.5
            candidates, own_toxic = (counterfactual(own, references, turns, dialogues, toxic, seed,
                                                       pc.rejected == "replacing"), int(toxic.sum()))
        else:
            samples = sample(model, tokenizer, texts, gen, pc.samples, pc.batch_size, seed)
            candidates = best_and_worst(samples, [total(c, [r] * len(c)) for c, r in zip(samples, references)])
        del model
    kept = [(d, pair, float(g[0] - g[1])) for d, r, pair in zip(dialogues, references, candidates)
            if pair and (g := total(list(pair), [r, r]))[0] > g[1]]
    if not kept:
        raise StageError(f"no preference pair survived the reward's ranking ({len(dialogues)} prompts, source "
                         f"{pc.source}): the reward never prefers the chosen summary. Check rlhf.reward and "
                         "rlhf.weights, or use more prompts (rlhf.pairs.prompts).")
    summary = {"source": pc.source, "chosen": pc.chosen if pc.source == "counterfactual" else "best sample",
               "prompts": len(dialogues), "kept": len(kept),
               "dropped": sum(c is not None for c in candidates) - len(kept), "own_toxic": own_toxic,
               "reward_gap": round(float(np.mean([g for _, _, g in kept])), 4),
               "seconds": round(time.perf_counter() - began, 1)}
    return {"summary": summary, "rows": rows(tokenizer, prompt.template, [d for d, _, _ in kept],
                                            [p for _, p, _ in kept])}

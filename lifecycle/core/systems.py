"""A model as a system under test: generate for a split with the prompt it expects,
score its outputs (every metric with a 95% CI, toxicity, the data's slice), measure the
likelihood of the references (perplexity), and compare two systems on the same examples
(paired approximate-randomisation test, bootstrap CI of the change). evaluate, rlhf and
quantize share it, so their numbers are computed the same way."""

from __future__ import annotations

import numpy as np

from lifecycle.core import generate, likelihood, metrics, models, predictions, prompts
from lifecycle.core.artifacts import Prompt

PAIRED = ("rougeL", "toxicity", "nll")  # the per-example scores systems are compared on (nll when measured)
SLICED = ("rougeL", "toxicity")  # the scores reported on the data's slice


class LazyModel:
    """A system's model, loaded on first use: a system whose predictions are all reused never loads.
    `load`: how to load it, when not `path`'s model in the run's device and dtype (a GGUF file)."""

    def __init__(self, cfg, path: str, load=None):
        self.cfg, self.path, self.load, self.model = cfg, path, load, None

    def __call__(self):
        if self.model is None:
            self.model = self.load() if self.load else models.load_model(self.path, self.cfg.models.device,
                                                                          self.cfg.models.dtype)
        return self.model


def predict(cfg, path: str, prompt: Prompt, split, batch_size: int, desc: str, model=None,
            weights: str | None = None) -> predictions.Predictions:
    """Generate for every row of `split` with `prompt` (template, shot_examples, generation) — or read back
    what this run already generated with the same weights, prompts and decoding (core/predictions.py).
    `model`: the model already loaded (or a LazyModel), else `path`'s is loaded; `weights`: the folder whose
    content is that model, when it is not `path` (a GGUF file read with `path`'s tokenizer)."""
    tokenizer = models.load_tokenizer(path)
    gen_config = generate.generation_config(prompt.generation, "prompt generation")
    texts = prompt_texts(cfg, models.load_config(path), tokenizer, prompt, split, gen_config.max_new_tokens)
    ids, refs = [str(i) for i in split[cfg.data.id_column or "id"]], list(split[cfg.data.target_column])
    digest = predictions.key(cfg, weights or path, texts, gen_config, batch_size, ids, refs)
    if (made := predictions.reused(cfg, digest)) is not None:
        print(f"[lifecycle] {desc}: reusing the {len(made)} predictions this run already made with the same "
              f"weights, prompts and decoding ({predictions.path_of(cfg, digest)})")
        return made
    if model is None or isinstance(model, LazyModel):
        model = (model or LazyModel(cfg, path))()
    made = generate.generate(model, tokenizer, texts, gen_config, batch_size, cfg.run.seed, ids=ids, references=refs,
                             desc=desc)
    return predictions.keep(cfg, digest, made)


def prompt_texts(cfg, config, tokenizer, prompt: Prompt, split, max_new_tokens: int, column: str | None = None) -> list[str]:
    """The prompt the model (of `config`) is used with, for every row of `split` (template, few-shot examples,
    chat template)."""
    return prompts.format_prompts(tokenizer, prompt.template, list(split[column or cfg.data.input_column]),
                                  [tuple(s) for s in prompt.shot_examples],
                                  models.context_length(config, tokenizer), max_new_tokens)[0]


def reference_nll(cfg, model, path: str, prompt: Prompt, split, batch_size: int, input_column: str | None = None,
                  target_column: str | None = None) -> dict[str, list]:
    """Per example: summed NLL of the reference given the model's prompt, and its token count."""
    tokenizer = models.load_tokenizer(path)
    max_new = generate.generation_config(prompt.generation, "prompt generation").max_new_tokens
    texts = prompt_texts(cfg, model.config, tokenizer, prompt, split, max_new, input_column)
    refs = list(split[target_column or cfg.data.target_column])
    nll, tokens = likelihood.completion_nll(model, tokenizer, texts, likelihood.completions(tokenizer, refs), batch_size)
    return {"nll_sum": nll.tolist(), "tokens": tokens.tolist()}


def perplexity(nll: dict, n_boot: int, seed: int) -> dict:
    """Perplexity of the references, exp(summed NLL / summed tokens), with a bootstrap CI over examples,
    and the per-example mean token NLL that paired tests compare."""
    est = metrics.ratio_ci(nll["nll_sum"], nll["tokens"], n_boot, seed, transform=np.exp)
    per_token = (np.array(nll["nll_sum"]) / np.maximum(np.array(nll["tokens"]), 1)).tolist()
    return {"perplexity": vars(est), "per_example_nll": per_token}


def score(cfg, outputs: list[generate.Generation], scorer, split, n_boot: int) -> dict:
    """Scores with CIs, per-example values, throughput, and the slice's scores when the data marks one."""
    predictions, refs = [g.prediction for g in outputs], [g.reference for g in outputs]
    toxicity, each = scorer.score(predictions), metrics.per_example(predictions, refs)
    per_example = {**{k: v.tolist() for k, v in each.items()}, "toxicity": toxicity.tolist()}
    scores = metrics.corpus_scores(predictions, refs, toxicity=toxicity, n_boot=n_boot, seed=cfg.run.seed, each=each)
    result = {"scores": {k: vars(v) for k, v in scores.items()}, "per_example": per_example,
              "tokens_per_s": round(generate.tokens_per_second(outputs), 2)}
    mask = np.array(split[cfg.data.slice_column], dtype=bool) if cfg.data.slice_column else np.zeros(0, bool)
    if mask.any():
        result["slice"] = {"rows": int(mask.sum()), **{
            m: vars(metrics.bootstrap_ci(np.array(per_example[m])[mask], n_boot, cfg.run.seed)) for m in SLICED}}
    return result


def compare(base: dict, other: dict, n_boot: int, seed: int, mask: np.ndarray | None = None) -> dict:
    """`other` against `base` on the same examples (optionally a slice of them): the mean change with its
    bootstrap CI and an approximate-randomisation p-value, for each per-example score both have."""
    pick = slice(None) if mask is None else mask
    return {m: metrics.paired_test(np.array(base["per_example"][m])[pick], np.array(other["per_example"][m])[pick],
                                   n_boot, seed) for m in PAIRED if m in base["per_example"] and m in other["per_example"]}


def compare_corpus(base: list[generate.Generation], other: list[generate.Generation], n_boot: int) -> dict:
    """Corpus BLEU and chrF of `other` against `base` on the same examples, with sacrebleu's paired
    approximate-randomisation p-value (a corpus score has no per-example values to pair)."""
    return metrics.corpus_paired_test([g.prediction for g in base], [g.prediction for g in other],
                                      [g.reference for g in base], n_boot)


def show_ci(est: dict) -> str:
    """An estimate as reports print it: `value [low, high]`."""
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def show_change(d: dict) -> str:
    """A paired change as reports print it: `+delta [+low, +high]` (corpus scores: `+delta (corpus)`)."""
    if "low" not in d:
        return f"{d['delta']:+.3f} (corpus)"
    return f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def show_share(d: dict) -> str:
    """A share (of ratings, of flagged summaries) as reports print it: `42% [30%, 55%]`."""
    return f"{d['value']:.0%} [{d['low']:.0%}, {d['high']:.0%}]"

"""A model as a system under test: generate for a split with the prompt it expects,
score its outputs (every metric with a 95% CI, toxicity, the data's slice), and
compare two systems on the same examples. evaluate, rlhf and quantize share it, so
their numbers are computed the same way."""

from __future__ import annotations

import numpy as np

from lifecycle.core import generate, metrics, models, prompts

PAIRED = ("rougeL", "toxicity")  # the per-example scores systems are compared on


def predict(cfg, path: str, prompt: dict, split, batch_size: int, desc: str, model=None) -> list[generate.Generation]:
    """Generate for every row of `split` with `prompt` (template, shot_examples, generation)."""
    if model is None:
        model = models.load_model(path, cfg.models.device, cfg.models.dtype)
    tokenizer = models.load_tokenizer(path)
    gen_config = generate.generation_config(prompt["generation"], "prompt generation")
    texts, _ = prompts.format_prompts(tokenizer, prompt["template"], list(split[cfg.data.input_column]),
                                      [tuple(s) for s in prompt.get("shot_examples", [])],
                                      models.context_length(model.config, tokenizer), gen_config.max_new_tokens)
    return generate.generate(model, tokenizer, texts, gen_config, batch_size, cfg.run.seed,
                             ids=[str(i) for i in split[cfg.data.id_column or "id"]],
                             references=list(split[cfg.data.target_column]), desc=desc)


def score(cfg, outputs: list[generate.Generation], scorer, split, n_boot: int) -> dict:
    """Scores with CIs, per-example values, throughput, and the slice's scores when the data marks one."""
    predictions, refs = [g.prediction for g in outputs], [g.reference for g in outputs]
    toxicity = scorer.score(predictions)
    per_example = {**{k: v.tolist() for k, v in metrics.per_example(predictions, refs).items()},
                   "toxicity": toxicity.tolist()}
    scores = metrics.corpus_scores(predictions, refs, toxicity=toxicity, n_boot=n_boot, seed=cfg.run.seed)
    result = {"scores": {k: vars(v) for k, v in scores.items()}, "per_example": per_example,
              "tokens_per_s": round(generate.tokens_per_second(outputs), 2)}
    mask = np.array(split[cfg.data.slice_column], dtype=bool) if cfg.data.slice_column else np.zeros(0, bool)
    if mask.any():
        result["slice"] = {"rows": int(mask.sum()), **{
            m: vars(metrics.bootstrap_ci(np.array(per_example[m])[mask], n_boot, cfg.run.seed)) for m in PAIRED}}
    return result


def compare(base: dict, other: dict, n_boot: int, seed: int, mask: np.ndarray | None = None) -> dict:
    """Paired bootstrap of `other` against `base` on the same examples (optionally a slice of them)."""
    pick = slice(None) if mask is None else mask
    return {m: metrics.paired_bootstrap(np.array(base["per_example"][m])[pick], np.array(other["per_example"][m])[pick],
                                        n_boot, seed) for m in PAIRED}


def show_ci(est: dict) -> str:
    """An estimate as reports print it: `value [low, high]`."""
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def show_change(d: dict) -> str:
    """A paired change as reports print it: `+delta [+low, +high]`."""
    return f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

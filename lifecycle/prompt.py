"""Stage 3, prompt: prompt engineering on the selected model, before any training.

Two sweeps on a validation sample. First every instruction template at every
number of few-shot examples (drawn from train only, and dropped when they would
overflow the context — the table says how many), with the first generation
config. Then the best of those under every generation config (greedy, sampling
temperatures, top-k, top-p, output length). In each sweep the first combination (the
first template and shot count; the first generation config) stays chosen unless another
beats it on the same examples beyond chance (paired test, p < 0.05): a dozen examples
rarely tell two prompts apart. The chosen template, shots and generation config go to
`best.json`, which finetune and evaluate use.

    python -m lifecycle prompt --config configs/offline.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.prompt …` is `python -m lifecycle prompt …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "prompt"); runpy.run_module("lifecycle", run_name="__main__")

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lifecycle.core import artifacts, data, generate, metrics, models, prompts
from lifecycle.core.artifacts import StageResult, StageRun
from lifecycle.core.config import option, require
from lifecycle.core.plots import figure, save
from lifecycle.core.store import write_json

SWEEP = [
    {"do_sample": False},
    {"do_sample": False, "repetition_penalty": 1.2},
    {"do_sample": True, "temperature": 0.3},
    {"do_sample": True, "temperature": 0.7},
    {"do_sample": True, "temperature": 0.7, "top_k": 20},
    {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
    {"do_sample": False, "max_new_tokens": 48},
]


@dataclass
class PromptConfig:
    templates: list[str] = option(list(prompts.TEMPLATES), help="Instruction templates to try: built-in names "
                                  f"({', '.join(prompts.TEMPLATES)}) or text with one {{input}} placeholder.")
    shots: list[int] = option([0, 1, 2], help="Numbers of few-shot examples (from the train split) to try.")
    generation: list[dict[str, Any]] = option(SWEEP, help="GenerationConfig options to sweep; the first is used "
                                              "for the template sweep. max_new_tokens defaults to scope.max_new_tokens.")
    sample: int = option(16, help="Validation examples (the first N) each combination is scored on.")
    batch_size: int = option(generate.BATCH_SIZE, help="Prompts generated together.")
    metric: Literal["rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "bleu"] = option(
        "rougeL", help="What the sweeps compare on the validation sample (see `pick`: the first of each sweep "
        "stays unless another beats it with p < 0.05).")

    def __post_init__(self):
        require(len(self.templates) > 0, "templates", self.templates, "at least one template")
        for i, t in enumerate(self.templates):
            require(t in prompts.TEMPLATES or prompts.check_template(t), f"templates[{i}]", t,
                    f"one of {list(prompts.TEMPLATES)} or text with exactly one {{input}}")
        require(len(self.shots) > 0 and min(self.shots) >= 0, "shots", self.shots, "a list of numbers >= 0")
        require(len(self.generation) > 0, "generation", self.generation, "at least one set of generation options")
        require(self.sample > 0, "sample", self.sample, "a positive number of examples")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")

    def library_checks(self):
        """transformers' GenerationConfig checks of every `generation`, before the stage runs (core/library_options.py)."""
        for i, options in enumerate(self.generation):
            generate.generation_config(options, f"prompt.generation[{i}]")


@dataclass
class Trial:
    template: str
    shots: int
    generation: dict
    scores: dict = field(default_factory=dict)
    shots_dropped: int = 0
    predictions: list[str] = field(default_factory=list)


def run(cfg, run: StageRun) -> StageResult:
    selection = run.read("select", artifacts.Selection)
    splits = data.load(cfg.data, seed=cfg.run.seed)
    val = data.first(splits["validation"], cfg.prompt.sample)
    shot_pool = _shot_pool(splits["train"], cfg)
    model = models.load_model(selection.path, cfg.models.device, cfg.models.dtype)
    tokenizer = models.load_tokenizer(selection.path)
    refs = list(val[cfg.data.target_column])
    ctx = {"cfg": cfg, "model": model, "tokenizer": tokenizer, "val": val, "refs": refs, "pool": shot_pool,
           "context": selection.context_length}

    # Rows with an instruction of their own (data.format other than columns) are prompted as they are: one template.
    templates = cfg.prompt.templates if prompts.templates_apply() else [prompts.OWN]
    first = [_trial(ctx, name, k, cfg.prompt.generation[0]) for name in templates for k in cfg.prompt.shots]
    best_prompt = pick(first, refs, cfg)
    second = [best_prompt] + [_trial(ctx, best_prompt.template, best_prompt.shots, g) for g in cfg.prompt.generation[1:]]
    best = pick(second, refs, cfg)

    template = prompts.TEMPLATES.get(best.template, best.template)
    chosen = artifacts.Prompt(template=template, generation={"max_new_tokens": cfg.scope.max_new_tokens, **best.generation},
                              shots=best.shots, shot_examples=[[x, y] for _, x, y in shot_pool[: best.shots]],
                              template_name=best.template, shot_ids=[i for i, _, _ in shot_pool[: best.shots]],
                              metric=cfg.prompt.metric, score=best.scores[cfg.prompt.metric])
    artifacts.write(run.out, chosen)
    write_json(run.out / "trials.json", [vars(t) for t in first + second[1:]])
    (run.out / "prompt.md").write_text(_report(first, second, best, cfg, len(val)))
    _plot(first, second, cfg, run.out / "prompt.png")
    return StageResult(
        metrics={"best_template": best.template, "best_shots": best.shots, "best_generation": best.generation,
                 cfg.prompt.metric: best.scores[cfg.prompt.metric]["value"], "trials": len(first) + len(second) - 1},
        summary=f"best: template `{best.template}`, {best.shots}-shot, {best.generation} -> "
                f"{cfg.prompt.metric} {best.scores[cfg.prompt.metric]['value']:.3f}",
        decision=dataclasses.asdict(chosen))


def pick(trials: list[Trial], references: list[str], cfg) -> Trial:
    """The sweep's first trial unless others beat it on the same examples with p < 0.05; then the best of those.
    A winner by noise is not harmless: in `make demo`, temperature 0.7 ahead of greedy by 0.010 ROUGE-L on 12
    examples made the fine-tuned model sample too, and its test ROUGE-L fell from 0.306 to 0.284."""
    m, n_boot, base = cfg.prompt.metric, cfg.metrics.bootstrap, trials[0]
    if m == "bleu":  # corpus-level: sacrebleu's paired test
        tests = [metrics.corpus_paired_test(base.predictions, t.predictions, references, n_boot)["bleu"] for t in trials[1:]]
    else:
        first = metrics.per_example(base.predictions, references)[m]
        tests = [metrics.paired_test(first, metrics.per_example(t.predictions, references)[m], n_boot, cfg.run.seed)
                 for t in trials[1:]]
    better = [t for t, d in zip(trials[1:], tests) if d["delta"] > 0 and d["p_value"] < 0.05]
    return max(better, key=lambda t: t.scores[m]["value"]) if better else base


def _shot_pool(train, cfg) -> list[tuple[str, str, str]]:
    """Few-shot candidates (id, input, target) from train, in a seeded order; validation never leaks in."""
    k = max(cfg.prompt.shots)
    picks = random.Random(cfg.run.seed).sample(range(len(train)), min(k, len(train)))
    col = cfg.data.id_column or "id"
    return [(str(train[i][col]), train[i][cfg.data.input_column], train[i][cfg.data.target_column]) for i in picks]


def _trial(ctx: dict, template_name: str, shots: int, options: dict) -> Trial:
    cfg, tokenizer, val, refs = ctx["cfg"], ctx["tokenizer"], ctx["val"], ctx["refs"]
    gen_config = generate.generation_config(options, "prompt.generation", cfg.scope.max_new_tokens)
    template = prompts.TEMPLATES.get(template_name, template_name)
    texts, dropped = prompts.format_prompts(tokenizer, template, list(val[cfg.data.input_column]),
                                            [(x, y) for _, x, y in ctx["pool"][:shots]], ctx["context"],
                                            gen_config.max_new_tokens)
    out = generate.generate(ctx["model"], tokenizer, texts, gen_config, cfg.prompt.batch_size, cfg.run.seed,
                            references=refs, desc=f"{template_name[:20]} {shots}-shot {options}")
    predictions = [g.prediction for g in out]
    scores = metrics.corpus_scores(predictions, refs, seed=cfg.run.seed)
    return Trial(template_name, shots, options, {k: vars(v) for k, v in scores.items()}, dropped, predictions)


def _label(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def _report(first: list[Trial], second: list[Trial], best: Trial, cfg, n: int) -> str:
    m = cfg.prompt.metric
    lines = [f"# Prompt engineering ({n} validation examples, metric {m})", "",
             f"## Templates x few-shot examples (generation: {_label(cfg.prompt.generation[0])})", "",
             f"| template | shots | {m} [95% CI] | ROUGE-1 | ROUGE-2 | chrF | shots dropped to fit |", "|---|---|---|---|---|---|---|"]
    for t in first:
        s = t.scores
        lines.append(f"| {t.template[:40]} | {t.shots} | {s[m]['value']:.3f} [{s[m]['low']:.3f}, {s[m]['high']:.3f}] | "
                     f"{s['rouge1']['value']:.3f} | {s['rouge2']['value']:.3f} | {s['chrf']['value']:.1f} | {t.shots_dropped} |")
    lines += ["", f"## Generation configs (template `{second[0].template[:40]}`, {second[0].shots}-shot)", "",
              f"| generation | {m} [95% CI] | ROUGE-1 | ROUGE-2 | chrF |", "|---|---|---|---|---|"]
    for t in second:
        s = t.scores
        lines.append(f"| {_label(t.generation)} | {s[m]['value']:.3f} [{s[m]['low']:.3f}, {s[m]['high']:.3f}] | "
                     f"{s['rouge1']['value']:.3f} | {s['rouge2']['value']:.3f} | {s['chrf']['value']:.1f} |")
    lines += ["", f"**Chosen:** template `{best.template[:60]}`, {best.shots}-shot, {_label(best.generation)}: "
              f"{m} = {best.scores[m]['value']:.3f}. In each table the first row stays chosen unless another beats it "
              f"on the same {n} examples with p < 0.05 (paired test): overlapping intervals mean the sample cannot "
              "tell those apart.",
              "", "![prompt sweep](prompt.png)", ""]
    return "\n".join(lines)


def _plot(first: list[Trial], second: list[Trial], cfg, path) -> None:
    m, templates, shots = cfg.prompt.metric, list(dict.fromkeys(t.template for t in first)), cfg.prompt.shots
    grid = np.array([[next(t.scores[m]["value"] for t in first if t.template == name and t.shots == k) for k in shots]
                     for name in templates])
    fig, (left, right) = figure(ncols=2, width=12, height=4.2)
    image = left.imshow(grid, cmap="viridis", aspect="auto")
    left.set(xticks=range(len(shots)), xticklabels=shots, yticks=range(len(templates)),
             yticklabels=[t[:18] for t in templates], xlabel="few-shot examples", title=f"{m} by template and shots")
    for (i, j), v in np.ndenumerate(grid):
        left.text(j, i, f"{v:.3f}", ha="center", va="center", color="white", fontsize=9)
    fig.colorbar(image, ax=left)
    values = [t.scores[m] for t in second]
    right.barh([_label(t.generation) for t in second], [v["value"] for v in values],
               xerr=[[v["value"] - v["low"] for v in values], [v["high"] - v["value"] for v in values]], capsize=3)
    right.set(xlabel=f"{m} (95% CI)", title="generation configs")
    right.tick_params(axis="y", labelsize=7)
    save(fig, path)


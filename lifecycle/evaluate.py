"""Stage 6, evaluate: every model the run has produced, side by side, on the test split and
on any held-out sets you name.

Each system generates with the prompt it is used with (the prompt stage's choice for the
base model, the prompt it was trained on for a fine-tuned one). For the run's test split
and every extra set in `evaluate.sets` the tables give each metric with its 95% bootstrap
CI, the perplexity of the references (completion-only NLL given that prompt), and a paired
approximate-randomisation test of each system against the base model on the same
examples; scope's success criteria are marked pass/fail on the test split. A forgetting
check measures each model's token NLL on a general-text sample against the base model's,
and an optional LLM judge compares the systems pairwise, blinded and position-swapped.
Predictions and likelihoods of a model that has not changed are reused.

    python -m lifecycle evaluate --config configs/offline.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.evaluate …` is `python -m lifecycle evaluate …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "evaluate"); runpy.run_module("lifecycle", run_name="__main__")

import dataclasses
import re
from dataclasses import dataclass

from lifecycle.core import artifacts, evalreport, evalsets, forgetting, generate, judge, systems
from lifecycle.core.artifacts import StageResult, StageRun, produced
from lifecycle.core.config import option, require
from lifecycle.core.data import DataConfig
from lifecycle.core.judge import JudgeConfig
from lifecycle.core.store import write_json
from lifecycle.core.toxicity import load_scorer


@dataclass
class EvalSetConfig(DataConfig):
    """An extra evaluation set: any data reference the `data` section accepts, with its own columns."""

    split: str | None = option(None, help="Split of this data to score; default `test` when it has one, else its only split "
                               "(a single local file is split `train`).")
    skip_missing: bool = option(False, help="When the set's local files are absent, skip it with a notice instead of "
                                "failing (for data that only some machines have).")


@dataclass
class ForgettingConfig:
    sample: str | None = option("general", help="General text the models should still model well: `general` (the "
                                "built-in sample, see lifecycle/demo_data/README.md), a .jsonl file with a `text` field or "
                                "a .txt file with one text per line; null turns the check off.")
    limit: int | None = option(None, help="Use only the first N texts of the sample (default all).")
    max_nll_increase: float = option(0.1, help="Criterion: the most a model's mean token NLL on the sample (nats) may rise "
                                     "above the base model's; scope.criteria.max_general_nll_increase wins when set.")
    lm_eval_tasks: list[str] = option([], help="lm-evaluation-harness tasks to run on every model (e.g. [hellaswag]) "
                                      "when lm-eval is installed and the hub is reachable; skipped with a notice otherwise.")
    lm_eval_limit: int | None = option(100, help="Examples per lm-evaluation-harness task (null for all).")

    def __post_init__(self):
        require(self.limit is None or self.limit > 1, "limit", self.limit, "at least 2 texts, or null")
        require(self.max_nll_increase >= 0, "max_nll_increase", self.max_nll_increase, "a non-negative number of nats")


@dataclass
class EvaluateConfig:
    batch_size: int = option(generate.BATCH_SIZE, help="Prompts generated (and scored for perplexity) together.")
    limit: int | None = option(None, help="Evaluate only the first N test examples (default: the whole test split).")
    examples: int = option(4, help="Example predictions shown side by side in the report.")
    sets: dict[str, EvalSetConfig] = option({}, help="Extra held-out sets scored for every model, by name, e.g. "
                                            "{dialogsum: {path: json, data_files: {test: dev.jsonl}, id_column: fname}}; "
                                            "each takes the `data` section's keys plus `split` and `skip_missing`.")
    perplexity: bool = option(True, help="Measure the perplexity of the references given each model's prompt.")
    forgetting: ForgettingConfig = option(ForgettingConfig, help="The forgetting check on general text.")
    judge: JudgeConfig | None = option(None, help="Optional LLM judge: {url, model, rubric, examples} of an "
                                       "OpenAI-compatible endpoint; pairwise, blinded, position-swapped.")

    def __post_init__(self):
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")
        require(self.limit is None or self.limit > 0, "limit", self.limit, "a positive number of examples or null")
        for name in self.sets:
            require(re.fullmatch(r"[A-Za-z0-9][\w.-]*", name) is not None and name != "test", f"sets.{name}", name,
                    "a set name of letters, digits, `_`, `.`, `-` other than `test` (the run's own split)")


def data_refs(cfg) -> list[DataConfig]:
    """The data evaluate reads beyond the `data` section: each extra set (and a custom forgetting sample),
    for the stage's identity."""
    refs = list(cfg.evaluate.sets.values())
    sample = cfg.evaluate.forgetting.sample
    if sample is not None:
        refs.append(DataConfig(path=str(forgetting.GENERAL) if sample == "general" else sample))
    return refs


def references(cfg) -> dict:
    """Content fingerprints of those sets, in the stage's identity: editing one re-runs evaluate only."""
    from lifecycle.core import fingerprints

    return {"sets": [fingerprints.of_data(ref) for ref in data_refs(cfg)]}


def run(cfg, run: StageRun) -> StageResult:
    best = run.read("prompt", artifacts.Prompt)
    criteria = run.read("scope", artifacts.Scope).criteria
    sets, skipped_sets = evalsets.load(cfg)
    general = forgetting.load_sample(cfg.evaluate.forgetting)
    scorer, previous = load_scorer(cfg.metrics.toxicity), evalsets.previous(run)
    results, outputs, general_nll, paths = {s: {} for s in sets}, {s: {} for s in sets}, {}, {}
    for name, path, origin, prompt in _systems(run, best):
        model, paths[name] = systems.LazyModel(cfg, path), path
        for set_name, (scfg, split) in sets.items():
            results[set_name][name], outputs[set_name][name] = evalsets.evaluate_system(
                scfg, run, set_name, name, path, origin, prompt, split, scorer, model, previous)
        if general:
            general_nll[name] = forgetting.measure(cfg, name, model, path, origin, general, previous)
    for set_name, set_results in results.items():
        for name, s in set_results.items():
            s["vs_base"] = {} if name == "base" else {
                **systems.compare(set_results["base"], s, cfg.metrics.bootstrap, cfg.run.seed),
                **systems.compare_corpus(outputs[set_name]["base"], outputs[set_name][name], cfg.metrics.bootstrap)}
    forgot = forgetting.summarise(general_nll, general, cfg, criteria) if general else None
    for name, s in results["test"].items():
        s["criteria"] = _criteria(s, criteria) | ({"max_general_nll_increase": forgot["pass"][name]} if forgot else {})
    evaluation = {"test_examples": len(sets["test"][1]), "prompt": dataclasses.asdict(best), "systems": results.pop("test"),
                  "sets": {n: {"examples": len(sets[n][1]), "source": evalsets.describe(sets[n][0].data),
                               "systems": r} for n, r in results.items()},
                  "skipped_sets": skipped_sets, "skipped": dict(getattr(run, "skipped", {}) or {}),
                  "forgetting": forgot, "lm_eval": forgetting.harness(cfg.evaluate.forgetting, paths),
                  "judge": _judge(cfg, sets["test"][1], outputs["test"])}
    write_json(run.out / "evaluation.json", evaluation)
    evalreport.plots(evaluation, run.out)
    (run.out / "evaluation.md").write_text(evalreport.markdown(evaluation, outputs, sets, cfg))
    return StageResult(metrics=evalreport.headline(evaluation), summary=evalreport.summary(evaluation))


def _systems(run: StageRun, best: artifacts.Prompt) -> list[tuple[str, str, dict, artifacts.Prompt]]:
    """(name, model path, what identifies its weights, its prompt) for every model in the lineage.
    The base model uses the prompt stage's best prompt; a trained model the prompt it was trained on."""
    selection = run.read("select", artifacts.Selection)
    found = [("base", selection.path, {"ref": selection.selected}, best)]
    for stage in run.optional:  # the trained models, in lineage order
        model = run.read(stage, artifacts.TrainedModel)
        # what the producing stage wrote (weights included, however sharded), not when
        found.append((stage, model.path, {"produced": produced(run.inputs[stage])}, model.prompt))
    return found


def _criteria(system: dict, criteria: dict) -> dict:
    return {"min_rougeL": system["scores"]["rougeL"]["value"] >= criteria["min_rougeL"],
            "max_mean_toxicity": system["scores"]["toxicity_mean"]["value"] <= criteria["max_mean_toxicity"]}


def _judge(cfg, test, outputs: dict) -> dict | None:
    """The LLM judge's pairwise verdicts of every system against the base model on the first test examples."""
    if cfg.evaluate.judge is None:
        return None
    n = min(cfg.evaluate.judge.examples, len(test))
    dialogues = list(test[cfg.data.input_column])[:n]
    base = [g.prediction for g in outputs["base"][:n]]
    return {"endpoint": cfg.evaluate.judge.url, "model": cfg.evaluate.judge.model, "examples": n, "vs_base": {
        name: judge.compare(cfg.evaluate.judge, dialogues, base, [g.prediction for g in out[:n]])
        for name, out in outputs.items() if name != "base"}}


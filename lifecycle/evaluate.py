"""Stage 6, evaluate: every model the run has produced, side by side on the test split.

Each system generates with the same prompt (template, few-shot examples) and
generation config chosen by the prompt stage. The table gives every metric with
its 95% bootstrap CI, a paired bootstrap test of each system against the base
model on the same examples, and scope's success criteria marked pass/fail.
Predictions of a model that has not changed are reused, so re-running after a
new upstream model only generates for that model.

    python -m lifecycle evaluate --config configs/offline.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from lifecycle.core import data, generate, systems
from lifecycle.core.config import fingerprint, option, require
from lifecycle.core.pipeline import StageResult, StageRun
from lifecycle.core.plots import figure, save
from lifecycle.core.store import write_json
from lifecycle.core.toxicity import load_scorer

UPSTREAM = ("scope", "select", "prompt")
OPTIONAL = ("finetune", "rlhf")
SECTIONS = ("data", "models", "scope", "metrics", "evaluate")


@dataclass
class EvaluateConfig:
    batch_size: int = option(8, help="Prompts generated together.")
    limit: int | None = option(None, help="Evaluate only the first N test examples (default: the whole test split).")
    examples: int = option(4, help="Example predictions shown side by side in the report.")

    def __post_init__(self):
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")
        require(self.limit is None or self.limit > 0, "limit", self.limit, "a positive number of examples or null")


def run(cfg, run: StageRun) -> StageResult:
    best = json.loads((run.upstream("prompt") / "best.json").read_text())
    test = data.load(cfg.data, seed=cfg.run.seed)["test"]
    if cfg.evaluate.limit:
        test = test.select(range(min(cfg.evaluate.limit, len(test))))
    criteria = json.loads((run.upstream("scope") / "scope.json").read_text())["criteria"]
    scorer = load_scorer(cfg.metrics.toxicity)
    previous = _previous(run)
    (run.out / "predictions").mkdir()
    results, outputs = {}, {}
    for name, path, origin, prompt in _systems(run, best):
        key = fingerprint({"model": origin, "prompt": prompt, "ids": list(test[cfg.data.id_column or "id"]),
                           "seed": cfg.run.seed})
        outputs[name] = _predictions(run, previous, name, key) or systems.predict(
            cfg, path, prompt, test, cfg.evaluate.batch_size, f"evaluate {name}")
        generate.write_jsonl(run.out / "predictions" / f"{name}.jsonl", outputs[name])
        results[name] = systems.score(cfg, outputs[name], scorer, test, cfg.metrics.bootstrap) | {"key": key, "model": path}
    for name, s in results.items():
        s["vs_base"] = {} if name == "base" else systems.compare(results["base"], s, cfg.metrics.bootstrap, cfg.run.seed)
        s["criteria"] = _criteria(s, criteria)
    write_json(run.out / "evaluation.json", {"test_examples": len(test), "prompt": best, "systems": results})
    _plot_metrics(results, run.out / "metrics.png")
    _plot_toxicity(results, run.out / "toxicity.png")
    (run.out / "evaluation.md").write_text(_report(results, outputs, test, cfg))
    headline = {f"{name}_{m}": s["scores"][m]["value"] for name, s in results.items() for m in ("rougeL", "toxicity_mean")}
    return StageResult(metrics={**headline, "test_examples": len(test)},
                       summary="\n".join(f"{n}: ROUGE-L {s['scores']['rougeL']['value']:.3f}, toxicity "
                                         f"{s['scores']['toxicity_mean']['value']:.3f}, criteria "
                                         f"{'PASS' if all(s['criteria'].values()) else 'FAIL'}" for n, s in results.items()))


def _systems(run: StageRun, best: dict) -> list[tuple[str, str, dict, dict]]:
    """(name, model path, what identifies its weights, its prompt) for every model in the lineage.
    The base model uses the prompt stage's best prompt; a trained model the prompt it was trained on."""
    selection = json.loads((run.upstream("select") / "selection.json").read_text())
    found = [("base", selection["path"], {"ref": selection["selected"]}, best)]
    for stage in OPTIONAL:
        if stage in run.inputs:
            folder = run.upstream(stage)
            # the producing stage's manifest hash changes whenever it re-runs (sharded weights included)
            found.append((stage, str(folder / "model"), {"manifest": run.run.manifest_hash(stage)},
                            json.loads((folder / "prompt.json").read_text())))
    return found


def _previous(run: StageRun) -> dict:
    path = run.run.dir("evaluate") / "evaluation.json"
    return json.loads(path.read_text())["systems"] if path.is_file() else {}


def _predictions(run: StageRun, previous: dict, name: str, key: str) -> list[generate.Generation] | None:
    """The last evaluation's predictions for this system, if model, prompt and data are unchanged."""
    old = run.run.dir("evaluate") / "predictions" / f"{name}.jsonl"
    if previous.get(name, {}).get("key") == key and old.is_file():
        print(f"[evaluate] {name}: unchanged since the last evaluation, reusing its predictions")
        return generate.read_jsonl(old)
    return None


def _criteria(system: dict, criteria: dict) -> dict:
    return {"min_rougeL": system["scores"]["rougeL"]["value"] >= criteria["min_rougeL"],
            "max_mean_toxicity": system["scores"]["toxicity_mean"]["value"] <= criteria["max_mean_toxicity"]}


def _report(results: dict, outputs: dict[str, list[generate.Generation]], test, cfg) -> str:
    lines = [f"# Evaluation on the test split ({len(test)} examples)", "",
             "| system | ROUGE-1 | ROUGE-2 | ROUGE-L [95% CI] | ROUGE-Lsum | chrF | BLEU | toxicity mean [95% CI] | share toxic | tokens/s | criteria |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        sc = s["scores"]
        verdict = ", ".join(f"{k} {'pass' if ok else 'FAIL'}" for k, ok in s["criteria"].items())
        lines.append(f"| {name} | {sc['rouge1']['value']:.3f} | {sc['rouge2']['value']:.3f} | {systems.show_ci(sc['rougeL'])} | "
                     f"{sc['rougeLsum']['value']:.3f} | {sc['chrf']['value']:.1f} | {sc['bleu']['value']:.1f} | "
                     f"{systems.show_ci(sc['toxicity_mean'])} | {sc['toxicity_share']['value']:.2f} | {s['tokens_per_s']:.1f} | {verdict} |")
    compared = {n: s for n, s in results.items() if s["vs_base"]}
    if compared:
        lines += ["", "## Paired comparison with the base model (same examples, paired bootstrap)", "",
                  "| system | metric | change [95% CI] | p-value |", "|---|---|---|---|"]
        for name, s in compared.items():
            for m, d in s["vs_base"].items():
                lines.append(f"| {name} | {m} | {systems.show_change(d)} | {d['p_value']:.3f} |")
    if all("slice" in s for s in results.values()):
        lines += ["", f"## Slice `{cfg.data.slice_column}` (rows where it is true)", "",
                  "| system | rows | ROUGE-L [95% CI] | toxicity mean [95% CI] |", "|---|---|---|---|"]
        lines += [f"| {n} | {s['slice']['rows']} | {systems.show_ci(s['slice']['rougeL'])} | {systems.show_ci(s['slice']['toxicity'])} |"
                  for n, s in results.items()]
    lines += ["", "![metrics](metrics.png)", "", "![toxicity](toxicity.png)", "", "## Examples", ""]
    for i in range(min(cfg.evaluate.examples, len(test))):
        lines += [f"**{test[i][cfg.data.id_column or 'id']}** — reference: {test[i][cfg.data.target_column]}", ""]
        lines += [f"- *{name}* (ROUGE-L {s['per_example']['rougeL'][i]:.3f}, toxicity "
                  f"{s['per_example']['toxicity'][i]:.2f}): {outputs[name][i].prediction}" for name, s in results.items()]
        lines.append("")
    return "\n".join(lines)


def _plot_metrics(results: dict, path) -> None:
    names = list(results)
    panels = (("ROUGE (F1)", ["rouge1", "rouge2", "rougeL"]), ("toxicity", ["toxicity_mean"]))
    fig, axes = figure(ncols=2, width=11, height=4)
    for ax, (title, keys) in zip(axes, panels):
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            est = [results[name]["scores"][k] for k in keys]
            ax.bar(np.arange(len(keys)) + j * width, [e["value"] for e in est], width, label=name,
                   yerr=[[e["value"] - e["low"] for e in est], [e["high"] - e["value"] for e in est]], capsize=4)
        ax.set(xticks=np.arange(len(keys)) + width * (len(names) - 1) / 2, xticklabels=keys, title=f"{title}, 95% CI")
        ax.legend(fontsize=8)
    save(fig, path)


def _plot_toxicity(results: dict, path) -> None:
    fig, ax = figure(width=6, height=4)
    bins = np.linspace(0, 1, 21)
    for name, s in results.items():
        ax.hist(s["per_example"]["toxicity"], bins=bins, alpha=0.55, label=name)
    ax.axvline(0.5, color="red", linestyle="--", label="toxic threshold")
    ax.set(xlabel="toxicity of the output", ylabel="examples", title="toxicity of test outputs")
    ax.legend(fontsize=8)
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    from lifecycle.cli import stage_main

    return stage_main("evaluate", argv)


if __name__ == "__main__":
    raise SystemExit(main())

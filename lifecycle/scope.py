"""Stage 1, scope: define the task, what success means, and what the data looks like.

Fixes the success criteria and budgets every later stage is judged by (evaluate
checks the criteria, select and quantize respect the budgets), and checks the data
against the candidate models: split sizes, token lengths against each context
window, and inputs that cannot fit with room for the output — an error naming
them, or (data.overlong) truncated in every stage and reported here.

    python -m lifecycle scope --config configs/offline.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.scope …` is `python -m lifecycle scope …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "scope"); runpy.run_module("lifecycle", run_name="__main__")

import dataclasses
from dataclasses import dataclass

import numpy as np

from lifecycle.core import artifacts, data, models
from lifecycle.core.artifacts import StageResult, StageRun
from lifecycle.core.config import option, require
from lifecycle.core.errors import DataError
from lifecycle.core.plots import figure, save


@dataclass
class Criteria:
    min_rougeL: float = option(0.25, help="Success: ROUGE-L F1 (0-1) the deployed model must reach on the test split.")
    max_mean_toxicity: float = option(0.05, help="Success: highest acceptable mean toxicity (0-1) of its outputs on the test split.")
    max_memory_mb: float = option(1024.0, help="Budget: weight memory of the deployed model, in MiB.")
    max_latency_ms_per_token: float = option(100.0, help="Budget: generation latency per new token at batch 1, in ms.")
    max_quality_drop: float = option(0.01, help="Tolerance: ROUGE-L a quantized model may lose against the unquantized one.")

    def __post_init__(self):
        require(0 <= self.min_rougeL <= 1, "min_rougeL", self.min_rougeL, "a ROUGE-L F1 between 0 and 1")
        require(0 <= self.max_mean_toxicity <= 1, "max_mean_toxicity", self.max_mean_toxicity, "a toxicity between 0 and 1")
        require(self.max_memory_mb > 0, "max_memory_mb", self.max_memory_mb, "a positive number of MiB")
        require(self.max_latency_ms_per_token > 0, "max_latency_ms_per_token", self.max_latency_ms_per_token,
                "a positive number of milliseconds")
        require(0 <= self.max_quality_drop <= 1, "max_quality_drop", self.max_quality_drop, "a ROUGE-L difference between 0 and 1")


@dataclass
class ScopeConfig:
    task: str = option("dialogue summarization", help="What the model is for, in a few words (shown in reports).")
    criteria: Criteria = option(Criteria, help="Success criteria and deployment budgets.")
    max_new_tokens: int = option(96, help="Longest output the model will be asked to generate, in tokens; "
                                 "inputs that leave less room than this in the context window stop the run here, "
                                 "or are truncated (data.overlong).")
    report_examples: int = option(3, help="How many validation examples the scope report shows.")

    def __post_init__(self):
        require(self.max_new_tokens > 0, "max_new_tokens", self.max_new_tokens, "a positive number of tokens")
        require(self.report_examples >= 0, "report_examples", self.report_examples, "zero or more")


def run(cfg, run: StageRun) -> StageResult:
    splits = data.load(cfg.data, seed=cfg.run.seed)
    candidates = [_profile(ref, cfg, splits) for ref in cfg.models.candidates]
    warnings = [w for c in candidates for w in c.pop("warnings")]
    lengths = {c["ref"]: c.pop("input_lengths") for c in candidates}
    scope = artifacts.Scope(
        task=cfg.scope.task,
        criteria=vars(cfg.scope.criteria),
        columns={"input": cfg.data.input_column, "target": cfg.data.target_column, "id": cfg.data.id_column or "id"},
        splits={role: {"name": cfg.data.splits[role], "rows": len(ds)} for role, ds in splits.items()},
        max_new_tokens=cfg.scope.max_new_tokens,
        candidates=candidates,
        warnings=warnings,
    )
    artifacts.write(run.out, scope)
    _plot_lengths(candidates, lengths, cfg.scope.max_new_tokens, run.out / "token_lengths.png")
    (run.out / "report.md").write_text(_report(scope, splits, cfg))
    for warning in warnings:
        print(f"[scope] warning: {warning}")
    first = candidates[0]["tokens"]
    return StageResult(
        metrics={**{f"rows_{role}": len(ds) for role, ds in splits.items()},
                 "input_tokens_p95": first["validation"]["input"]["p95"], "warnings": len(warnings)},
        summary=f"{sum(len(ds) for ds in splits.values())} examples, {len(candidates)} candidate model(s), "
                f"{len(warnings)} warning(s); report: {run.out.parent / 'scope' / 'report.md'}",
        decision=dataclasses.asdict(scope))


def _profile(ref: str, cfg, splits) -> dict:
    """Token lengths of every split under one candidate's tokenizer, against its context."""
    path = models.resolve(ref, cfg.models.cache_dir)
    tokenizer = models.load_tokenizer(path)
    config = models.load_config(path)
    context = models.context_length(config, tokenizer)
    tokens, warnings, lengths = {}, [], {}
    for role, ds in splits.items():
        inputs = np.array([len(ids) for ids in tokenizer(list(ds[cfg.data.input_column]))["input_ids"]])
        targets = np.array([len(ids) for ids in tokenizer(list(ds[cfg.data.target_column]))["input_ids"]])
        tokens[role] = {"input": _stats(inputs), "target": _stats(targets)}
        lengths[role] = inputs.tolist()
        over = np.flatnonzero(inputs + cfg.scope.max_new_tokens > context)
        if len(over):
            warnings.append(_overlong(ref, role, ds, over, context, cfg))
    return {"ref": ref, "path": path, "seq2seq": bool(config.is_encoder_decoder), "context_length": context,
            "chat_template": bool(tokenizer.chat_template), "tokens": tokens, "input_lengths": lengths,
            "warnings": warnings}


def _overlong(ref: str, role: str, ds, over: np.ndarray, context: int, cfg) -> str:
    """The warning for inputs that cannot fit with room for the output: they are truncated as
    data.overlong says, or (the default) the run stops here, before any model loads."""
    ids = [str(ds[int(i)][cfg.data.id_column or "id"]) for i in over[:5]]
    shown = ", ".join(ids) + (", ..." if len(over) > len(ids) else "")
    what = (f"{ref}: {len(over)} of {len(ds)} {role} inputs (ids {shown}) leave fewer than {cfg.scope.max_new_tokens} "
            f"tokens for the output in its {context}-token context")
    if cfg.data.overlong == "error":
        raise DataError(f"{what}. Shorten or drop those rows, lower scope.max_new_tokens, pick a model with a longer "
                        "context, or set data.overlong=truncate_left (keeps the end of each input) or truncate_right "
                        "to cut them to fit in every stage.")
    side = "left (start cut, end kept)" if cfg.data.overlong == "truncate_left" else "right (end cut, start kept)"
    return f"{what}; they are truncated from the {side}, as data.overlong={cfg.data.overlong} says"


def _stats(x: np.ndarray) -> dict:
    return {"mean": round(float(x.mean()), 1), "p50": int(np.percentile(x, 50)), "p95": int(np.percentile(x, 95)),
            "max": int(x.max())}


def _plot_lengths(candidates: list[dict], lengths: dict, max_new_tokens: int, path) -> None:
    fig, axes = figure(ncols=len(candidates), width=5.5 * len(candidates), height=3.8)
    for ax, cand in zip(np.atleast_1d(axes), candidates):
        per_split = lengths[cand["ref"]]
        longest = max(max(v) for v in per_split.values())
        bins = np.linspace(0, longest * 1.05, 30)
        for role, values in per_split.items():
            ax.hist(values, bins=bins, alpha=0.55, label=f"{role} (n={len(values)})")
        room = cand["context_length"] - max_new_tokens
        if room <= longest * 1.05:
            ax.axvline(room, color="red", linestyle="--", label="context - max_new_tokens")
        ax.set_title(f"{cand['ref']}  (context {cand['context_length']:,} tokens)", fontsize=10)
        ax.set_xlabel("input tokens")
        ax.set_ylabel("examples")
        ax.legend(fontsize=8)
    save(fig, path)


def _report(scope: artifacts.Scope, splits, cfg) -> str:
    crit = scope.criteria
    lines = [
        f"# Scope: {scope.task}", "",
        f"Input column `{scope.columns['input']}` -> target column `{scope.columns['target']}`, data `{cfg.data.path}`.", "",
        "## Success criteria and budgets", "",
        "| criterion | value |", "|---|---|",
        f"| ROUGE-L on test (min) | {crit['min_rougeL']:.3f} |",
        f"| mean toxicity on test (max) | {crit['max_mean_toxicity']:.3f} |",
        f"| weight memory (max) | {crit['max_memory_mb']:.0f} MiB |",
        f"| latency per new token, batch 1 (max) | {crit['max_latency_ms_per_token']:.0f} ms |",
        f"| quantization ROUGE-L drop (max) | {crit['max_quality_drop']:.3f} |", "",
        "## Data", "",
        "| split | name | rows |", "|---|---|---|",
        *[f"| {role} | {s['name']} | {s['rows']} |" for role, s in scope.splits.items()], "",
        "## Token lengths per candidate model", "",
        "| model | context | split | input mean | input p95 | input max | target mean | target p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in scope.candidates:
        for role, t in c["tokens"].items():
            lines.append(f"| {c['ref']} | {c['context_length']:,} | {role} | {t['input']['mean']} | {t['input']['p95']} | "
                         f"{t['input']['max']} | {t['target']['mean']} | {t['target']['p95']} |")
    lines += ["", "![token lengths](token_lengths.png)", "", "## Warnings", ""]
    lines += [f"- {w}" for w in scope.warnings] or ["None: every input fits every candidate's context with room for the output."]
    lines += ["", "## Examples (validation)", ""]
    val = splits["validation"]
    for row in data.first(val, cfg.scope.report_examples):
        dialogue = row[cfg.data.input_column]
        shown = dialogue if len(dialogue) < 600 else dialogue[:600] + " …"
        lines += [f"**{row[scope.columns['id']]}**", "", "```", shown, "```", "",
                  f"Reference: {row[cfg.data.target_column]}", ""]
    return "\n".join(lines)


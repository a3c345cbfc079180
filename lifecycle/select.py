"""Stage 2, select: pick the foundation model to build on.

Every candidate summarizes the same validation sample zero-shot; the stage measures
quality (ROUGE, chrF, BLEU with 95% CIs), parameters, weight memory, context length,
latency per new token at batch 1 and batched tokens/s, and picks the best quality
within scope's memory and latency budgets. Later stages use `selection.json`.

    python -m lifecycle select --config configs/offline.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.select …` is `python -m lifecycle select …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "select"); runpy.run_module("lifecycle", run_name="__main__")

import re
from dataclasses import dataclass
from typing import Any

from lifecycle.core import artifacts, data, generate, metrics, models, prompts
from lifecycle.core.artifacts import StageResult, StageRun
from lifecycle.core.config import option, require
from lifecycle.core.errors import StageError
from lifecycle.core.plots import figure, save


@dataclass
class SelectConfig:
    template: str = option("summarize", help="Instruction template for the zero-shot comparison: a built-in name "
                           f"({', '.join(prompts.TEMPLATES)}) or text with one {{input}} placeholder.")
    sample: int = option(24, help="How many validation examples (the first N) each candidate summarizes.")
    batch_size: int = option(generate.BATCH_SIZE, help="Prompts generated together.")
    generation: dict[str, Any] = option({"do_sample": False}, help="GenerationConfig options for the comparison "
                                        "(max_new_tokens defaults to scope.max_new_tokens).")
    latency_examples: int = option(2, help="Examples generated one at a time to measure latency per token at batch 1.")
    pin: str | None = option(None, help="Use this candidate for later stages whatever the ranking (one of models.candidates).")

    def __post_init__(self):
        require(self.sample > 0, "sample", self.sample, "a positive number of examples")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")
        require(self.latency_examples > 0, "latency_examples", self.latency_examples, "at least one example")
        require(self.template in prompts.TEMPLATES or prompts.check_template(self.template), "template",
                self.template, f"one of {list(prompts.TEMPLATES)} or text with exactly one {{input}}")

    def library_checks(self):
        """transformers' GenerationConfig checks of `generation`, before the stage runs (core/library_options.py)."""
        generate.generation_config(self.generation, "select.generation")


def run(cfg, run: StageRun) -> StageResult:
    scope = run.read("scope", artifacts.Scope)
    val = data.load(cfg.data, seed=cfg.run.seed)["validation"]
    val = data.first(val, cfg.select.sample)
    (run.out / "predictions").mkdir()
    rows = [_score(cand, val, cfg, run) for cand in scope.candidates]
    chosen, reason = _choose(rows, scope.criteria, cfg.select.pin)
    selection = artifacts.Selection(selected=chosen["ref"], path=chosen["path"], seq2seq=chosen["seq2seq"],
                                    context_length=chosen["context_length"], reason=reason,
                                    template=prompts.template(cfg.select.template),
                                    candidates=rows)
    artifacts.write(run.out, selection)
    (run.out / "selection.md").write_text(_table(rows, chosen, reason, len(val)))
    _plot(rows, chosen, scope.criteria, run.out / "selection.png")
    return StageResult(
        metrics={"selected": chosen["ref"], "rougeL": chosen["rougeL"]["value"], "memory_mb": chosen["memory_mb"],
                 "latency_ms_per_token": chosen["latency_ms_per_token"]},
        summary=f"selected {chosen['ref']}: {reason}",
        # later stages read the choice, not the measurements (latencies differ on every run)
        decision={k: getattr(selection, k) for k in ("selected", "path", "seq2seq", "context_length", "template")})


def _score(cand: dict, val, cfg, run: StageRun) -> dict:
    """Zero-shot quality and cost of one candidate on the validation sample."""
    model = models.load_model(cand["path"], cfg.models.device, cfg.models.dtype)
    tokenizer = models.load_tokenizer(cand["path"])
    template = prompts.template(cfg.select.template)
    texts, _ = prompts.format_prompts(tokenizer, template, list(val[cfg.data.input_column]),
                                      context=cand["context_length"], max_new_tokens=cfg.scope.max_new_tokens)
    gen_config = generate.generation_config(cfg.select.generation, "select.generation", cfg.scope.max_new_tokens)
    refs = list(val[cfg.data.target_column])
    out = generate.generate(model, tokenizer, texts, gen_config, cfg.select.batch_size, cfg.run.seed,
                            ids=[str(i) for i in val[cfg.data.id_column or "id"]], references=refs,
                            desc=f"select {cand['ref']}")
    generate.write_jsonl(run.out / "predictions" / f"{slug(cand['ref'])}.jsonl", out)
    quality = metrics.corpus_scores([g.prediction for g in out], refs, seed=cfg.run.seed)
    return {
        "ref": cand["ref"], "path": cand["path"], "seq2seq": cand["seq2seq"], "context_length": cand["context_length"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "memory_mb": round(model.get_memory_footprint() / 2**20, 1),
        "latency_ms_per_token": round(generate.latency_ms_per_token(
            model, tokenizer, texts[: cfg.select.latency_examples], gen_config, cfg.run.seed), 2),
        "tokens_per_s": round(generate.tokens_per_second(out), 2),
        **{name: vars(est) for name, est in quality.items()},
    }


def _choose(rows: list[dict], criteria: dict, pin: str | None) -> tuple[dict, str]:
    if pin is not None:
        match = [r for r in rows if r["ref"] == pin]
        if not match:
            raise StageError(f"select.pin = `{pin}` is not one of models.candidates {[r['ref'] for r in rows]}.")
        return match[0], "pinned by select.pin"
    within = [r for r in rows if r["memory_mb"] <= criteria["max_memory_mb"]
              and r["latency_ms_per_token"] <= criteria["max_latency_ms_per_token"]]
    if not within:
        misses = "; ".join(f"{r['ref']}: {r['memory_mb']} MiB, {r['latency_ms_per_token']} ms/token" for r in rows)
        raise StageError(f"no candidate is within scope's budgets ({criteria['max_memory_mb']} MiB, "
                         f"{criteria['max_latency_ms_per_token']} ms/token at batch 1): {misses}. Raise "
                         "scope.criteria.max_memory_mb / max_latency_ms_per_token, add a smaller candidate, or set select.pin.")
    best = max(within, key=lambda r: r["rougeL"]["value"])
    return best, (f"best ROUGE-L ({best['rougeL']['value']:.3f}) of the {len(within)} of {len(rows)} candidates "
                  "within the memory and latency budgets")


def slug(ref: str) -> str:
    return re.sub(r"[^\w.-]+", "_", ref.strip("/"))[-80:]


def _table(rows: list[dict], chosen: dict, reason: str, n: int) -> str:
    lines = [f"# Foundation model selection (zero-shot, {n} validation examples)", "",
             "| model | ROUGE-1 | ROUGE-2 | ROUGE-L [95% CI] | chrF | BLEU | params | memory MiB | context | ms/token (bs 1) | tokens/s (batched) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **(selected)**" if r is chosen else ""
        lines.append(f"| {r['ref']}{mark} | {r['rouge1']['value']:.3f} | {r['rouge2']['value']:.3f} | "
                     f"{r['rougeL']['value']:.3f} [{r['rougeL']['low']:.3f}, {r['rougeL']['high']:.3f}] | "
                     f"{r['chrf']['value']:.1f} | {r['bleu']['value']:.1f} | {r['parameters'] / 1e6:.0f}M | "
                     f"{r['memory_mb']:.0f} | {r['context_length']:,} | {r['latency_ms_per_token']:.1f} | {r['tokens_per_s']:.1f} |")
    return "\n".join(lines + ["", f"Selected **{chosen['ref']}**: {reason}.", "", "![selection](selection.png)", ""])


def _plot(rows: list[dict], chosen: dict, criteria: dict, path) -> None:
    fig, (left, right) = figure(ncols=2, width=11, height=4)
    for r in rows:
        est = r["rougeL"]
        color = "tab:green" if r is chosen else "tab:blue"
        left.errorbar(r["memory_mb"], est["value"], yerr=[[est["value"] - est["low"]], [est["high"] - est["value"]]],
                      fmt="o", color=color, capsize=4)
        left.annotate(r["ref"], (r["memory_mb"], est["value"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    left.axvline(criteria["max_memory_mb"], color="red", linestyle="--", label="memory budget")
    left.set(xlabel="weight memory (MiB)", ylabel="ROUGE-L (95% CI)", title="quality vs memory")
    left.legend(fontsize=8)
    names = [r["ref"] for r in rows]
    right.barh(names, [r["latency_ms_per_token"] for r in rows], color=["tab:green" if r is chosen else "tab:blue" for r in rows])
    right.axvline(criteria["max_latency_ms_per_token"], color="red", linestyle="--", label="latency budget")
    right.set(xlabel="ms per new token at batch 1", title="latency")
    right.legend(fontsize=8)
    save(fig, path)


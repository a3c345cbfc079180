"""Stage 7, quantize: deployment artifacts of the fine-tuned model, with their trade-offs measured.

The fine-tuned model (adapter merged) is saved as deployable variants: the
reference (models.dtype: bfloat16 where the hardware has it natively, else float32) and bitsandbytes
LLM.int8 and 4-bit NF4 with and without double quantization, and the reference written as
GGUF (f16, q8_0; with an Ollama Modelfile) for llama.cpp. Every variant is reloaded from its
folder and measured the same way (GGUF files in llama.cpp, on the CPU): weight
memory, weights on disk, load time, latency per token at batch 1, batched
tokens/s, and quality and toxicity on the test split with the fine-tuned prompt
(95% CIs, paired approximate-randomisation tests against the reference). The smallest variant within
scope's budgets and quality tolerance is marked deployable and loaded once more
with `transformers.pipeline` in a fresh process, as a user would.

    python -m lifecycle quantize --config configs/offline.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.quantize …` is `python -m lifecycle quantize …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "quantize"); runpy.run_module("lifecycle", run_name="__main__")

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lifecycle.core import (artifacts, data, deployable, generate, gguf_variants, measure, models, pipeline_check,
                            quantization, quantreport, systems)
from lifecycle.core.artifacts import StageResult, StageRun
from lifecycle.core.config import option, require
from lifecycle.core.gguf_export import GGUFConfig
from lifecycle.core.provenance import versions
from lifecycle.core.store import write_json
from lifecycle.core.toxicity import load_scorer


@dataclass
class QuantizeConfig:
    variants: list[Literal["reference", "int8", "nf4", "nf4-nodq"]] = option(
        list(quantization.VARIANTS), help="Variants to build and measure: reference (unquantized, always needed), int8 "
        "(bitsandbytes LLM.int8), nf4 (4-bit NF4 with double quantization), nf4-nodq (without).")
    compute_dtype: models.DType = option("auto", help="bnb_4bit_compute_dtype of the 4-bit variants; auto is bfloat16 "
                                         "on a GPU that supports it, else float32 (on a CPU the reference may be "
                                         "bfloat16 while the bitsandbytes variants keep float32).")
    bitsandbytes: dict[str, Any] = option({}, help="More transformers.BitsAndBytesConfig options for every quantized "
                                          "variant, e.g. {llm_int8_threshold: 6.0, llm_int8_skip_modules: [lm_head]}.")
    limit: int | None = option(32, help="Measure quality on the first N test examples (null: the whole test split).")
    batch_size: int = option(generate.BATCH_SIZE, help="Prompts generated together, for quality and the batched tokens/s.")
    latency_examples: int = option(2, help="Examples generated one at a time to measure latency per token at batch 1.")
    examples: int = option(2, help="Example summaries shown side by side in the report.")
    check_pipeline: bool = option(True, help="Load the deployable variant in a fresh process with "
                                  "transformers.pipeline and summarize one test dialogue (about 10 s on CPU).")
    gguf: GGUFConfig = option(GGUFConfig, help="GGUF files of the reference for llama.cpp and Ollama, each checked in "
                              "llama.cpp and by transformers' gguf_file= reader (causal Llama-style models only).")

    def __post_init__(self):
        require("reference" in self.variants, "variants", self.variants,
                "a list that includes `reference`, which every other variant is compared with")
        require(len(set(self.variants)) == len(self.variants), "variants", self.variants, "each variant once")
        require(self.limit is None or self.limit > 0, "limit", self.limit, "a positive number of examples or null")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")
        require(self.latency_examples > 0, "latency_examples", self.latency_examples, "at least one example")
        require(self.examples >= 0, "examples", self.examples, "zero or more")

    def library_checks(self):
        """BitsAndBytesConfig's own checks of `bitsandbytes`, before the stage runs (core/library_options.py)."""
        quantization.check_options(self.bitsandbytes, self.variants)


def run(cfg, run: StageRun) -> StageResult:
    # the last model of the lineage: the RLHF policy when the run has one, else the fine-tuned model
    stage, scope = run.latest, run.read("scope", artifacts.Scope)
    trained = run.read(stage, artifacts.TrainedModel)
    model_dir, prompt, criteria = trained.path, trained.prompt, scope.criteria
    test = data.first(data.load(cfg.data, seed=cfg.run.seed)["test"], cfg.quantize.limit)
    device = models.pick_device(cfg.models.device)
    problems = {n: p for n in cfg.quantize.variants if (p := quantization.problem(n, model_dir, device))}
    if problems:  # before any work, not after measuring the reference
        raise quantization.cannot(problems, device, [n for n in cfg.quantize.variants if n not in problems])
    texts, gen_config = measure.latency_prompts(cfg, model_dir, prompt, test)
    scorer = load_scorer(cfg.metrics.toxicity)
    rows, outputs = {}, {}
    with quantization.quiet_bitsandbytes():
        for name in cfg.quantize.variants:
            out = run.out / "variants" / name
            quantize_s = quantization.build(model_dir, name, cfg.quantize, cfg.models.dtype, device, out, gen_config, prompt)
            rows[name], outputs[name] = measure.measure(cfg, out, name, device, texts, test, prompt, gen_config, scorer)
            rows[name]["quantize_s"] = quantize_s
    refused = gguf_variants.refusal(run.out / "variants" / "reference") if cfg.quantize.gguf.types else None
    if cfg.quantize.gguf.types and not refused:
        ggufs, gguf_outputs = gguf_variants.build_and_measure(cfg, run.out / "variants" / "reference", run.out / "variants",
                                                              test, prompt, scorer, scope.task)
        rows, outputs = {**rows, **ggufs}, {**outputs, **gguf_outputs}
    ref = rows["reference"]
    for name, row in rows.items():
        row["memory_ratio"] = round(row["memory_mb"] / ref["memory_mb"], 3)
        row["vs_reference"] = {} if name == "reference" else systems.compare(ref, row, cfg.metrics.bootstrap, cfg.run.seed)
    decision = deployable.choose({n: deployable.budget_row(r) for n, r in rows.items()}, criteria)
    lineage = quantreport.lineage(run, stage, model_dir, scope.task)
    final = run.run.dir(run.stage)  # where the variants live once the stage completes
    for name, row in rows.items():
        quantreport.write_card(run.out / "variants" / name, name, row, lineage, decision, final / "variants" / name)
    if decision["variant"]:
        decision["path"] = str(final / "variants" / decision["variant"])
        decision["pipeline_check"] = None
        if cfg.quantize.check_pipeline:
            decision["pipeline_check"] = pipeline_check.check(run.out / "variants" / decision["variant"], texts[0],
                                                              device, cfg.run.seed)
            decision["pipeline_check"]["measured_prediction"] = outputs[decision["variant"]][0].prediction  # same dialogue
    where = {"device": measure.describe_device(device), "bitsandbytes": versions()["bitsandbytes"], "gguf_refused": refused,
             "measured": "weight memory, load time, latency, tokens/s and "
             "quality of every variant" + (", and the fresh-process pipeline check of the deployable one"
                                           if decision.get("pipeline_check") else "")}
    artifacts.write(run.out, artifacts.Deployable(**decision))
    write_json(run.out / "quantize.json", {"source": lineage, "measured_on": where, "test_examples": len(test),
                                           "prompt": dataclasses.asdict(prompt), "criteria": criteria, "variants": rows, "deployable": decision})
    quantreport.plot(rows, decision, criteria, run.out / "quantize.png")
    (run.out / "quantize.md").write_text(quantreport.markdown(rows, outputs, decision, criteria, lineage, where, test, cfg))
    return StageResult(metrics=quantreport.headline(rows, decision, len(test)), summary=quantreport.summary(rows, decision))

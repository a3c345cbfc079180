"""Stage 7, quantize: deployment artifacts of the fine-tuned model, with their trade-offs measured.

The fine-tuned model (adapter merged) is saved as deployable variants: the
reference (float32 on CPU, bfloat16 on a GPU that has it) and bitsandbytes
LLM.int8 and 4-bit NF4 with and without double quantization. Every variant is
reloaded from its folder and measured the same way on the same device: weight
memory, weights on disk, load time, latency per token at batch 1, batched
tokens/s, and quality and toxicity on the test split with the fine-tuned prompt
(95% CIs, paired approximate-randomisation tests against the reference). The smallest variant within
scope's budgets and quality tolerance is marked deployable and loaded once more
with `transformers.pipeline` in a fresh process, as a user would.

    python -m lifecycle quantize --config configs/offline.yaml
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lifecycle.core import data, generate, models, prompts, systems
from lifecycle.core.config import library_object, option, require
from lifecycle.core.errors import LifecycleError
from lifecycle.core.pipeline import StageResult, StageRun
from lifecycle.core.plots import figure, save
from lifecycle.core.store import write_json
from lifecycle.core.toxicity import load_scorer

UPSTREAM = ("scope", "finetune")
OPTIONAL = ("rlhf",)
SECTIONS = ("data", "models", "scope", "metrics", "quantize")
# Each variant is a BitsAndBytesConfig (None: the unquantized reference the others are compared with).
VARIANTS: dict[str, dict | None] = {
    "reference": None,
    "int8": {"load_in_8bit": True},
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
    "nf4-nodq": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": False},
}
DESCRIPTION = {"reference": "unquantized", "int8": "LLM.int8 (8-bit, fp16 outliers)",
               "nf4": "4-bit NF4, double quant", "nf4-nodq": "4-bit NF4"}
RESERVED = {"load_in_8bit", "load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype"}
BLOCKSIZE = 64  # bitsandbytes' 4-bit block size; its CPU kernel packs whole blocks of each weight row


class QuantizeError(LifecycleError):
    """A variant cannot be produced or loaded on this device."""


@dataclass
class QuantizeConfig:
    variants: list[Literal["reference", "int8", "nf4", "nf4-nodq"]] = option(
        list(VARIANTS), help="Variants to build and measure: reference (unquantized, always needed), int8 "
        "(bitsandbytes LLM.int8), nf4 (4-bit NF4 with double quantization), nf4-nodq (without).")
    compute_dtype: models.DType = option("auto", help="bnb_4bit_compute_dtype of the 4-bit variants; auto is the "
                                         "reference's dtype (float32 on CPU, bfloat16 on a GPU that supports it).")
    bitsandbytes: dict[str, Any] = option({}, help="More transformers.BitsAndBytesConfig options for every quantized "
                                          "variant, e.g. {llm_int8_threshold: 6.0, llm_int8_skip_modules: [lm_head]}.")
    limit: int | None = option(32, help="Measure quality on the first N test examples (null: the whole test split).")
    batch_size: int = option(8, help="Prompts generated together, for quality and the batched tokens/s.")
    latency_examples: int = option(2, help="Examples generated one at a time to measure latency per token at batch 1.")
    examples: int = option(2, help="Example summaries shown side by side in the report.")
    check_pipeline: bool = option(True, help="Load the deployable variant in a fresh process with "
                                  "transformers.pipeline and summarize one test dialogue (about 10 s on CPU).")

    def __post_init__(self):
        from transformers import BitsAndBytesConfig

        require("reference" in self.variants, "variants", self.variants,
                "a list that includes `reference`, which every other variant is compared with")
        require(len(set(self.variants)) == len(self.variants), "variants", self.variants, "each variant once")
        known = set(inspect.signature(BitsAndBytesConfig.__init__).parameters) - {"self", "kwargs"}
        for key in self.bitsandbytes:
            require(key in known - RESERVED, f"bitsandbytes.{key}", self.bitsandbytes[key],
                    "a BitsAndBytesConfig option such as llm_int8_threshold, llm_int8_skip_modules or "
                    "bnb_4bit_quant_storage (the variant names set 8/4 bit, quant type and double quant; "
                    "compute dtype is quantize.compute_dtype)")
        require(self.limit is None or self.limit > 0, "limit", self.limit, "a positive number of examples or null")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")
        require(self.latency_examples > 0, "latency_examples", self.latency_examples, "at least one example")
        require(self.examples >= 0, "examples", self.examples, "zero or more")
        for name in self.variants:  # BitsAndBytesConfig's own checks of the extra options, under each variant
            if VARIANTS[name]:
                library_object(BitsAndBytesConfig, {**self.bitsandbytes, **VARIANTS[name]}, "bitsandbytes")


def run(cfg, run: StageRun) -> StageResult:
    stage, folder = source(run)
    prompt = json.loads((folder / "prompt.json").read_text())
    scope = json.loads((run.upstream("scope") / "scope.json").read_text())
    criteria = scope["criteria"]
    test = data.load(cfg.data, seed=cfg.run.seed)["test"]
    if cfg.quantize.limit:
        test = test.select(range(min(cfg.quantize.limit, len(test))))
    device = models.pick_device(cfg.models.device)
    problems = {n: p for n in cfg.quantize.variants if (p := bitsandbytes_problem(n, str(folder / "model"), device))}
    if problems:  # before any work, not after measuring the reference
        raise _cannot(problems, device, [n for n in cfg.quantize.variants if n not in problems])
    texts, gen_config = _prompts(cfg, str(folder / "model"), prompt, test)
    scorer = load_scorer(cfg.metrics.toxicity)
    rows, outputs = {}, {}
    with _quiet_bitsandbytes():
        for name in cfg.quantize.variants:
            quantize_s = build_variant(str(folder / "model"), name, cfg.quantize, cfg.models.dtype, device,
                                       run.out / "variants" / name, gen_config, prompt)
            rows[name], outputs[name] = measure(cfg, run.out / "variants" / name, name, device, texts, test, prompt,
                                                 gen_config, scorer)
            rows[name]["quantize_s"] = quantize_s
    ref = rows["reference"]
    for name, row in rows.items():
        row["memory_ratio"] = round(row["memory_mb"] / ref["memory_mb"], 3)
        row["vs_reference"] = {} if name == "reference" else systems.compare(ref, row, cfg.metrics.bootstrap, cfg.run.seed)
    decision = choose_deployable({n: _budget_row(r) for n, r in rows.items()}, criteria)
    lineage = {"task": scope["task"], **_lineage(run, stage, folder)}
    final = run.run.dir("quantize")  # where the variants live once the stage completes
    for name, row in rows.items():
        (run.out / "variants" / name / "README.md").write_text(
            _card(name, row, lineage, decision, final / "variants" / name))
    if decision["variant"]:
        decision["path"] = str(final / "variants" / decision["variant"])
        decision["pipeline_check"] = None
        if cfg.quantize.check_pipeline:
            decision["pipeline_check"] = pipeline_check(run.out / "variants" / decision["variant"], texts[0], device,
                                                        cfg.run.seed)
            decision["pipeline_check"]["measured_prediction"] = outputs[decision["variant"]][0].prediction  # same dialogue
    where = {"device": _describe_device(device), "bitsandbytes": _version("bitsandbytes"),
             "measured": "weight memory, load time, latency, tokens/s and "
             "quality of every variant" + (", and the fresh-process pipeline check of the deployable one"
                                           if decision.get("pipeline_check") else "")}
    write_json(run.out / "deployable.json", decision)
    write_json(run.out / "quantize.json", {"source": lineage, "measured_on": where, "test_examples": len(test),
                                           "prompt": prompt, "criteria": criteria, "variants": rows, "deployable": decision})
    _plot(rows, decision, criteria, run.out / "quantize.png")
    (run.out / "quantize.md").write_text(_report(rows, outputs, decision, criteria, lineage, where, test, cfg))
    return StageResult(metrics=_headline(rows, decision, len(test)), summary=_summary(rows, decision))


def source(run: StageRun) -> tuple[str, Path]:
    """The stage whose model is deployed, and its folder (holding `model/` and `prompt.json`):
    the RLHF policy when the run has one, else the fine-tuned model (adapters merged in both)."""
    stage = "rlhf" if "rlhf" in run.inputs else "finetune"
    return stage, run.upstream(stage)


def quantization_config(name: str, qcfg: QuantizeConfig, dtype: str, device: str):
    """The variant's transformers.BitsAndBytesConfig (None for the reference)."""
    from transformers import BitsAndBytesConfig

    if VARIANTS[name] is None:
        return None
    compute = models.pick_dtype(dtype if qcfg.compute_dtype == "auto" else qcfg.compute_dtype, device)
    options = {**qcfg.bitsandbytes, **VARIANTS[name]}
    if options.get("load_in_4bit"):
        options["bnb_4bit_compute_dtype"] = compute
    return BitsAndBytesConfig(**options)


def build_variant(source_dir: str, name: str, qcfg: QuantizeConfig, dtype: str, device: str, out: Path,
                  gen_config=None, prompt: dict | None = None) -> float:
    """Load the source model as variant `name`, save it (quantization config included) with its
    tokenizer to `out`, and return the seconds the load and quantization took."""
    if problem := bitsandbytes_problem(name, source_dir, device):
        raise _cannot({name: problem}, device)
    began = time.perf_counter()
    with _bitsandbytes_errors(name, device):
        model = _load(source_dir, name, device, dtype, quantization_config(name, qcfg, dtype, device))
    seconds = round(time.perf_counter() - began, 2)
    tokenizer = models.load_tokenizer(source_dir)
    if gen_config is not None:  # the decoding it is measured with (and the model's special tokens): pipeline() uses it too
        model.generation_config = generate.with_special_tokens(gen_config, model, tokenizer)
    # Saved before any forward pass: on CPU, bitsandbytes 0.50 repacks 4-bit weights for its AVX512-BF16
    # kernel on the first forward, and saving a repacked NF4 layer without double quantization writes
    # (and leaves in memory) scrambled scales.
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if prompt is not None:
        write_json(out / "prompt.json", prompt)
    with _bitsandbytes_errors(name, device):
        _smoke_forward(model)  # kernels that fail on this device fail here, not halfway through the measurements
    _free(model)
    return seconds


@contextlib.contextmanager
def _bitsandbytes_errors(name: str, device: str):
    """A quantized variant's library error as a QuantizeError that says what to do."""
    try:
        yield
    except (RuntimeError, ValueError, ImportError, AssertionError) as err:
        if VARIANTS[name] is None:
            raise
        said = " ".join(str(err).split())[:300]  # one paragraph, whatever the library printed
        raise _cannot({name: f"bitsandbytes failed with {type(err).__name__}: {said}"}, device) from None


def bitsandbytes_problem(name: str, source_dir: str, device: str) -> str | None:
    """Why bitsandbytes cannot run variant `name` on `device` (None when it can, as far as we know)."""
    if VARIANTS[name] is None:
        return None
    try:
        import bitsandbytes
        from bitsandbytes.functional import has_avx512bf16
    except ImportError as err:
        return f"bitsandbytes is not importable ({err}); install it with `pip install bitsandbytes`"
    if device == "cpu" and VARIANTS[name].get("load_in_4bit") and has_avx512bf16():
        # bitsandbytes' AVX512-BF16 CPU kernel repacks each 4-bit weight in whole 64-wide blocks
        # (and rows in groups of 32) on the first forward, and fails on layers narrower than that.
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = models.load_config(source_dir)
        with init_empty_weights():
            cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            skeleton = cls.from_config(config)
        head = skeleton.get_output_embeddings()
        bad = [(n, m.in_features, m.out_features) for n, m in skeleton.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head
               and (m.in_features % BLOCKSIZE or m.out_features % 32)]
        if bad:
            layer, k, n = bad[0]
            return (f"bitsandbytes {bitsandbytes.__version__}'s 4-bit CPU kernel (AVX512-BF16) needs linear layers "
                    f"whose input width is a multiple of {BLOCKSIZE} and output width a multiple of 32, but "
                    f"{len(bad)} layer(s) are not (first: `{layer}`, {k} -> {n})")
    return None


def choose_deployable(rows: dict[str, dict], criteria: dict, reference: str = "reference") -> dict:
    """The smallest variant (weight memory) that meets scope's criteria, or why none does.

    `rows` maps a variant to {"memory_mb", "latency_ms_per_token", "rougeL"}; the quality drop is
    the reference's ROUGE-L minus the variant's, against `criteria["max_quality_drop"]`."""
    base = rows[reference]["rougeL"]
    checks = {}
    for name, row in rows.items():
        measured = {"max_quality_drop": base - row["rougeL"], "max_memory_mb": row["memory_mb"],
                    "max_latency_ms_per_token": row["latency_ms_per_token"]}
        checks[name] = {key: {"value": round(value, 4), "limit": criteria[key], "ok": value <= criteria[key] + 1e-12}
                        for key, value in measured.items()}
    meeting = [n for n in rows if all(c["ok"] for c in checks[n].values())]
    failures = {n: [f"{key} ({c['value']:g} > {c['limit']:g})" for key, c in checks[n].items() if not c["ok"]]
                for n in rows if n not in meeting}
    if not meeting:
        why = "; ".join(f"{n} fails {', '.join(f)}" for n, f in failures.items())
        return {"variant": None, "reason": f"no variant meets scope's criteria: {why}", "checks": checks,
                "failures": failures}
    best = min(meeting, key=lambda n: (rows[n]["memory_mb"], -rows[n]["rougeL"]))
    return {"variant": best, "reason": (
        f"smallest weight memory ({rows[best]['memory_mb']:g} MiB) of the {len(meeting)} of {len(rows)} variants "
        f"within scope's criteria: ROUGE-L drop <= {criteria['max_quality_drop']:g} vs the reference, "
        f"<= {criteria['max_memory_mb']:g} MiB, <= {criteria['max_latency_ms_per_token']:g} ms/token at batch 1"),
        "checks": checks, "failures": failures}


# A fresh interpreter with nothing of ours imported: what a user's deployment does with the folder.
PIPELINE_CHECK = """
import json, sys, time
began = time.perf_counter()
args = json.loads(sys.argv[1])
from transformers import set_seed
set_seed(args["seed"])
if args["seq2seq"]:  # transformers 5 has no text2text pipeline: the model class and generate()
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args["model"])
    model = AutoModelForSeq2SeqLM.from_pretrained(args["model"], device_map=args["device"])
    enc = tok(args["prompt"], return_tensors="pt").to(model.device)
    text = tok.decode(model.generate(**enc)[0], skip_special_tokens=True)
else:
    from transformers import pipeline
    summarize = pipeline("text-generation", model=args["model"], device_map=args["device"])
    out = summarize(args["prompt"], return_full_text=False, add_special_tokens=args["add_special_tokens"])
    text = out[0]["generated_text"]
print(json.dumps({"summary": text.strip(), "seconds": round(time.perf_counter() - began, 2)}))
"""


def pipeline_check(folder: Path, prompt_text: str, device: str, seed: int = 0, timeout: int = 600) -> dict:
    """Load `folder` in a fresh process with `transformers.pipeline` and summarize one prompt
    (decoding from the folder's own generation_config.json)."""
    tokenizer = models.load_tokenizer(str(folder))
    args = {"model": str(folder), "device": device, "prompt": prompt_text, "seq2seq": models.is_seq2seq(str(folder)),
            "add_special_tokens": not tokenizer.chat_template, "seed": seed}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a local folder: the hub is never needed
    done = subprocess.run([sys.executable, "-c", PIPELINE_CHECK, json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        raise QuantizeError(f"the deployable variant in {folder} did not load in a fresh process with "
                            f"transformers.pipeline (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    how = "AutoModelForSeq2SeqLM + generate" if args["seq2seq"] else 'pipeline("text-generation")'
    return {"ok": True, "loader": how, "device": device, "summary": result["summary"], "seconds": result["seconds"]}


def _prompts(cfg, model_dir: str, prompt: dict, test) -> tuple[list[str], Any]:
    """The latency prompts and the decoding every variant is measured (and saved) with."""
    tokenizer = models.load_tokenizer(model_dir)
    context = models.context_length(models.load_config(model_dir), tokenizer)
    gen_config = generate.generation_config(prompt["generation"], "finetune prompt.json generation")
    texts, _ = prompts.format_prompts(tokenizer, prompt["template"], list(test[cfg.data.input_column][: cfg.quantize.latency_examples]),
                                      [tuple(s) for s in prompt["shot_examples"]], context, gen_config.max_new_tokens)
    return texts, gen_config


def _load(path: str, name: str, device: str, dtype: str, quant=None):
    """A variant on `device`: the reference through models.load_model, a quantized one with its
    BitsAndBytesConfig (or the one saved in its folder) placed by device_map, since it cannot be moved."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if VARIANTS[name] is None:
        return models.load_model(path, device, dtype)
    cls = AutoModelForSeq2SeqLM if models.is_seq2seq(path) else AutoModelForCausalLM
    extra = {"quantization_config": quant} if quant is not None else {}
    return cls.from_pretrained(path, dtype=models.pick_dtype(dtype, device), device_map={"": device}, **extra).eval()


def _smoke_forward(model) -> None:
    import torch

    ids = torch.ones((1, 2), dtype=torch.long, device=model.device)
    with torch.inference_mode():
        if model.config.is_encoder_decoder:
            model(input_ids=ids, decoder_input_ids=ids)
        else:
            model(input_ids=ids)


def measure(cfg, folder: Path, name: str, device: str, texts: list[str], test, prompt: dict, gen_config,
             scorer) -> tuple[dict, list[generate.Generation]]:
    """Every number of one variant, measured on its saved folder reloaded as a deployment would."""
    began = time.perf_counter()
    model = _load(str(folder), name, device, cfg.models.dtype)
    load_s = time.perf_counter() - began
    memory = model.get_memory_footprint()  # before any forward: bitsandbytes' CPU kernel repacks 4-bit weights on the first
    tokenizer = models.load_tokenizer(str(folder))
    out = systems.predict(cfg, str(folder), prompt, test, cfg.quantize.batch_size, f"quantize {name}", model=model)
    latency = generate.latency_ms_per_token(model, tokenizer, texts, gen_config, cfg.run.seed)
    row = {
        "quantization": DESCRIPTION[name], "device": device, "dtype": str(model.dtype).removeprefix("torch."),
        "seq2seq": bool(model.config.is_encoder_decoder),
        "quantization_config": _quant_dict(model), "memory_mb": round(memory / 2**20, 3),
        "disk_mb": round(sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20, 3),
        "load_s": round(load_s, 3), "latency_ms_per_token": round(latency, 2),
        **systems.score(cfg, out, scorer, test, cfg.metrics.bootstrap),
    }
    _free(model)
    return row, out


def _quant_dict(model) -> dict | None:
    quant = getattr(model.config, "quantization_config", None)
    if quant is None:
        return None
    raw = quant if isinstance(quant, dict) else quant.to_dict()
    return json.loads(json.dumps(raw, default=str))


def _free(model) -> None:
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _quiet_bitsandbytes():
    """LLM.int8 on CPU logs a warning on every matmul (its inputs are cast to fp16); once is in the report."""
    noisy = logging.getLogger("bitsandbytes.autograd._functions")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        yield
    finally:
        noisy.setLevel(level)


def _cannot(problems: dict[str, str], device: str, keep: list[str] | None = None) -> QuantizeError:
    """The variants that cannot run, why, and what to do instead."""
    keep = keep if keep is not None else [v for v in VARIANTS if v not in problems]
    names = ", ".join(f"`{n}`" for n in problems)
    why = "; ".join(dict.fromkeys(problems.values()))  # the same reason once
    several = len(problems) > 1
    return QuantizeError(f"quantize variant{'s' if several else ''} {names} cannot run on {device}: {why}. "
                         f"Drop {'them' if several else 'it'} from quantize.variants (e.g. "
                         f"quantize.variants=[{', '.join(keep)}]) or run the stage on a CUDA GPU, where bitsandbytes "
                         "supports every variant.")


def _budget_row(row: dict) -> dict:
    return {"memory_mb": row["memory_mb"], "latency_ms_per_token": row["latency_ms_per_token"],
            "rougeL": row["scores"]["rougeL"]["value"]}


def _describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)" if device == "cpu" else device


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _lineage(run: StageRun, stage: str, folder: Path) -> dict:
    manifest = run.inputs[stage]
    return {"run": str(run.run.root), "stage": stage, "model": str(folder / "model"), "base_model": _base_model(manifest),
            "manifest_sha256": run.run.manifest_hash(stage), "finished_at": manifest.get("finished_at"),
            "method": manifest.get("metrics", {}).get("method")}


def _base_model(manifest: dict) -> str | None:
    """The foundation model at the root of the lineage: follow the upstream manifests to select's choice."""
    while manifest:
        inputs = manifest.get("inputs", {})
        if "select" in inputs:
            return json.loads((Path(inputs["select"]["path"]).parent / "selection.json").read_text())["selected"]
        upstream = inputs.get("finetune")
        manifest = json.loads(Path(upstream["path"]).read_text()) if upstream else None
    return None


def _delta(d: dict) -> str:
    return f"{systems.show_change(d)} (p {d['p_value']:.2f})" if d else "-"


def _how_to_load(path: Path, seq2seq: bool) -> list[str]:
    """Three lines of Python that load the folder and use it."""
    if seq2seq:  # transformers 5 dropped the text2text pipeline
        return ["from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
                f'model, tok = AutoModelForSeq2SeqLM.from_pretrained("{path}"), AutoTokenizer.from_pretrained("{path}")',
                'summary = tok.decode(model.generate(**tok(prompt, return_tensors="pt"))[0], skip_special_tokens=True)']
    return ["from transformers import AutoModelForCausalLM, pipeline",
            f'model = AutoModelForCausalLM.from_pretrained("{path}")',
            f'summarize = pipeline("text-generation", model="{path}")  # summarize([{{"role": "user", "content": prompt}}])']


def _card(name: str, row: dict, lineage: dict, decision: dict, path: Path) -> str:
    sc = row["scores"]
    fails = decision["failures"].get(name)
    verdict = ("**deployable**: " + decision["reason"]) if decision["variant"] == name else \
        "not the deployable variant" + (f" (fails {', '.join(fails)})" if fails else "")
    lines = [f"# {lineage['base_model'] or 'fine-tuned model'} — {name} ({row['quantization']})", "",
             f"A model for {lineage['task']}, from the `{lineage['stage']}` stage of run `{lineage['run']}`"
             f" ({lineage['method'] or 'fine-tuned'}, adapter merged), saved with `save_pretrained`"
             + (" with its bitsandbytes quantization config" if row["quantization_config"] else "") + ".", "",
             "## Lineage", "",
             f"- source model: `{lineage['model']}`",
             f"- base model: `{lineage['base_model']}`",
             f"- {lineage['stage']} manifest sha256: `{lineage['manifest_sha256']}` (finished {lineage['finished_at']})",
             "- prompt and decoding: `prompt.json` here (template, shots) and `generation_config.json`", "",
             f"## Measured on {row['device']}", "",
             "| weight memory MiB | weights on disk MiB | load s | ms/token (batch 1) | tokens/s (batched) | "
             "ROUGE-L [95% CI] | Δ ROUGE-L vs reference | toxicity mean |",
             "|---|---|---|---|---|---|---|---|",
             f"| {row['memory_mb']:.2f} | {row['disk_mb']:.2f} | {row['load_s']:.2f} | {row['latency_ms_per_token']:.1f} | "
             f"{row['tokens_per_s']:.1f} | {systems.show_ci(sc['rougeL'])} | {_delta(row['vs_reference'].get('rougeL', {}))} | "
             f"{sc['toxicity_mean']['value']:.3f} |", "", f"Deployment: {verdict}.", "",
             "## How to load", "", "```python",
             *_how_to_load(path, row["seq2seq"]), "```", "",
             "`prompt` is `prompt.json`'s template with the dialogue in place of `{input}`.", ""]
    if row["quantization_config"]:
        lines += ["Loading needs `bitsandbytes` installed; the quantization config travels in `config.json`.", ""]
    return "\n".join(lines)


def _report(rows: dict, outputs: dict, decision: dict, criteria: dict, lineage: dict, where: dict, test, cfg) -> str:
    lines = [f"# Quantization of the {lineage['stage']} model on the test split ({len(test)} examples)", "",
             f"Source: `{lineage['model']}` (base `{lineage['base_model']}`). Measured on **{where['device']}** "
             f"(bitsandbytes {where['bitsandbytes']}): {where['measured']}; every variant reloaded from its saved "
             "folder.", "",
             "| variant | quantization | weight MiB (x ref) | disk MiB | load s | ms/token (bs 1) | "
             f"tokens/s (bs {cfg.quantize.batch_size}) | ROUGE-L [95% CI] | Δ ROUGE-L vs ref [95% CI] | "
             "toxicity mean [95% CI] | Δ toxicity vs ref | deployable |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        sc, vs = r["scores"], r["vs_reference"]
        mark = "**yes**" if decision["variant"] == name else ("no: " + ", ".join(decision["failures"][name])
                                                              if name in decision["failures"] else "meets criteria")
        lines.append(f"| {name} | {r['quantization']} | {r['memory_mb']:.2f} ({r['memory_ratio']:.2f}) | "
                     f"{r['disk_mb']:.2f} | {r['load_s']:.2f} | {r['latency_ms_per_token']:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{systems.show_ci(sc['rougeL'])} | {_delta(vs.get('rougeL', {}))} | {systems.show_ci(sc['toxicity_mean'])} | "
                     f"{_delta(vs.get('toxicity', {}))} | {mark} |")
    lines += ["", "Weight memory is `get_memory_footprint()` of the loaded model (parameters and buffers). bitsandbytes "
              "keeps the 4-bit scales (absmax, double-quant state) outside those, so they show only in the disk "
              "column, which is where double quantization's saving (or, on tiny layers, its overhead) appears.",
              "", "## Deployment", "",
              f"Scope's criteria: ROUGE-L drop vs the reference <= {criteria['max_quality_drop']}, weight memory <= "
              f"{criteria['max_memory_mb']} MiB, latency <= {criteria['max_latency_ms_per_token']} ms/token at batch 1.", ""]
    if decision["variant"]:
        check = decision["pipeline_check"]
        lines += [f"Deployable: **{decision['variant']}** — {decision['reason']}. Folder: `{decision['path']}`.", "",
                  f"Fresh-process check ({check['loader']} on {check['device']}, {check['seconds']} s) on "
                  f"{test[0][cfg.data.id_column or 'id']}: \"{check['summary']}\" (measured in-stage: "
                  f"\"{check['measured_prediction']}\")" if check else
                  "Fresh-process check: not run (quantize.check_pipeline is false).", ""]
    else:
        lines += [f"**No variant is deployable**: {decision['reason']}.", ""]
    if "int8" in rows and rows["int8"]["device"] == "cpu":
        lines += ["On CPU, LLM.int8 casts matmul inputs to float16, and bitsandbytes' CPU kernels are slower than "
                  "the GPU's: latency here says little about a GPU deployment.", ""]
    lines += ["![quantize](quantize.png)", "", "## Examples", ""]
    for i in range(min(cfg.quantize.examples, len(test))):
        lines += [f"**{test[i][cfg.data.id_column or 'id']}** — reference: {test[i][cfg.data.target_column]}", ""]
        lines += [f"- *{n}* (ROUGE-L {rows[n]['per_example']['rougeL'][i]:.3f}): {outputs[n][i].prediction}" for n in rows]
        lines.append("")
    return "\n".join(lines)


def _plot(rows: dict, decision: dict, criteria: dict, path) -> None:
    fig, (left, right) = figure(ncols=2, width=11, height=4)
    for name, r in rows.items():
        est = r["scores"]["rougeL"]
        color = "tab:green" if name == decision["variant"] else "tab:blue"
        left.errorbar(r["memory_mb"], est["value"], yerr=[[est["value"] - est["low"]], [est["high"] - est["value"]]],
                      fmt="o", color=color, capsize=4)
        left.annotate(name, (r["memory_mb"], est["value"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ref = rows["reference"]["scores"]["rougeL"]["value"]
    left.axhline(ref - criteria["max_quality_drop"], color="red", linestyle="--", label="reference - max quality drop")
    if criteria["max_memory_mb"] <= 2 * max(r["memory_mb"] for r in rows.values()):
        left.axvline(criteria["max_memory_mb"], color="red", linestyle=":", label="memory budget")
    left.set(xlabel="weight memory (MiB)", ylabel="ROUGE-L (95% CI)", title="quality vs weight memory")
    left.legend(fontsize=8)
    names = list(rows)
    right.barh(names, [rows[n]["tokens_per_s"] for n in names],
               color=["tab:green" if n == decision["variant"] else "tab:blue" for n in names])
    right.set(xlabel="new tokens/s (batched)", title=f"throughput on {next(iter(rows.values()))['device']}")
    right.invert_yaxis()  # top to bottom in the table's order
    save(fig, path)


def _headline(rows: dict, decision: dict, n: int) -> dict:
    out = {"test_examples": n, "reference_memory_mb": rows["reference"]["memory_mb"],
           "reference_rougeL": rows["reference"]["scores"]["rougeL"]["value"]}
    for name, r in rows.items():
        if name != "reference":
            key = name.replace("-", "_")
            out[f"{key}_memory_ratio"] = r["memory_ratio"]
            out[f"{key}_rougeL_delta"] = round(r["vs_reference"]["rougeL"]["delta"], 4)
    out["deployable"] = decision["variant"]
    if decision["variant"] and decision["pipeline_check"]:
        out["deployable_summary"] = decision["pipeline_check"]["summary"]
    return out


def _summary(rows: dict, decision: dict) -> str:
    lines = [f"{n}: {r['memory_mb']:.2f} MiB ({r['memory_ratio']:.2f}x), ROUGE-L {r['scores']['rougeL']['value']:.3f}, "
             f"{r['latency_ms_per_token']:.1f} ms/token" for n, r in rows.items()]
    if decision["variant"]:
        check = decision["pipeline_check"]
        lines.append(f"deployable: {decision['variant']} ({decision['reason']})"
                     + (f"; fresh-process summary: \"{check['summary']}\"" if check else ""))
    else:
        lines.append(decision["reason"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lifecycle.cli import stage_main

    return stage_main("quantize", argv)


if __name__ == "__main__":
    raise SystemExit(main())

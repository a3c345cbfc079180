"""quantize's report: `quantize.md` (the table first, so the run report quotes it), its plot,
each variant's model card (`README.md`, a huggingface_hub ModelCard), the lineage they cite,
and the stage's headline metrics and one-line summary, all from the measured rows."""

from __future__ import annotations

from pathlib import Path

from lifecycle.core import artifacts
from lifecycle.core.artifacts import StageRun
from lifecycle.core.plots import figure, save
from lifecycle.core.systems import show_ci, show_change


def lineage(run: StageRun, stage: str, model: str, task: str) -> dict:
    """Where the deployed model comes from: its task, run, stage, folder, base model and that stage's manifest."""
    manifest = run.inputs[stage]
    return {"task": task, "run": str(run.run.root), "stage": stage, "model": model, "base_model": _base_model(run),
            "manifest_sha256": run.run.manifest_hash(stage), "finished_at": manifest.get("finished_at"),
            "method": manifest.get("metrics", {}).get("method")}


def write_card(out: Path, name: str, row: dict, lineage: dict, decision: dict, final: Path) -> None:
    """The variant's model card in `out`: hub metadata, lineage, its measurements, how to load it from `final`."""
    from huggingface_hub import ModelCard, ModelCardData

    gguf = row.get("format") == "gguf"
    data = ModelCardData(base_model=lineage["base_model"], library_name="gguf" if gguf else "transformers",
                         pipeline_tag="text2text-generation" if row["seq2seq"] else "text-generation",
                         tags=["lifecycle", *(["bitsandbytes"] if row["quantization_config"] else []),
                               *(["gguf", "llama.cpp", "ollama"] if gguf else [])])
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_card(name, row, lineage, decision, final)}").save(out / "README.md")


def markdown(rows: dict, outputs: dict, decision: dict, criteria: dict, lineage: dict, where: dict, test, cfg) -> str:
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
        kind = f"{r['quantization']} ({r['dtype']})" if name == "reference" else r["quantization"]  # dtype: models.dtype
        lines.append(f"| {name} | {kind} | {r['memory_mb']:.2f} ({r['memory_ratio']:.2f}) | "
                     f"{r['disk_mb']:.2f} | {_num(r['load_s'], '.2f')} | {_num(r['latency_ms_per_token'], '.1f')} | "
                     f"{_num(r['tokens_per_s'], '.1f')} | "
                     f"{show_ci(sc['rougeL'])} | {_delta(vs.get('rougeL', {}))} | {show_ci(sc['toxicity_mean'])} | "
                     f"{_delta(vs.get('toxicity', {}))} | {mark} |")
    lines += ["", "Weight memory is `get_memory_footprint()` of the loaded model (parameters and buffers). bitsandbytes "
              "keeps the 4-bit scales (absmax, double-quant state) outside those, so they show only in the disk "
              "column, which is where double quantization's saving (or, on tiny layers, its overhead) appears.", "",
              *_gguf_notes(rows, where), "## Deployment", "",
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


def plot(rows: dict, decision: dict, criteria: dict, path) -> None:
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
    right.barh(names, [rows[n]["tokens_per_s"] or 0 for n in names],  # a GGUF llama.cpp did not run: no bar
               color=["tab:green" if n == decision["variant"] else "tab:blue" for n in names])
    right.set(xlabel="new tokens/s (batched; GGUF in llama.cpp at batch 1)", title=f"throughput on {next(iter(rows.values()))['device']}")
    right.invert_yaxis()  # top to bottom in the table's order
    save(fig, path)


def headline(rows: dict, decision: dict, n: int) -> dict:
    out = {"test_examples": n, "reference_dtype": rows["reference"]["dtype"], "reference_memory_mb": rows["reference"]["memory_mb"],
           "reference_rougeL": rows["reference"]["scores"]["rougeL"]["value"]}
    for name, r in rows.items():
        if name != "reference":
            key = name.replace("-", "_")
            out[f"{key}_memory_ratio"] = r["memory_ratio"]
            out[f"{key}_rougeL_delta"] = round(r["vs_reference"]["rougeL"]["delta"], 4)
            if "runtime" in r:
                out[f"{key}_runtime"] = r["runtime"]
    out["deployable"] = decision["variant"]
    if decision["variant"] and decision["pipeline_check"]:
        out["deployable_summary"] = decision["pipeline_check"]["summary"]
    return out


def summary(rows: dict, decision: dict) -> str:
    named = {n: f"{n} ({r['dtype']})" if n == "reference" else n for n, r in rows.items()}  # the dtype models.dtype chose
    lines = [f"{named[n]}: {r['memory_mb']:.2f} MiB ({r['memory_ratio']:.2f}x), ROUGE-L {r['scores']['rougeL']['value']:.3f}, "
             f"{_num(r['latency_ms_per_token'], '.1f')} ms/token" + (f" (llama.cpp {r['runtime']})" if "runtime" in r else "")
             for n, r in rows.items()]
    if decision["variant"]:
        check = decision["pipeline_check"]
        lines.append(f"deployable: {decision['variant']} ({decision['reason']})"
                     + (f"; fresh-process summary: \"{check['summary']}\"" if check else ""))
    else:
        lines.append(decision["reason"])
    return "\n".join(lines)


def _base_model(run: StageRun) -> str | None:
    """The foundation model at the root of the lineage: select's choice in this run. Every stage consumes
    upstream stages of its own run, so this run's folder is read, wherever it lies now: not the paths the
    manifests recorded, which name it as it was written (relative to the directory it ran from)."""
    select = run.run.manifest("select")
    return artifacts.read(run.run, "select", artifacts.Selection, select).selected if select else None


def _num(value: float | None, spec: str) -> str:
    """A measurement as the tables print it; `-` where it was not measured (a GGUF llama.cpp did not run)."""
    return "-" if value is None else format(value, spec)


def _gguf_notes(rows: dict, where: dict) -> list[str]:
    """The GGUF section: what each file's readers said, or why the model was not written as GGUF."""
    if where["gguf_refused"]:
        return ["## GGUF", "", f"No GGUF variants: {where['gguf_refused']}", ""]
    ggufs = {n: r for n, r in rows.items() if r.get("format") == "gguf"}
    if not ggufs:
        return []
    lines = ["## GGUF (llama.cpp, Ollama)", "", "Each GGUF is the reference written by lifecycle's exporter, in a "
             "folder of its own with an Ollama `Modelfile`; its weight memory is the file size (llama.cpp "
             "memory-maps it). Its row is measured in llama.cpp on the CPU, one prompt at a time, so its tokens/s "
             "is at batch 1; a file llama.cpp did not run is never deployable.", ""]
    for n, r in ggufs.items():
        reader = r["transformers_reader"]
        same = f", the same summary as llama.cpp for {reader['same_as_llamacpp']} of {reader['examples']}" \
            if reader["same_as_llamacpp"] is not None else " (the row's quality is this reader's)"
        lines.append(f"- **{n}** (`{r['gguf_file']}`): llama.cpp **{r['runtime']}** — {r['runtime_note']}. "
                     f"transformers `gguf_file=` reader: ROUGE-L {show_ci(reader['rougeL'])}{same}.")
    return lines + [""]


def _delta(d: dict) -> str:
    return f"{show_change(d)} (p {d['p_value']:.2f})" if d else "-"


def _how_to_load(path: Path, row: dict) -> list[str]:
    """Three lines of Python that load the folder (or its GGUF, dequantized) with transformers and use it."""
    if row.get("format") == "gguf":
        return ["from transformers import AutoModelForCausalLM, AutoTokenizer",
                f'model = AutoModelForCausalLM.from_pretrained("{path}", gguf_file="{row["gguf_file"]}")',
                f'tok = AutoTokenizer.from_pretrained("{path}", gguf_file="{row["gguf_file"]}")  # vocabulary and chat template']
    if row["seq2seq"]:  # transformers 5 dropped the text2text pipeline
        return ["from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
                f'model, tok = AutoModelForSeq2SeqLM.from_pretrained("{path}"), AutoTokenizer.from_pretrained("{path}")',
                'summary = tok.decode(model.generate(**tok(prompt, return_tensors="pt"))[0], skip_special_tokens=True)']
    return ["from transformers import AutoModelForCausalLM, pipeline",
            f'model = AutoModelForCausalLM.from_pretrained("{path}")',
            f'summarize = pipeline("text-generation", model="{path}")  # summarize([{{"role": "user", "content": prompt}}])']


def _how_to_run(name: str, row: dict, path: Path, decision: dict, run: str) -> list[str]:
    """The card's ways to run the variant: transformers, and for a GGUF llama.cpp and Ollama; then the endpoint."""
    lines = ["## How to run", "", "With transformers:", "", "```python", *_how_to_load(path, row), "```", "",
             "`prompt` is `prompt.json`'s template with the dialogue in place of `{input}`.", ""]
    if row.get("format") == "gguf":
        lines += ["With llama.cpp (`make llamacpp` installs llama-cpp-python); `prompt` is the whole evaluated prompt, "
                  "chat template included, as the Modelfile's TEMPLATE writes it:", "", "```python",
                  "from llama_cpp import Llama",
                  f'llm = Llama(model_path="{path / row["gguf_file"]}", n_ctx=0, verbose=False)',
                  'summary = llm.create_completion(prompt, max_tokens=64, temperature=0)["choices"][0]["text"]',
                  "```", "", "With Ollama (the Modelfile here carries the evaluated prompt and decoding; send the raw "
                  "dialogue):", "", "```bash", f"ollama create {name} -f {path / 'Modelfile'}",
                  f'ollama run {name} "$(cat dialogue.txt)"', "```", ""]
    served = "this variant" if decision["variant"] == name else f"the deployable variant ({decision['variant'] or 'none'})"
    lines += [f"Behind an OpenAI-compatible endpoint: `python -m lifecycle serve --config <the config of run {run}>` "
              f"serves {served} on http://127.0.0.1:8000/v1; send the raw dialogue as the user message.", ""]
    return lines


def _card(name: str, row: dict, lineage: dict, decision: dict, path: Path) -> str:
    sc = row["scores"]
    fails = decision["failures"].get(name)
    verdict = ("**deployable**: " + decision["reason"]) if decision["variant"] == name else \
        "not the deployable variant" + (f" (fails {', '.join(fails)})" if fails else "")
    lines = [f"# {lineage['base_model'] or 'fine-tuned model'} — {name} ({row['quantization']})", "",
             f"A model for {lineage['task']}, from the `{lineage['stage']}` stage of run `{lineage['run']}`"
             f" ({lineage['method'] or 'fine-tuned'}, adapter merged), "
             + (f"written as GGUF (`{row.get('gguf_file')}`, with an Ollama `Modelfile`)" if row.get("format") == "gguf"
                else "saved with `save_pretrained`")
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
             f"| {row['memory_mb']:.2f} | {row['disk_mb']:.2f} | {_num(row['load_s'], '.2f')} | "
             f"{_num(row['latency_ms_per_token'], '.1f')} | {_num(row['tokens_per_s'], '.1f')} | {show_ci(sc['rougeL'])} | {_delta(row['vs_reference'].get('rougeL', {}))} | "
             f"{sc['toxicity_mean']['value']:.3f} |", "", f"Deployment: {verdict}.", "",
             *([f"llama.cpp: {row['runtime']} ({row['runtime_note']})", ""] if "runtime" in row else []),
             *_how_to_run(name, row, path, decision, lineage["run"])]
    if row["quantization_config"]:
        lines += ["Loading needs `bitsandbytes` installed; the quantization config travels in `config.json`.", ""]
    return "\n".join(lines)

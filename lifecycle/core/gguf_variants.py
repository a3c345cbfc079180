"""quantize's GGUF variants: the unquantized reference written as GGUF (core/gguf_export), each
file in a folder of its own with an Ollama Modelfile and the run's prompt.json beside it, and
measured as rows of the same table as the bitsandbytes variants (systems.score, then quantize's
systems.compare against the reference).

Two readers check each file. llama.cpp (core/gguf_runtime) generates the test summaries, so
the row's quality, load time and tokens/s are the runtime's; without it the row says `not
checked` (or `failed`) and why, its quality comes from the second reader only, and it is not
eligible for the deployable choice. transformers' `gguf_file=` reader generates them too,
dequantized, and the row records its ROUGE-L and how many of its summaries llama.cpp matched.
Weight memory is the file size: llama.cpp memory-maps the file and computes on it as stored.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from lifecycle.core import gguf_export, gguf_runtime, modelfile, models, systems
from lifecycle.core.artifacts import Prompt
from lifecycle.core.store import write_json

DESCRIPTION = {"f16": "GGUF F16 (llama.cpp)", "q8_0": "GGUF Q8_0, 8-bit blocks of 32 (llama.cpp)",
               "q4_0": "GGUF Q4_0, 4-bit blocks of 32 (llama.cpp)"}


def name(kind: str) -> str:
    """The variant's name in the table and its folder under `variants/`."""
    return f"gguf-{kind}"


def refusal(model_dir: str | Path) -> str | None:
    """Why the model in `model_dir` cannot be written as GGUF (the exporter's message), or None."""
    folder = Path(model_dir)
    try:
        gguf_export.refuse_unsupported(folder, json.loads((folder / "config.json").read_text()))
    except gguf_export.ExportError as err:
        return str(err)
    return None


def build_and_measure(cfg, reference: Path, variants: Path, test, prompt: Prompt, scorer,
                      task: str) -> tuple[dict, dict]:
    """Rows and predictions of every configured GGUF type of the saved `reference` variant."""
    rows, outputs = {}, {}
    for kind in cfg.quantize.gguf.types:
        rows[name(kind)], outputs[name(kind)] = measure(cfg, reference, variants / name(kind), kind, test, prompt,
                                                        scorer, task)
    return rows, outputs


def measure(cfg, reference: Path, folder: Path, kind: str, test, prompt: Prompt, scorer, task: str) -> tuple[dict, list]:
    """Export `reference` as GGUF `kind` into `folder` (with its Modelfile), and measure it in both readers."""
    from accelerate.utils import release_memory

    began = time.perf_counter()
    path = gguf_export.export(reference, folder / f"model-{kind}.gguf", kind)
    export_s = round(time.perf_counter() - began, 2)
    modelfile.write(path, reference, prompt, task)
    write_json(folder / "prompt.json", dataclasses.asdict(prompt))
    shutil.copy(reference / "generation_config.json", folder)  # the run's decoding, for the GGUF's transformers readers
    model = systems.LazyModel(cfg, str(path), load=lambda: gguf_runtime.load_with_transformers(path))
    # the reference's tokenizer: the same vocabulary the file carries (tests/test_gguf.py checks they agree)
    read = systems.predict(cfg, str(reference), prompt, test, cfg.quantize.batch_size, f"quantize {name(kind)} "
                           "(transformers gguf_file=)", model=model, weights=str(folder))
    tokenizer = models.load_tokenizer(str(reference))
    texts = [g.prompt for g in read]
    model, = release_memory(model)
    check = _llamacpp(cfg, path, texts, prompt, tokenizer, read)
    measured = check.generations if check.status == "checked" else read
    scores = systems.score(cfg, measured, scorer, test, cfg.metrics.bootstrap)
    reader = systems.score(cfg, read, scorer, test, cfg.metrics.bootstrap)["scores"]["rougeL"]
    same = sum(a.prediction == b.prediction for a, b in zip(read, check.generations)) if check.generations else None
    row = {"quantization": DESCRIPTION[kind], "format": "gguf", "gguf_file": path.name, "device": "cpu",
           "dtype": kind, "seq2seq": False, "quantization_config": None,
           "memory_mb": check.file_mb, "disk_mb": check.file_mb, "load_s": check.load_s, "quantize_s": export_s,
           "runtime": check.status, "runtime_note": check.reason, **scores,
           "transformers_reader": {"rougeL": reader, "same_as_llamacpp": same, "examples": len(read)}}
    if check.status == "checked":  # one prompt at a time: llama.cpp's tokens/s is at batch 1, prefill included
        row["latency_ms_per_token"] = round(1000 / check.tokens_per_s, 2) if check.tokens_per_s else None
    else:  # the transformers reader's speed is not the runtime's
        row["latency_ms_per_token"] = row["tokens_per_s"] = None
    return row, measured


def _llamacpp(cfg, path: Path, texts: list[str], prompt: Prompt, tokenizer, read) -> gguf_runtime.RuntimeCheck:
    if not cfg.quantize.gguf.runtime_check:
        return gguf_runtime.RuntimeCheck("not checked", "quantize.gguf.runtime_check is false",
                                         round(path.stat().st_size / 2**20, 3))
    return gguf_runtime.check_llamacpp(path, texts, prompt.generation, add_special=not tokenizer.chat_template,
                                       ids=[g.id for g in read], references=[g.reference for g in read],
                                       threads=cfg.quantize.gguf.threads, seed=cfg.run.seed)

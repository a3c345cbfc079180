"""Every number of a deployment variant, measured the same way for each on its saved folder
reloaded as a deployment would: weight memory, weights on disk, load time, latency per token at
batch 1, batched tokens/s, and quality and toxicity on the test split (systems.score)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lifecycle.core import generate, models, prompts, quantization, systems
from lifecycle.core.artifacts import Prompt


def latency_prompts(cfg, model_dir: str, prompt: Prompt, test) -> tuple[list[str], Any]:
    """The prompts latency is measured on, and the decoding every variant is measured (and saved) with."""
    tokenizer = models.load_tokenizer(model_dir)
    context = models.context_length(models.load_config(model_dir), tokenizer)
    gen_config = generate.generation_config(prompt.generation, "finetune prompt.json generation")
    dialogues = list(test[cfg.data.input_column][: cfg.quantize.latency_examples])
    texts, _ = prompts.format_prompts(tokenizer, prompt.template, dialogues,
                                      [tuple(s) for s in prompt.shot_examples], context, gen_config.max_new_tokens)
    return texts, gen_config


def measure(cfg, folder: Path, name: str, device: str, texts: list[str], test, prompt: Prompt, gen_config,
            scorer) -> tuple[dict, list[generate.Generation]]:
    """Every number of variant `name`, measured on its saved `folder`, and its predictions for `test`."""
    from accelerate.utils import release_memory

    began = time.perf_counter()
    model = quantization.load(str(folder), name, device, cfg.models.dtype)
    load_s = time.perf_counter() - began
    memory = model.get_memory_footprint()  # before any forward: bitsandbytes' CPU kernel repacks 4-bit weights on the first
    tokenizer = models.load_tokenizer(str(folder))
    out = systems.predict(cfg, str(folder), prompt, test, cfg.quantize.batch_size, f"quantize {name}", model=model)
    latency = generate.latency_ms_per_token(model, tokenizer, texts, gen_config, cfg.run.seed)
    row = {
        "quantization": quantization.DESCRIPTION[name], "device": device,
        "dtype": str(model.dtype).removeprefix("torch."), "seq2seq": bool(model.config.is_encoder_decoder),
        "quantization_config": _quantization_dict(model), "memory_mb": round(memory / 2**20, 3),
        "disk_mb": round(sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20, 3),
        "load_s": round(load_s, 3), "latency_ms_per_token": round(latency, 2),
        **systems.score(cfg, out, scorer, test, cfg.metrics.bootstrap),
    }
    model, = release_memory(model)  # this frame held the only reference: the next variant loads into freed memory
    return row, out


def describe_device(device: str) -> str:
    """The device as the report names it: the GPU's name, or the CPU threads torch uses."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)" if device == "cpu" else device


def _quantization_dict(model) -> dict | None:
    quant = getattr(model.config, "quantization_config", None)
    if quant is None:
        return None
    raw = quant if isinstance(quant, dict) else quant.to_dict()
    return json.loads(json.dumps(raw, default=str))

"""Batched generation for causal and seq2seq models, shared by every stage that generates.

Prompts are sorted by length and generated in batches (left-padded for decoder-only
models, so every row's new tokens start at the same column), under
`torch.inference_mode`, with a progress bar. Generation options are a plain
`transformers.GenerationConfig`, validated before the stage runs (core/library_options.py).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lifecycle.core.errors import ConfigError, one_line
from lifecycle.core.prompts import tokenize

GREEDY = {"do_sample": False}
# Prompts generated together unless a stage's batch_size says otherwise: on a 2-core CPU, batch 16 makes
# 1.36x the tokens/s of batch 8 and batch 32 no more (benchmarks/bench_generate.py, docs/benchmarks.md), and 16
# dialogues' KV cache is a few hundred MB for the packaged models.
BATCH_SIZE = 16


def generation_config(options: dict[str, Any], key: str, max_new_tokens: int | None = None):
    """`options` -> a validated GenerationConfig; bad keys or values are a ConfigError at `key`."""
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()
    for name in options:
        if name not in known:
            raise ConfigError(f"{key}.{name}", options[name], "a GenerationConfig option such as max_new_tokens, "
                              "do_sample, temperature, top_k, top_p, repetition_penalty or num_beams", unknown=True)
    merged = {"max_new_tokens": max_new_tokens, **options} if max_new_tokens else dict(options)
    try:
        config = GenerationConfig(**merged)
        config.validate(strict=True)
    except ValueError as err:
        raise ConfigError(key, options, "valid generation options; transformers says: " + one_line(err, 2000)) from None
    return config


@dataclass
class Generation:
    id: str
    prompt: str
    prediction: str
    reference: str
    prompt_tokens: int
    new_tokens: int
    batch: int  # examples generated together share a batch number and its wall time
    latency_s: float


def generate(model, tokenizer, prompts: list[str], gen_config, batch_size: int = 8, seed: int = 0,
             ids: list[str] | None = None, references: list[str] | None = None, desc: str = "generate") -> list[Generation]:
    """Generate for every prompt (already formatted, special tokens included) in length-sorted batches."""
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    seq2seq = model.config.is_encoder_decoder
    tokenizer.padding_side = "right" if seq2seq else "left"
    gen_config = with_special_tokens(gen_config, model, tokenizer)
    lengths = [len(ids_) for ids_ in tokenize(tokenizer, prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # similar lengths share a batch: little padding
    results: list[Generation | None] = [None] * len(prompts)
    set_seed(seed)
    with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, unit="ex") as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            enc = tokenize(tokenizer, [prompts[i] for i in batch], return_tensors="pt", padding=True).to(model.device)
            began = time.perf_counter()
            out = model.generate(**enc, generation_config=gen_config)
            elapsed = time.perf_counter() - began
            new = out[:, 1:] if seq2seq else out[:, enc["input_ids"].shape[1]:]  # seq2seq: drop the decoder start
            for row, i in enumerate(batch):
                tokens = new[row]
                count = _length_to_eos(tokens.tolist(), gen_config.eos_token_id)
                results[i] = Generation(
                    id=ids[i] if ids else str(i), prompt=prompts[i],
                    prediction=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    reference=references[i] if references else "", prompt_tokens=lengths[i],
                    new_tokens=count, batch=start // batch_size, latency_s=round(elapsed, 4))
            bar.update(len(batch))
    return results


def latency_ms_per_token(model, tokenizer, prompts: list[str], gen_config, seed: int = 0) -> float:
    """Wall time per new token at batch 1, prompt prefill included, over a fixed output length."""
    fixed = copy.deepcopy(gen_config)
    fixed.min_new_tokens = fixed.max_new_tokens  # an early EOS must not flatter a model
    timed = generate(model, tokenizer, prompts, fixed, batch_size=1, seed=seed, desc="latency at batch 1")
    return 1000 / tokens_per_second(timed)


def _length_to_eos(tokens: list[int], eos) -> int:
    """Generated length up to and including the first EOS; what follows is padding."""
    stops = set(eos if isinstance(eos, list) else [eos])
    return next((n + 1 for n, t in enumerate(tokens) if t in stops), len(tokens))


def tokens_per_second(generations: list[Generation]) -> float:
    """New tokens over the wall time of all batches (each batch's time counted once)."""
    seconds = sum({g.batch: g.latency_s for g in generations}.values())
    return sum(g.new_tokens for g in generations) / seconds if seconds else 0.0


def write_jsonl(path: Path, generations: list[Generation]) -> None:
    with open(path, "w") as fh:
        for g in generations:
            fh.write(json.dumps(asdict(g), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Generation]:
    return [Generation(**json.loads(line)) for line in Path(path).read_text().splitlines()]


def with_special_tokens(gen_config, model, tokenizer):
    """Our options plus the model's own eos/pad/bos ids (never its sampling defaults)."""
    config = copy.deepcopy(gen_config)
    own = model.generation_config
    config.eos_token_id = own.eos_token_id if own.eos_token_id is not None else tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else own.pad_token_id
    config.bos_token_id = own.bos_token_id
    if model.config.is_encoder_decoder:
        config.decoder_start_token_id = own.decoder_start_token_id
    return config

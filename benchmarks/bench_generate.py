"""Generation throughput: lifecycle's batched generation, in the dtype the stages use (`--dtype auto`: bf16
where the hardware computes it natively), vs the classic per-example fp32 `generate` loop; same prompts
and greedy decoding of a fixed number of new tokens; how much of the stages' batch is prefill; and each decoding lever
transformers offers for it alone, on top of the stages' batch (a static KV cache, then with `torch.compile` of the
decode step). And batch-1 decoding alone (prefill subtracted)
against its memory-bandwidth bound: every decoded token reads every weight once — in transformers, and
in llama.cpp (where `make llamacpp` installed it) on the same model written as GGUF by quantize's exporter.

    .venv/bin/python benchmarks/bench_generate.py --examples 16 --new-tokens 64      (make bench runs it)

Writes benchmarks/results/generate.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from common import CACHE, SHAPES, machine_limits, random_model, read_rate, write_results

GGUF_TYPES = ("f16", "q8_0")  # llama.cpp's batch-1 rows: the unquantized file and the 8-bit one quantize deploys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--shape", choices=SHAPES, help="a randomly initialised model of this real shape instead of --model")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--dtype", default="auto", help="lifecycle's rows (auto: models.inference_dtype); the loop is fp32")
    args = parser.parse_args()
    if args.new_tokens < 16:  # the decode-only figure is the difference of two timings: too few tokens, all noise
        parser.error("--new-tokens must be at least 16")

    from lifecycle.core import data, generate, gguf_runtime, models, prompts
    from lifecycle.core.config import build

    path = random_model(args.shape, CACHE / args.shape) if args.shape else models.resolve(args.model)
    what = f"randomly initialised {args.shape}-shaped model" if args.shape else args.model
    tokenizer = models.load_tokenizer(path)
    baseline = models.load_model(path, "auto", "float32")
    model = models.load_model(path, "auto", args.dtype)
    dtype = str(model.dtype).removeprefix("torch.")
    val = data.load(build(data.DataConfig, {}))["validation"].select(range(args.examples))
    texts, _ = prompts.format_prompts(tokenizer, prompts.TEMPLATES["summarize"], list(val["dialogue"]))
    config = generate.generation_config({"do_sample": False, "min_new_tokens": args.new_tokens}, "bench",
                                        args.new_tokens)
    for m in (baseline, model):  # warm-up: first calls pay one-off costs
        generate.generate(m, tokenizer, texts[:2], config, batch_size=2)

    rows = [loop(baseline, tokenizer, texts, config, prompts)]
    for batch_size in sorted({*args.batch_sizes, generate.BATCH_SIZE}):
        seconds, out = timed(model, tokenizer, texts, config, batch_size)
        rows.append(row(f"lifecycle batched ({dtype}, batch {batch_size})", sum(g.new_tokens for g in out), seconds))
        if batch_size == generate.BATCH_SIZE:  # the stages' batch: what the levers and the prefill are measured against
            default_s, default = seconds, out
    rows += levers(model, tokenizer, texts, config, default, dtype)
    prefill = prefill_seconds(model, tokenizer, texts, config)
    for r in rows:
        r["speedup_vs_loop"] = round(r["tokens_per_s"] / rows[0]["tokens_per_s"], 2)
    limits = machine_limits(str(model.device))
    decode = [decode_only(m, tokenizer, texts[:4], args.new_tokens, prompts, limits) for m in (baseline, model)]
    decode += llamacpp_decode(path, texts[:4], args.new_tokens, limits)
    table = ["| method | new tokens | seconds | tokens/s | speed-up | first call s | summaries as the default's |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} | {r['speedup_vs_loop']}x | "
              f"{r.get('first_call_s', '')} | {'' if r.get('same_as_default') is None else r['same_as_default']} |"
              for r in rows]
    table += ["", f"Prefill: the same batches of {generate.BATCH_SIZE} generating 1 new token take {prefill:.1f} s, "
              f"{prefill / default_s:.0%} of the {default_s:.1f} s of {args.new_tokens} new tokens."]
    table += ["", f"Batch-1 decoding alone (the time of {args.new_tokens} new tokens minus that of 1, i.e. without the "
              f"prefill; greedy, {len(texts[:4])} prompts). Every decoded token reads every weight once, so the rate "
              "at which this machine reads those weights where they lie (their bytes summed, best of 1 s) bounds it. "
              "This VM's memory comes at more than one speed; the best read rate of fresh memory in this run was "
              f"{limits['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, the last column's bound:", "",
              "| runtime | dtype | weights MiB | ms/token | tokens/s | decode reads GB/s | weights' read rate GB/s | "
              "bound tokens/s | share of the bound | share of the machine's best |", "|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {d['runtime']} | {d['dtype']} | {d['weights_mib']:,.0f} | {d['ms_per_token']} | {d['tokens_per_s']} | "
              f"{d['weights_mib'] * 2**20 * d['tokens_per_s'] / 1e9:.1f} | {d['weights_read_bytes_per_s'] / 1e9:.1f} | "
              f"{d['bound_tokens_per_s']:,.0f} | {d['share_of_bound']:.0%} | {d['share_of_machine_bound']:.0%} |"
              for d in decode]
    if not any(d["runtime"].startswith("llama.cpp") for d in decode):
        table += ["", f"llama.cpp rows left out: llama-cpp-python is not installed; {gguf_runtime.INSTALL_HINT}."]
    rows.append({"method": f"prefill (batch {generate.BATCH_SIZE}, 1 new token)", "seconds": round(prefill, 1)})
    rows.append({"method": "batch-1 decode", "decode": decode, "machine_limits": limits})
    write_results(f"generate-{args.shape}" if args.shape else "generate", rows, table,
                  f"python benchmarks/bench_generate.py --examples {args.examples} --new-tokens {args.new_tokens} "
                  f"--batch-sizes {' '.join(map(str, args.batch_sizes))} --dtype {args.dtype}"
                  + (f" --shape {args.shape}" if args.shape else ""),
                  f"{what} (loop float32, lifecycle {dtype}, device {model.device}), {args.examples} demo validation "
                  f"dialogues, `summarize` template with the chat template, greedy, exactly {args.new_tokens} new tokens each")


def levers(model, tokenizer, texts, config, default: list, dtype: str) -> list[dict]:
    """Each of transformers' decoding levers alone at the stages' batch size, timed on its second call, with the
    first call's seconds (compiling, for torch.compile) and how many summaries match the default decoding's."""
    from transformers import CompileConfig

    from lifecycle.core import generate

    static = copy.deepcopy(config)
    static.cache_implementation = "static"
    compiled = copy.deepcopy(static)
    compiled.compile_config = CompileConfig(mode="default")  # its "reduce-overhead" is CUDA graphs
    compiled.compile_config._compile_all_devices = True  # transformers compiles on GPUs only otherwise
    rows = []
    for name, variant in (("static KV cache", static), ("static KV cache + torch.compile of the decode step", compiled)):
        first, out = timed(model, tokenizer, texts, variant)
        seconds, out = timed(model, tokenizer, texts, variant)
        rows.append(row(f"lifecycle batched ({dtype}, batch {generate.BATCH_SIZE}), {name}",
                        sum(g.new_tokens for g in out), seconds)
                    | {"first_call_s": round(first, 1), "same_as_default": sum(
                        a.prediction == b.prediction for a, b in zip(out, default))})
    return rows


def prefill_seconds(model, tokenizer, texts, config) -> float:
    """The stages' batches of the same prompts generating 1 new token: the prefill's share of their time."""
    one = copy.deepcopy(config)
    one.max_new_tokens = one.min_new_tokens = 1
    return timed(model, tokenizer, texts, one)[0]


def timed(model, tokenizer, texts, config, batch_size: int | None = None) -> tuple[float, list]:
    """(seconds, generations) of lifecycle's batched generation, in the stages' batches unless `batch_size`."""
    from lifecycle.core import generate

    began = time.perf_counter()
    out = generate.generate(model, tokenizer, texts, config, batch_size=batch_size or generate.BATCH_SIZE)
    return time.perf_counter() - began, out


def loop(model, tokenizer, texts, config, prompts) -> dict:
    """The baseline: one `model.generate` call per example, as in the classic lab."""
    tokens, seconds = one_at_a_time(model, tokenizer, texts, config.max_new_tokens, prompts)
    return row("per-example generate loop", tokens, seconds)


def one_at_a_time(model, tokenizer, texts, new_tokens: int, prompts) -> tuple[int, float]:
    """Greedy `model.generate` of exactly `new_tokens` for each text alone: (tokens generated, seconds)."""
    tokens, began = 0, time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            enc = prompts.tokenize(tokenizer, [text], return_tensors="pt").to(model.device)
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens, time.perf_counter() - began


def decode_only(model, tokenizer, texts, new_tokens: int, prompts, limits: dict) -> dict:
    """Batch-1 decode rate without the prefill: (n - 1) tokens over the time of n new tokens minus that of 1."""
    seconds = (one_at_a_time(model, tokenizer, texts, new_tokens, prompts)[1]
               - one_at_a_time(model, tokenizer, texts, 1, prompts)[1])
    return decode_row("transformers", str(model.dtype).removeprefix("torch."), model.get_memory_footprint(),
                      len(texts) * (new_tokens - 1) / seconds, read_rate([*model.parameters(), *model.buffers()]), limits)


def llamacpp_decode(model_dir: str, texts, new_tokens: int, limits: dict) -> list[dict]:
    """The same batch-1 decode figure in llama.cpp, for the model written as each GGUF type quantize deploys;
    llama.cpp memory-maps the file and computes on it as stored, so the file's bytes are what a token reads."""
    from lifecycle.core import gguf_export, gguf_runtime

    version = gguf_runtime.llamacpp_version()
    if version is None:
        return []
    from llama_cpp import Llama

    rows = []
    for kind in GGUF_TYPES:
        path = gguf_export.export(model_dir, CACHE / "gguf" / f"{Path(model_dir).name}-{kind}.gguf", kind)
        llm = Llama(model_path=str(path), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)
        tokens = [llm.tokenize(text.encode(), add_bos=False, special=True) for text in texts]
        greedy(llm, tokens[:2], 2)  # warm-up
        seconds = greedy(llm, tokens, new_tokens) - greedy(llm, tokens, 1)
        pages = torch.from_numpy(np.memmap(path, mode="c"))  # the page cache llama.cpp maps the file from
        rows.append(decode_row(f"llama.cpp {version}", f"GGUF {kind}", path.stat().st_size,
                               len(texts) * (new_tokens - 1) / seconds, read_rate([pages]), limits))
        llm.close()
    return rows


def greedy(llm, prompts: list[list[int]], new_tokens: int) -> float:
    """Seconds for llama.cpp to decode exactly `new_tokens` greedily after each prompt, one prompt at a time."""
    began = time.perf_counter()
    for tokens in prompts:
        llm.reset()  # no prefix reuse between prompts: each pays its prefill, as in transformers' loop
        for count, _ in enumerate(llm.generate(tokens, top_k=1, temp=0.0), 1):  # the generator never stops at EOS
            if count == new_tokens:
                break
    return time.perf_counter() - began


def decode_row(runtime: str, dtype: str, weight_bytes: int, rate: float, weights_read: float, limits: dict) -> dict:
    """`rate` tokens/s against the bound of reading the weights once a token, at the rate their own memory was read
    (`weights_read`, bytes/s) and at the machine's best (a VM's memory comes at more than one speed)."""
    bound = weights_read / weight_bytes
    return {"runtime": runtime, "dtype": dtype, "weights_mib": weight_bytes / 2**20, "ms_per_token": round(1000 / rate, 1),
            "tokens_per_s": round(rate, 1), "weights_read_bytes_per_s": round(weights_read),
            "bound_tokens_per_s": round(bound, 1), "share_of_bound": round(rate / bound, 3),
            "share_of_machine_bound": round(rate * weight_bytes / limits["bandwidth_bytes_per_s"], 3)}


def row(method: str, tokens: int, seconds: float) -> dict:
    return {"method": method, "tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}


if __name__ == "__main__":
    main()

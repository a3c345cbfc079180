"""Generation throughput: lifecycle's batched generation vs a per-example `generate` loop,
same model, prompts and greedy decoding of a fixed number of new tokens.

    .venv/bin/python benchmarks/bench_generate.py --examples 16 --new-tokens 64      (make bench runs it)

Writes benchmarks/results/generate.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import CACHE, SHAPES, machine_limits, random_model, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--shape", choices=SHAPES, help="a randomly initialised model of this real shape instead of --model")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from lifecycle.core import data, generate, models, prompts
    from lifecycle.core.config import build

    path = random_model(args.shape, CACHE / args.shape) if args.shape else models.resolve(args.model)
    what = f"randomly initialised {args.shape}-shaped model" if args.shape else args.model
    model, tokenizer = models.load_model(path, "auto", args.dtype), models.load_tokenizer(path)
    val = data.load(build(data.DataConfig, {}))["validation"].select(range(args.examples))
    texts, _ = prompts.format_prompts(tokenizer, prompts.TEMPLATES["summarize"], list(val["dialogue"]))
    config = generate.generation_config({"do_sample": False, "min_new_tokens": args.new_tokens}, "bench",
                                        args.new_tokens)
    generate.generate(model, tokenizer, texts[:2], config, batch_size=2)  # warm-up: first calls pay one-off costs

    rows = [loop(model, tokenizer, texts, config, prompts)]
    for batch_size in args.batch_sizes:
        began = time.perf_counter()
        out = generate.generate(model, tokenizer, texts, config, batch_size=batch_size)
        seconds = time.perf_counter() - began
        rows.append(row(f"lifecycle batched (batch {batch_size})", sum(g.new_tokens for g in out), seconds))
    for r in rows:
        r["speedup_vs_loop"] = round(r["tokens_per_s"] / rows[0]["tokens_per_s"], 2)
    table = ["| method | new tokens | seconds | tokens/s | speed-up |", "|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} | {r['speedup_vs_loop']}x |" for r in rows]
    # At batch 1 every decoded token reads every weight once: the measured copy bandwidth over the weights'
    # bytes bounds the per-example loop (which also pays its prompt's prefill).
    limits = machine_limits(str(model.device))
    bound = limits["bandwidth_bytes_per_s"] / model.get_memory_footprint()
    rows[0]["bandwidth_bound_tokens_per_s"], rows[0]["machine_limits"] = round(bound, 1), limits
    table += ["", f"Memory bandwidth measured in this run: {limits['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, so at batch 1 "
              f"the bound is {bound:,.0f} tokens/s for {model.get_memory_footprint() / 2**20:,.0f} MiB of weights; the "
              f"per-example loop reaches {rows[0]['tokens_per_s'] / bound:.1%} of it."]
    write_results(f"generate-{args.shape}" if args.shape else "generate", rows, table,
                  f"python benchmarks/bench_generate.py --examples {args.examples} --new-tokens {args.new_tokens} "
                  f"--batch-sizes {' '.join(map(str, args.batch_sizes))} --dtype {args.dtype}"
                  + (f" --shape {args.shape}" if args.shape else ""),
                  f"{what} ({args.dtype}, device {model.device}), {args.examples} demo validation dialogues, "
                  f"`summarize` template with the chat template, greedy, exactly {args.new_tokens} new tokens each")


def loop(model, tokenizer, texts, config, prompts) -> dict:
    """The baseline: one `model.generate` call per example, as in the classic lab."""
    tokens, began = 0, time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            enc = prompts.tokenize(tokenizer, [text], return_tensors="pt").to(model.device)
            out = model.generate(**enc, max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
            tokens += out.shape[1] - enc["input_ids"].shape[1]
    return row("per-example generate loop", tokens, time.perf_counter() - began)


def row(method: str, tokens: int, seconds: float) -> dict:
    return {"method": method, "tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}


if __name__ == "__main__":
    main()

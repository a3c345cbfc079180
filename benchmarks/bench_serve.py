"""Serving latency and throughput: `python -m lifecycle serve`'s server (transformers serve, the run's prompt
applied server-side) under 1, 4 and 16 concurrent clients, against lifecycle's in-process batched generation
at batch 1, 4 and 16, on the same prompts and a fixed number of greedy new tokens.

    .venv/bin/python benchmarks/bench_serve.py --requests 16 --new-tokens 32      (make bench runs it)

Writes benchmarks/results/serve.{json,md}. The model is the packaged SmolLM2-135M-Instruct (its
safetensors import), float32 on CPU; the server runs in this process, its clients in threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    from lifecycle import serve
    from lifecycle.core import data, generate, models, prompts, quiet
    from lifecycle.core.artifacts import Prompt
    from lifecycle.core.config import build

    quiet.setup()
    path = models.resolve(args.model)
    model, tokenizer = models.load_model(path, "cpu", "float32"), models.load_tokenizer(path)
    dialogues = list(data.load(build(data.DataConfig, {}))["validation"].select(range(args.requests))["dialogue"])
    prompt = Prompt(template=prompts.TEMPLATES["summarize"], generation={"do_sample": False})
    texts, _ = prompts.format_prompts(tokenizer, prompt.template, dialogues)
    config = generate.with_special_tokens(generate.generation_config(
        {"do_sample": False, "min_new_tokens": args.new_tokens}, "bench", args.new_tokens), model, tokenizer)
    generate.generate(model, tokenizer, texts[:2], config, batch_size=2)  # warm-up: first calls pay one-off costs

    rows = []
    for batch in args.concurrency:
        began = time.perf_counter()
        out = generate.generate(model, tokenizer, texts, config, batch_size=batch, desc=f"in-process batch {batch}")
        rows.append(row(f"in-process batched generation (batch {batch})", batch, sum(g.new_tokens for g in out),
                        time.perf_counter() - began, [g.latency_s for g in out]))
    del model
    with tempfile.TemporaryDirectory() as tmp:
        folder = serve.serving_folder(Path(path), prompt, Path(tmp) / "model")
        server = serve.start(folder, "127.0.0.1", args.port, "cpu")
        try:
            rows += [served(args, str(folder), dialogues, config, n) for n in args.concurrency]
        finally:
            server.kill_server()
    table = ["| method | concurrency | requests | new tokens | seconds | tokens/s | latency mean s | latency max s |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['concurrency']} | {args.requests} | {r['tokens']} | {r['seconds']} | "
              f"{r['tokens_per_s']} | {r['latency_mean_s']} | {r['latency_max_s']} |" for r in rows]
    write_results("serve", rows, table,
                  f"python benchmarks/bench_serve.py --requests {args.requests} --new-tokens {args.new_tokens} "
                  f"--concurrency {' '.join(map(str, args.concurrency))}",
                  f"{args.model} (float32, CPU), {args.requests} demo validation dialogues, `summarize` template with "
                  f"the chat template (applied server-side for the server), greedy, exactly {args.new_tokens} new "
                  "tokens each; in-process latency is the wall time of the batch a prompt was in")


def served(args, model_id: str, dialogues: list[str], config, concurrency: int) -> dict:
    """`concurrency` clients sending the requests through the official openai client, all at once."""
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="none", max_retries=0, timeout=600)
    # a fixed output length, as in-process: the request's generation_config replaces the model's
    fixed = json.dumps({k: config.to_dict()[k] for k in ("do_sample", "max_new_tokens", "min_new_tokens",
                                                         "eos_token_id", "pad_token_id")})

    def ask(dialogue: str) -> tuple[int, float]:
        began = time.perf_counter()
        reply = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": dialogue}],
                                               extra_body={"generation_config": fixed})
        return reply.usage.completion_tokens, time.perf_counter() - began

    ask(dialogues[0])  # warm-up
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(ask, dialogues))
    return row("lifecycle serve + openai client", concurrency, sum(t for t, _ in results), time.perf_counter() - began,
               [s for _, s in results])


def row(method: str, concurrency: int, tokens: int, seconds: float, latencies: list[float]) -> dict:
    return {"method": method, "concurrency": concurrency, "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1), "latency_mean_s": round(statistics.mean(latencies), 2),
            "latency_max_s": round(max(latencies), 2)}


if __name__ == "__main__":
    main()

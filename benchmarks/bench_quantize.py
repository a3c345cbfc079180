"""Deployment variants: weight memory, tokens/s and latency of int8 and NF4 against the
unquantized model in fp32 and in bf16, measured by the quantize stage's own harness
(`quantization.build` + `measure.measure`: saved, reloaded, generated from).

    .venv/bin/python benchmarks/bench_quantize.py --examples 8        (make bench runs it)

The model is the packaged SmolLM2-135M-Instruct (`--model` takes any reference). The
target of issue 9 is NF4 weight memory <= 0.35x bf16. Writes benchmarks/results/quantize.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import ROOT, write_results

VARIANTS = [("reference", "float32"), ("reference", "bfloat16"), ("int8", "float32"), ("nf4", "float32"),
            ("nf4-nodq", "float32"), ("nf4", "bfloat16")]  # (quantize variant, dtype of what is not quantized)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--examples", type=int, default=8)
    args = parser.parse_args()

    from lifecycle.config import load
    from lifecycle.core import data, measure, models, quantization
    from lifecycle.core.artifacts import Prompt
    from lifecycle.core.prompts import TEMPLATES
    from lifecycle.core.toxicity import load_scorer

    path = models.resolve(args.model)
    prompt = Prompt(template=TEMPLATES["summarize"], generation={"do_sample": False, "max_new_tokens": 64})
    rows = []
    for name, dtype in VARIANTS:
        cfg = load(str(ROOT / "configs" / "offline.yaml"), [f"models.dtype={dtype}", f"quantize.limit={args.examples}"])
        device = models.pick_device(cfg.models.device)
        test = data.load(cfg.data, cfg.run.seed)["test"].select(range(args.examples))
        texts, gen_config = measure.latency_prompts(cfg, path, prompt, test)
        folder = Path(tempfile.mkdtemp()) / name
        with quantization.quiet_bitsandbytes():
            quantize_s = quantization.build(path, name, cfg.quantize, dtype, device, folder, gen_config, prompt)
            row, _ = measure.measure(cfg, folder, name, device, texts, test, prompt, gen_config,
                                     load_scorer(cfg.metrics.toxicity))
        rows.append({"variant": name, "dtype": row["dtype"], "device": device, "memory_mb": row["memory_mb"],
                     "disk_mb": row["disk_mb"], "tokens_per_s": row["tokens_per_s"],
                     "latency_ms_per_token": row["latency_ms_per_token"], "quantize_s": quantize_s,
                     "rougeL": round(row["scores"]["rougeL"]["value"], 3)})
        print(rows[-1], flush=True)
    fp32, bf16 = rows[0]["memory_mb"], rows[1]["memory_mb"]
    table = ["| variant | dtype of the rest | weight MiB | vs fp32 | vs bf16 | tokens/s (batch 8) | ms/token (batch 1) | "
             f"ROUGE-L ({args.examples} test) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        r["vs_fp32"], r["vs_bf16"] = round(r["memory_mb"] / fp32, 3), round(r["memory_mb"] / bf16, 3)
        table.append(f"| {r['variant']} | {r['dtype']} | {r['memory_mb']:.1f} | {r['vs_fp32']:.2f}x | {r['vs_bf16']:.2f}x | "
                     f"{r['tokens_per_s']} | {r['latency_ms_per_token']} | {r['rougeL']} |")
    write_results("quantize", rows, table, f"python benchmarks/bench_quantize.py --examples {args.examples}",
                  f"{args.model} (packaged), zero-shot `summarize` prompt, greedy, 64 new tokens at most, "
                  f"first {args.examples} demo test dialogues; bitsandbytes variants as the quantize stage builds them")


if __name__ == "__main__":
    main()

"""Inference dtype: the demo test split (or a recipe's splits) generated in float32 and in bfloat16 by the
same model, with the recipe's zero-shot prompt and greedy decoding; the paired ROUGE-L difference
with its bootstrap CI, and the speed ratio, measured in the same run.

    nice -n 19 env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_dtype.py      (make bench runs it)
    ... bench_dtype.py --config configs/dialogsum-local.yaml --splits train validation test
                                  (all 500 real DialogSum dialogues of ../shared/data: a CI ~2.5x narrower)

`models.dtype: auto` is bfloat16 where the hardware computes it natively (a GPU that supports
it, a CPU with AVX512-BF16 or AMX), which this measures the cost of. The target of issue 19: the
95% CI of the paired ROUGE-L difference within ±0.01. The two dtypes take turns batch by batch
(the same length-sorted batches the project's generation makes), so a busy machine slows both
alike; the speed ratio is also given as the median over batches of the two back-to-back runs'
ratio, which a burst of other work on the machine moves less. Writes benchmarks/results/dtype.{json,md}
(dtype-<run.name>.* for another --config).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from common import ROOT, write_results

DTYPES = ("float32", "bfloat16")
TARGET = 0.01  # |ROUGE-L difference| the CI must stay within
DEFAULT_CONFIG = "configs/offline.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the recipe whose data, prompt and decoding run")
    parser.add_argument("--splits", nargs="+", default=["test"], choices=["train", "validation", "test"],
                        help="the splits to generate for (the model is not trained on any: every split is held out)")
    parser.add_argument("--examples", type=int, default=None, help="the first N dialogues (default: all of the splits)")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: the recipe's scope.max_new_tokens")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from datasets import concatenate_datasets

    from lifecycle.config import load
    from lifecycle.core import data, generate, metrics, models, prompts

    cfg = load(str(ROOT / args.config))
    device, path = models.pick_device(args.device), models.resolve(args.model)
    splits = data.load(cfg.data, seed=cfg.run.seed)
    test = concatenate_datasets([splits[name] for name in args.splits])
    test = test.select(range(min(args.examples or len(test), len(test))))
    tokenizer = models.load_tokenizer(path)
    new_tokens = args.new_tokens or cfg.scope.max_new_tokens
    texts, _ = prompts.format_prompts(tokenizer, prompts.TEMPLATES[cfg.select.template], list(test[cfg.data.input_column]),
                                      context=models.context_length(models.load_config(path), tokenizer),
                                      max_new_tokens=new_tokens)
    config = generate.generation_config(cfg.select.generation, "select.generation", new_tokens)
    loaded = {dtype: models.load_model(path, device, dtype) for dtype in DTYPES}
    for model in loaded.values():  # warm-up: first calls pay one-off costs (kernels, allocator)
        generate.generate(model, tokenizer, texts[:2], config, batch_size=2, desc="warm-up")
    load_before = os.getloadavg()[0]
    out = interleaved(loaded, tokenizer, texts, config, cfg.evaluate.batch_size, cfg.run.seed)
    per_batch = [batch_rate(out["bfloat16"], k) / batch_rate(out["float32"], k) for k in sorted({g.batch for g in out["float32"]})]

    references = list(test[cfg.data.target_column])
    rouge = {d: metrics.per_example([g.prediction for g in out[d]], references)["rougeL"] for d in DTYPES}
    paired = metrics.paired_test(rouge["float32"], rouge["bfloat16"], cfg.metrics.bootstrap, cfg.run.seed)
    rows = [{"dtype": d, "examples": len(texts), "new_tokens": sum(g.new_tokens for g in out[d]),
             "seconds": round(sum({g.batch: g.latency_s for g in out[d]}.values()), 1),
             "tokens_per_s": round(generate.tokens_per_second(out[d]), 2),
             "rougeL": vars(metrics.bootstrap_ci(rouge[d], cfg.metrics.bootstrap, cfg.run.seed)),
             "weight_mib": round(loaded[d].get_memory_footprint() / 2**20, 1)} for d in DTYPES]
    same = sum(a.prediction == b.prediction for a, b in zip(out["float32"], out["bfloat16"]))
    verdict = {"rougeL_delta_bf16_minus_fp32": paired, "identical_predictions": same,
               "speed_ratio_bf16_over_fp32": round(rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"], 2),
               "speed_ratio_per_batch": {"median": round(statistics.median(per_batch), 2),
                                         "min": round(min(per_batch), 2), "max": round(max(per_batch), 2)},
               "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2),
                                     "cpus": os.cpu_count()},
               "within_target": -TARGET <= paired["low"] and paired["high"] <= TARGET,
               "cpu": cpu_model(), "cpu_bf16_flags": cpu_bf16_flags(),
               "auto_resolves_to": str(models.inference_dtype("auto", device)).removeprefix("torch.")}
    table = ["| dtype | weight MiB | new tokens | seconds | tokens/s | ROUGE-L [95% CI] |", "|---|---|---|---|---|---|"]
    table += [f"| {r['dtype']} | {r['weight_mib']} | {r['new_tokens']} | {r['seconds']} | {r['tokens_per_s']} | "
              f"{r['rougeL']['value']:.4f} [{r['rougeL']['low']:.4f}, {r['rougeL']['high']:.4f}] |" for r in rows]
    table += ["", f"Paired ROUGE-L difference, bf16 - fp32: {paired['delta']:+.4f} [95% CI {paired['low']:+.4f}, "
              f"{paired['high']:+.4f}], p = {paired['p_value']:.3f} (approximate randomisation); target: CI within "
              f"±{TARGET} — {'met' if verdict['within_target'] else 'missed'}. Identical predictions: {same} of "
              f"{len(texts)}. Speed, bf16 over fp32: {verdict['speed_ratio_bf16_over_fp32']}x tokens/s over the split; per batch "
              f"(back to back) median {verdict['speed_ratio_per_batch']['median']}x, range "
              f"{verdict['speed_ratio_per_batch']['min']}-{verdict['speed_ratio_per_batch']['max']}x. Load average "
              f"{verdict['load_average_1min']['before']} before, {verdict['load_average_1min']['after']} after, on "
              f"{verdict['load_average_1min']['cpus']} CPUs.", "",
              f"CPU: {verdict['cpu']} (bf16 flags: {', '.join(verdict['cpu_bf16_flags']) or 'none'}); "
              f"`models.dtype: auto` resolves to {verdict['auto_resolves_to']} on {device} here."]
    command = "nice -n 19 env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_dtype.py" + (
        f" --config {args.config}" if args.config != DEFAULT_CONFIG else "") + (
        f" --splits {' '.join(args.splits)}" if args.splits != ["test"] else "") + (
        f" --examples {args.examples}" if args.examples else "") + (f" --new-tokens {args.new_tokens}" if args.new_tokens else "")
    write_results("dtype" if args.config == DEFAULT_CONFIG else f"dtype-{cfg.run.name}", [*rows, verdict], table, command,
                  f"{args.model} on {device}, {cfg.data.path} {'+'.join(args.splits)} ({len(texts)} dialogues), {args.config}'s zero-shot "
                  f"`{cfg.select.template}` prompt with the chat template, greedy, up to {new_tokens} new tokens, batches "
                  f"of {cfg.evaluate.batch_size} (the two dtypes alternating batch by batch); ROUGE-L per example "
                  f"and the paired bootstrap of lifecycle.core.metrics ({cfg.metrics.bootstrap} resamples)")


def interleaved(loaded: dict, tokenizer, texts: list[str], config, batch_size: int, seed: int) -> dict[str, list]:
    """Each dtype's generations for `texts`, in the batches `generate.generate` would make (longest
    first), the dtypes taking turns per batch, in alternating order."""
    from lifecycle.core import generate, prompts

    lengths = [len(ids) for ids in prompts.tokenize(tokenizer, texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    out: dict[str, list] = {d: [None] * len(texts) for d in loaded}
    for k, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start:start + batch_size]
        for dtype in (DTYPES if k % 2 == 0 else DTYPES[::-1]):
            made = generate.generate(loaded[dtype], tokenizer, [texts[i] for i in batch], config, batch_size, seed,
                                     desc=f"{dtype} batch {k + 1}")
            for i, g in zip(batch, made):
                g.batch = k  # one batch number per batch of the whole split, for tokens_per_second
                out[dtype][i] = g
    return out


def batch_rate(generations: list, k: int) -> float:
    """New tokens per second of batch `k`."""
    batch = [g for g in generations if g.batch == k]
    return sum(g.new_tokens for g in batch) / batch[0].latency_s


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def cpu_bf16_flags() -> list[str]:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return sorted(set(flags) & {"avx512_bf16", "amx_bf16"})


if __name__ == "__main__":
    main()

"""Fine-tuning throughput: the finetune stage's trainer vs a plain `SFTTrainer` with default
settings, same model, data, LoRA and number of steps, each in a fresh process.

    .venv/bin/python benchmarks/bench_train.py --steps 8            (make bench runs it)

Measures training tokens/s (non-padding tokens seen / train runtime) and peak RSS, and
writes benchmarks/results/train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from common import CACHE, ROOT, SHAPES, gpu_peaks, machine_limits, mfu, random_model, write_results

EVERY_POSITION = "lifecycle offline recipe, LM head on every position"
COMPILED = "lifecycle offline recipe, torch.compile"
VARIANTS = {  # name -> overrides of configs/offline.yaml for the finetune stage's trainer
    "plain SFTTrainer (defaults)": [],
    "lifecycle offline recipe": [],
    "lifecycle offline recipe, fp32": ["finetune.training.bf16=false"],
    "lifecycle offline recipe, activations recomputed (TRL's checkpointing)": ["finetune.training.activation_checkpointing=true"],
    EVERY_POSITION: [],  # TRL's fused LM head as it is on a CPU: the prompt positions projected too
    "lifecycle offline recipe, bf16 base weights": ["models.dtype=bfloat16"],  # LoRA adapters stay fp32 (PEFT)
    "lifecycle offline recipe + packing": ["finetune.training.packing=true"],
    COMPILED: ["finetune.training.torch_compile=true"],  # inductor; each new batch length compiles again
}
# torch.compile only on request: on a 2-core CPU it costs minutes per step (docs/benchmarks.md)
DEFAULT_VARIANTS = [v for v in VARIANTS if v != COMPILED]


def measure(variant: str, steps: int, model: str, overrides: list[str]) -> dict:
    """One training run in this process; returns its throughput and memory."""
    from lifecycle.config import load
    from lifecycle import finetune
    from lifecycle.core import data, models, training
    from lifecycle.core.artifacts import Selection
    from lifecycle.core.prompts import TEMPLATES

    cfg = load(str(ROOT / "configs" / "offline.yaml"), [f"finetune.training.max_steps={steps}", f"models.candidates=[{model}]",
                                                        "finetune.training.eval_strategy=no", "run.report_to=none", *overrides])
    path = models.resolve(cfg.models.candidates[0])
    tokenizer = models.load_tokenizer(path)
    splits = data.load(cfg.data, cfg.run.seed)
    out = Path(tempfile.mkdtemp())
    if variant.startswith("plain"):
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer
        from lifecycle.core.prompts import training_example

        train = splits["train"].map(lambda r: training_example(tokenizer, TEMPLATES["summarize"], r["dialogue"], r["summary"]),
                                    remove_columns=splits["train"].column_names)
        trainer = SFTTrainer(model=path, train_dataset=train, processing_class=tokenizer,
                             # the LoRA of most recipes (and of this project before): dropout 0.05
                             peft_config=LoraConfig(task_type="CAUSAL_LM", **{**training.LORA, "lora_dropout": 0.05}),
                             args=SFTConfig(output_dir=str(out), use_cpu=True, max_steps=steps, report_to="none",
                                            include_num_input_tokens_seen="non_padding"))
    else:
        if variant == EVERY_POSITION:
            training.score_labelled_positions_only = lambda: None
        selection = Selection(selected=path, path=path, seq2seq=False, context_length=0, reason="", template="",
                              candidates=[])
        trainer = finetune.build_trainer(cfg, selection, TEMPLATES["summarize"], splits, tokenizer,
                                         SimpleNamespace(out=out, stage="finetune"))
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    args = trainer.args
    tokens_per_s = trainer.state.num_input_tokens_seen / seconds
    params = sum(p.numel() for p in trainer.model.parameters())
    return {"variant": variant, "steps": trainer.state.global_step, "tokens": int(trainer.state.num_input_tokens_seen),
            "seconds": round(seconds, 1), "tokens_per_s": round(tokens_per_s, 1),
            "parameters": params,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "settings": {"batch_size": args.per_device_train_batch_size, "bf16": args.bf16,
                         "packing": getattr(args, "packing", None), "max_length": getattr(args, "max_length", None)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="model reference to train")
    parser.add_argument("--shape", choices=SHAPES, help="train a randomly initialised model of this real shape instead")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=DEFAULT_VARIANTS,
                        help="the variants to run (the first is the baseline of the speed-ups); "
                        f"'{COMPILED}' runs only when named")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    model = random_model(args.shape, CACHE / args.shape) if args.shape else args.model
    if args.variant:
        print("RESULT " + json.dumps(measure(args.variant, args.steps, model, VARIANTS[args.variant])))
        return
    rows = []
    for variant in args.variants:
        done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--model", model, "--variant", variant],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.split("RESULT ", 1)[1]))
        print(rows[-1], flush=True)
    base = rows[0]["tokens_per_s"]
    limits = machine_limits("cuda" if gpu_peaks() else "cpu")  # after the runs, on the same idle machine
    peak = limits.get("datasheet_bf16_flops", limits["matmul_bfloat16_flops"])
    for row in rows:
        row["speedup_vs_plain"] = round(row["tokens_per_s"] / base, 2)
        row["mfu"], row["machine_limits"] = round(mfu(row["parameters"], row["tokens_per_s"], peak), 4), limits
    table = ["| variant | steps | tokens | seconds | tokens/s | speed-up | MFU (4·N) | peak RSS MiB | batch | bf16 | "
             "packing |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['variant']} | {r['steps']} | {r['tokens']:,} | {r['seconds']} | {r['tokens_per_s']} | "
              f"{r['speedup_vs_plain']}x | {r['mfu']:.1%} | {r['peak_rss_mb']:,} | "
              f"{r['settings']['batch_size']} | {r['settings']['bf16']} | {r['settings']['packing']} |" for r in rows]
    table += ["", f"Machine limits measured in this run: dense matmul {limits['matmul_bfloat16_flops'] / 1e12:.2f} TFLOP/s "
              f"in bf16, {limits['matmul_float32_flops'] / 1e12:.2f} in fp32; MFU is 4·N·tokens/s over "
              + ("the GPU's datasheet bf16 peak." if "datasheet_bf16_flops" in limits else "the measured bf16 rate.")]
    which = f"--shape {args.shape}" if args.shape else f"--model {args.model}"
    what = f"randomly initialised {args.shape}-shaped model (bf16 weights)" if args.shape else args.model
    write_results(f"train-{args.shape}" if args.shape else "train", rows, table,
                  f"python benchmarks/bench_train.py --steps {args.steps} {which}"
                  + ("" if args.variants == DEFAULT_VARIANTS else " --variants " + " ".join(f"'{v}'" for v in args.variants)),
                  f"{what}, demo train split, LoRA r=16 all-linear")


if __name__ == "__main__":
    main()

"""RL step cost: seconds per GRPO step and the share spent generating, for the rlhf stage's
trainer with TRL's default of one generation batch per optimizer step vs one generation
batch shared by two steps (`generation_batch_size` = 2 x the batch), each in a fresh process.

    .venv/bin/python benchmarks/bench_rl.py --steps 4              (make bench runs it)

The policy is the offline default's fine-tuned model when `runs/offline-default` has one,
else the packaged SmolLM2-135M-Instruct (same shapes, same cost). Times come from TRL's
own profiling blocks (`transformers.generate`, the reward functions), collected in process.
Writes benchmarks/results/rl.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from common import ROOT, write_results

VARIANTS = {  # name -> overrides of configs/offline.yaml's rlhf options
    "one generation batch per step (TRL default)": ["rlhf.training.generation_batch_size=8"],
    "one generation batch per 2 steps (offline recipe)": ["rlhf.training.generation_batch_size=16"],
}


def measure(variant: str, steps: int, overrides: list[str]) -> dict:
    from trl.extras import profiling

    from lifecycle import rlhf
    from lifecycle.config import load
    from lifecycle.core import data, models
    from lifecycle.core.artifacts import Prompt
    from lifecycle.core.prompts import TEMPLATES

    seconds = defaultdict(float)  # block name (without the "GRPOTrainer." prefix) -> total seconds

    def record(context, duration: float) -> None:
        seconds[context.name.split(".", 1)[-1]] += duration

    profiling.ProfilingContext._log_metrics = record
    cfg = load(str(ROOT / "configs" / "offline.yaml"), ["rlhf.algorithm=grpo", f"rlhf.training.max_steps={steps}", "rlhf.training.save_steps=1000",
                                                        "rlhf.training.per_device_train_batch_size=8", "run.report_to=none", *overrides])
    sft = ROOT / "runs" / "offline-default" / "finetune" / "model"
    policy = str(sft) if sft.is_dir() else models.resolve(cfg.models.candidates[0])
    tokenizer = models.load_tokenizer(policy)
    train = data.load(cfg.data, cfg.run.seed)["train"]
    trainer, _ = rlhf.build_trainer(cfg, policy, Prompt(TEMPLATES["summarize"], {}), train, tokenizer,
                                    SimpleNamespace(out=Path(tempfile.mkdtemp()), stage="rlhf"))
    runtime = trainer.train().metrics["train_runtime"]
    generate_s = seconds["transformers.generate"]
    reward_s = sum(v for k, v in seconds.items() if k in {"non_toxicity", "faithfulness", "length"})
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    args = trainer.args
    return {"variant": variant, "policy": "offline-default SFT model" if sft.is_dir() else "packaged base model",
            "steps": trainer.state.global_step, "seconds": round(runtime, 1), "s_per_step": round(runtime / steps, 1),
            "generate_s": round(generate_s, 1), "generate_share": round(generate_s / runtime, 3),
            "reward_s": round(reward_s, 2), "mean_completion_tokens": round(sum(lengths) / len(lengths), 1),
            "settings": {"batch_size": args.per_device_train_batch_size, "num_generations": args.num_generations,
                         "generation_batch_size": args.generation_batch_size,
                         "max_completion_length": args.max_completion_length, "bf16": args.bf16}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(measure(args.variant, args.steps, VARIANTS[args.variant])))
        return
    rows = []
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--variant", variant],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.split("RESULT ", 1)[1]))
        print(rows[-1], flush=True)
    base = rows[0]["s_per_step"]
    for row in rows:
        row["speedup"] = round(base / row["s_per_step"], 2)
    table = ["| variant | steps | s/step | speed-up | generating | share generating | rewards s | completion tokens | "
             "batch | generations/prompt | generation batch |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['variant']} | {r['steps']} | {r['s_per_step']} | {r['speedup']}x | {r['generate_s']} s | "
              f"{r['generate_share']:.0%} | {r['reward_s']} | {r['mean_completion_tokens']} | {r['settings']['batch_size']} | "
              f"{r['settings']['num_generations']} | {r['settings']['generation_batch_size']} |" for r in rows]
    write_results("rl", rows, table, f"python benchmarks/bench_rl.py --steps {args.steps}",
                  f"GRPO with the rlhf stage's trainer (configs/offline.yaml: LoRA r=16 on {rows[0]['policy']}, "
                  "heated train prompts, reward profanity-check + ROUGE-L + length)")


if __name__ == "__main__":
    main()

"""What finetune and rlhf share around their trainer: the arguments the run decides, where a killed
run resumes, and what is kept once training ends."""

from __future__ import annotations

import shutil

from lifecycle.core import artifacts, models, tracking
from lifecycle.core.artifacts import StageRun
from lifecycle.core.processes import is_main_process
from lifecycle.core.store import last_checkpoint, write_json

# The LoRA every trainer starts from (finetune, rlhf, reward_model; each config merges its options onto it).
# No dropout: on a CPU its random numbers on every adapter input cost more than the adapter's matmuls
# (docs/benchmarks.md: part of the offline recipe's 1.38x over TRL's defaults); set lora.lora_dropout for it.
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
CHECKPOINTS = "checkpoints"  # resume points in the working folder; removed once the stage's artifacts are saved


def arguments(cfg, run: StageRun) -> dict:
    """The trainer arguments the run decides (paths, seed, device, dtype, the trackers of run.report_to);
    the stage adds the YAML's options, which win."""
    device = models.pick_device(cfg.models.device)
    return {"output_dir": str(run.out / CHECKPOINTS), "seed": cfg.run.seed, "use_cpu": device == "cpu",
            "bf16": models.train_in_bf16(cfg.models.dtype, device), **tracking.trainer_arguments(cfg, run)}


RECIPE = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
          "lr_scheduler_type", "bf16", "packing", "train_sampling_strategy", "max_length", "activation_checkpointing")


def print_recipe(stage: str, args, lora: dict | None, source: dict) -> None:
    """One line of the settings that decide a training run's cost and result, as the trainer will use them, each
    marked with where it came from when that is not the library's default (`config`, `hardware`)."""
    def shown(key):
        mark = f" ({source[key]})" if key in source else ""
        return f"{key}={getattr(args, key)}{mark}"

    keys = [k for k in RECIPE if hasattr(args, k) and not (k == "max_steps" and args.max_steps <= 0)]
    adapter = f"LoRA r={lora['r']} alpha={lora.get('lora_alpha')} dropout={lora.get('lora_dropout')}, " if lora else ""
    print(f"[{stage}] recipe: {adapter}" + ", ".join(shown(k) for k in keys))


def score_labelled_positions_only() -> None:
    """Make TRL's fused LM head (SFT, DPO, GRPO) project only the positions that carry a label on a CPU too.
    TRL does so on Triton devices and scores every position elsewhere, for the fixed tile shapes a compiler
    such as Neuron's needs; a CPU runs eagerly, where the prompt positions (~80% of a dialogue-summary batch)
    are thrown-away vocabulary projections: half of a finetune step (docs/benchmarks.md). Same loss and
    gradients (tests/test_training.py). A TRL without the switch is left as it is."""
    from trl.trainer import utils

    scores_every_position = getattr(utils, "_use_triton", None)
    if scores_every_position is None or getattr(scores_every_position, "lifecycle", False):
        return

    def compact(device) -> bool:
        return device.type == "cpu" or scores_every_position(device)

    compact.lifecycle, compact.__wrapped__ = True, scores_every_position
    utils._use_triton = compact


def resume_point(run: StageRun) -> str | None:
    """The last complete checkpoint a killed attempt of this stage left, if any."""
    resume = last_checkpoint(run.out / CHECKPOINTS)
    if resume:
        print(f"[{run.stage}] resuming from {resume}")
    return resume


def finish(trainer, run: StageRun, tokenizer, base: str, prompt: artifacts.Prompt, adapter: bool, dtype: str):
    """Save what was trained and what downstream stages load: on every process the trainer's own save
    (which gathers sharded weights under FSDP or ZeRO-3); on the main process `model/` with the adapter
    merged into `base` (a plain `from_pretrained` folder), the tokenizer, the prompt it was trained for and
    the log history (the trainer wrote its TensorBoard files to `logs/` itself). The checkpoints go. The log
    history on the main process, None on the others."""
    tracking.restore_environment()
    trainer.save_model(str(run.out / ("adapter" if adapter else "model")))
    if not is_main_process():
        return None
    if adapter:
        tokenizer.save_pretrained(run.out / "adapter")
        models.merge_adapter(base, run.out / "adapter", dtype).save_pretrained(run.out / artifacts.MODEL_DIR)
    tokenizer.save_pretrained(run.out / artifacts.MODEL_DIR)
    artifacts.write(run.out, artifacts.TrainedModel(prompt))
    history = trainer.state.log_history
    write_json(run.out / "train_log.json", history)
    shutil.rmtree(run.out / CHECKPOINTS, ignore_errors=True)
    return history

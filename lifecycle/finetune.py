"""Stage 4, finetune: instruction fine-tuning of the selected model with LoRA.

Causal models train with TRL's `SFTTrainer` on prompt-completion examples (loss on
the completion only), built with the template the prompt stage chose; seq2seq
models (FLAN-T5) with transformers' `Seq2SeqTrainer`. PEFT's `LoraConfig` and TRL's
`SFTConfig` options pass straight through from the YAML. Checkpoints live in the
stage's working folder, so the same command resumes after a kill. The same module
runs on CPU and under `accelerate launch` on one or many GPUs.

    python -m lifecycle finetune --config configs/offline.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m lifecycle finetune --config configs/flan-t5-dialogsum.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.finetune …` is `python -m lifecycle finetune …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "finetune"); runpy.run_module("lifecycle", run_name="__main__")

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lifecycle.core import artifacts, data, models, prompts, training
from lifecycle.core.artifacts import StageResult, StageRun
from lifecycle.core.config import option, require
from lifecycle.core.errors import ConfigError
from lifecycle.core.library_options import CHECK_ONLY, check_types, library_object
from lifecycle.core.plots import figure, save
from lifecycle.core.store import write_json
from lifecycle.core.training import LORA

TRAINING = {"num_train_epochs": 2, "learning_rate": 2e-4, "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1, "lr_scheduler_type": "cosine", "warmup_steps": 5,
            "logging_steps": 5, "eval_strategy": "epoch", "save_steps": 20, "save_total_limit": 2,
            "max_length": 1024}
# What the hardware decides unless `training` says otherwise (`_by_hardware`).
GPU = {"packing": True}  # TRL's padding-free packing, no compute spent on padding
CPU = {"packing": False, "train_sampling_strategy": "group_by_length"}  # little padding, no packed mask
# TRL's activation checkpointing stays on everywhere: on a 2-core CPU keeping the activations instead bought 5% of
# tokens/s for 2.2x the peak memory (docs/benchmarks.md)


@dataclass
class FinetuneConfig:
    method: Literal["lora", "qlora", "full"] = option("lora", help="lora: train low-rank adapters; qlora: the same on a "
                                                      "4-bit NF4 base (GPU, bitsandbytes); full: train every weight (for comparison).")
    lora: dict[str, Any] = option(LORA, help="peft.LoraConfig options (r, lora_alpha, lora_dropout, target_modules: "
                                  "a list of module names or `all-linear`), merged onto these defaults.")
    training: dict[str, Any] = option(TRAINING, help="trl.SFTConfig options (transformers TrainingArguments plus "
                                      "packing, max_length, ...), merged onto these defaults; seq2seq models use "
                                      "the TrainingArguments part.")
    early_stopping_patience: int | None = option(None, help="Stop after this many evaluations without a lower eval "
                                                 "loss (needs an eval_strategy); null trains for the full schedule.")

    def __post_init__(self):
        require(self.early_stopping_patience is None or self.early_stopping_patience > 0, "early_stopping_patience",
                self.early_stopping_patience, "a positive number of evaluations or null")

    def library_checks(self):
        """PEFT's and TRL's own checks of `lora` and `training`, before the stage runs (core/library_options.py)."""
        from peft import LoraConfig
        from trl import SFTConfig

        lora_keys = {f.name for f in dataclasses.fields(LoraConfig)}
        sft_keys = {f.name for f in dataclasses.fields(SFTConfig)}
        for key in self.lora:
            require(key in lora_keys, f"lora.{key}", self.lora[key], "a peft.LoraConfig option such as r, lora_alpha, "
                    "lora_dropout or target_modules")
        for key in self.training:
            require(key in sft_keys and key not in {"output_dir", "seed"}, f"training.{key}", self.training[key],
                    "a trl.SFTConfig option such as learning_rate, num_train_epochs, per_device_train_batch_size "
                    "(output_dir and seed come from the run)")
        # Types first (`learning_rate: abc`), so the range checks below compare numbers.
        lora, train = check_types(LoraConfig, self.lora, "lora"), check_types(SFTConfig, self.training, "training")
        require(isinstance(lora.get("r"), int) and lora["r"] > 0, "lora.r", lora.get("r"), "a positive rank such as 8, 16 or 32")
        require(lora.get("lora_alpha") is None or lora["lora_alpha"] > 0, "lora.lora_alpha", lora.get("lora_alpha"),
                "a positive scaling")
        require(lora.get("lora_dropout") is None or 0 <= lora["lora_dropout"] < 1, "lora.lora_dropout",
                lora.get("lora_dropout"), "a probability in [0, 1)")
        require(train.get("learning_rate") is None or train["learning_rate"] > 0, "training.learning_rate",
                train.get("learning_rate"), "a positive learning rate")
        for key in ("num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps"):
            require(train.get(key) is None or train[key] > 0, f"training.{key}", train.get(key), "a positive number")
        # The libraries' own checks, now rather than after the upstream stages and the model load.
        library_object(LoraConfig, self.lora, "lora")
        library_object(SFTConfig, self.trainer_options(), "training", **CHECK_ONLY)

    def trainer_options(self) -> dict[str, Any]:
        """The `training` options plus what early stopping needs (the best checkpoint, saved at each evaluation)."""
        options = dict(self.training)
        if self.early_stopping_patience:
            options |= {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss",
                        "save_strategy": options.get("eval_strategy", "epoch")}
        return options


def run(cfg, run: StageRun) -> StageResult:
    selection = run.read("select", artifacts.Selection)
    best = run.read("prompt", artifacts.Prompt)
    splits = data.load(cfg.data, seed=cfg.run.seed)
    tokenizer = models.load_tokenizer(selection.path)
    trainer = build_trainer(cfg, selection, best.template, splits, tokenizer, run)
    result = trainer.train(resume_from_checkpoint=training.resume_point(run))
    trainable, total = _parameter_counts(trainer.model)
    # the prompt this model was trained for: the instruction and decoding, no few-shot turns, and scope's length
    # budget: a shorter cap the sweep chose to cut the base model's rambling would truncate a model trained to
    # write reference-length summaries and stop
    prompt = artifacts.Prompt(template=best.template, generation={**best.generation,
                                                                  "max_new_tokens": cfg.scope.max_new_tokens})
    history = training.finish(trainer, run, tokenizer, selection.path, prompt, cfg.finetune.method != "full",
                              cfg.models.dtype)
    if history is None:
        return StageResult(metrics={})
    _plot_loss(history, run.out / "loss.png")
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    metrics = {"method": cfg.finetune.method, "train_loss": round(result.training_loss, 4),
               "eval_loss": round(evals[-1], 4) if evals else None, "steps": trainer.state.global_step,
               "trainable_parameters": trainable, "total_parameters": total,
               "trainable_percent": round(100 * trainable / total, 3), "train_runtime_s": round(result.metrics["train_runtime"], 1),
               "train_tokens_per_s": round(trainer.state.num_input_tokens_seen / result.metrics["train_runtime"], 1)}
    write_json(run.out / "metrics.json", metrics)
    return StageResult(metrics=metrics, summary=f"{cfg.finetune.method}: {trainable:,} of {total:,} parameters trained "
                       f"({metrics['trainable_percent']}%), train loss {metrics['train_loss']}, eval loss {metrics['eval_loss']}")


def build_trainer(cfg, selection: artifacts.Selection, template: str, splits, tokenizer, run: StageRun):
    """The configured trainer for the selected model (also what benchmarks/bench_train.py times)."""
    build = _seq2seq_trainer if selection.seq2seq else _sft_trainer
    return build(cfg, selection, template, splits, tokenizer, run)


def _training_args(cfg, run: StageRun, cls):
    """The library's own arguments object: what the run and the hardware decide, then the YAML's `training`
    options, which win. The recipe in use is printed, each setting with where it came from."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    options = {k: v for k, v in cfg.finetune.trainer_options().items() if k in allowed}
    hardware = {k: v for k, v in _by_hardware(models.pick_device(cfg.models.device)).items() if k in allowed}
    args = cls(**{**training.arguments(cfg, run), **hardware, "include_num_input_tokens_seen": "non_padding", **options})
    bf16 = "hardware" if cfg.models.dtype == "auto" else "models.dtype"
    training.print_recipe(run.stage, args, cfg.finetune.lora if cfg.finetune.method != "full" else None,
                          {**dict.fromkeys(hardware, "hardware"), "bf16": bf16, **dict.fromkeys(options, "config")})
    return args


def _by_hardware(device: str) -> dict:
    """Pack on a CUDA GPU, where padding-free attention makes packed batches cheaper; elsewhere batches of
    similar lengths: on a CPU, SDPA under a packed block-diagonal mask takes its slow path (docs/benchmarks.md:
    0.65x the unpacked recipe's tokens/s)."""
    return GPU if device.startswith("cuda") else CPU


def _sft_trainer(cfg, selection, template, splits, tokenizer, run):
    from trl import SFTConfig, SFTTrainer

    training.score_labelled_positions_only()

    def examples(ds):  # one per row, or per assistant turn of a chat row (loss on assistant tokens only)
        return ds.map(lambda rows: prompts.training_batch(tokenizer, template, rows[cfg.data.input_column],
                                                          rows[cfg.data.target_column]),
                      batched=True, remove_columns=ds.column_names)

    return SFTTrainer(model=_load_for_training(cfg, selection), args=_training_args(cfg, run, SFTConfig),
                      train_dataset=examples(splits["train"]), eval_dataset=examples(splits["validation"]),
                      processing_class=tokenizer, peft_config=_lora(cfg, "CAUSAL_LM"), callbacks=_callbacks(cfg))


def _seq2seq_trainer(cfg, selection, template, splits, tokenizer, run):
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    max_length = cfg.finetune.training.get("max_length", 1024)

    def tokenize(ds):
        def encode(row):
            text = prompts.format_prompt(tokenizer, template, row[cfg.data.input_column]).text
            features = tokenizer(text, truncation=True, max_length=max_length)
            features["labels"] = tokenizer(text_target=row[cfg.data.target_column], truncation=True,
                                           max_length=max_length)["input_ids"]
            return features

        return ds.map(encode, remove_columns=ds.column_names)

    model = _load_for_training(cfg, selection)
    lora = _lora(cfg, "SEQ_2_SEQ_LM")
    return Seq2SeqTrainer(model=get_peft_model(model, lora) if lora else model,
                          args=_training_args(cfg, run, Seq2SeqTrainingArguments),
                          train_dataset=tokenize(splits["train"]), eval_dataset=tokenize(splits["validation"]),
                          data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer,
                          callbacks=_callbacks(cfg))


def _load_for_training(cfg, selection):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    cls = AutoModelForSeq2SeqLM if selection.seq2seq else AutoModelForCausalLM
    device = models.pick_device(cfg.models.device)
    dtype = models.pick_dtype(cfg.models.dtype, device)
    if cfg.finetune.method != "qlora":
        return cls.from_pretrained(selection.path, dtype=dtype)
    if not device.startswith("cuda"):
        raise ConfigError("finetune.method", "qlora", "lora or full on this machine: QLoRA's 4-bit base needs a CUDA "
                          "GPU with bitsandbytes; on CPU use method=lora")
    from accelerate import PartialState

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
    # One whole copy of the 4-bit base per process, on that process's GPU (DDP; QLoRA does not shard).
    return cls.from_pretrained(selection.path, quantization_config=quant, dtype=dtype,
                               device_map={"": PartialState().local_process_index})


def _lora(cfg, task_type: str):
    from peft import LoraConfig

    return None if cfg.finetune.method == "full" else LoraConfig(task_type=task_type, **cfg.finetune.lora)


def _callbacks(cfg) -> list:
    from transformers import EarlyStoppingCallback

    patience = cfg.finetune.early_stopping_patience
    return [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []


def _parameter_counts(model) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _plot_loss(history: list[dict], path) -> None:
    fig, ax = figure(width=6.5, height=4)
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss (validation)")
    ax.set(xlabel="step", ylabel="loss (completion tokens)", title="fine-tuning loss")
    if train or evals:  # a run shorter than logging_steps logged no loss
        ax.legend()
    save(fig, path)


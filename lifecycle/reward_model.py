"""Train a toxicity classifier on your own labels, for the RLHF reward or the toxicity metric.

    python -m lifecycle.reward_model --data labels.jsonl --out models/toxicity-rm

The labels are pointwise (a text, toxic or not), so this is a sequence-classification
head trained with cross-entropy by transformers' `Trainer`; TRL's `RewardTrainer`
needs preference pairs (chosen/rejected), which a toxicity label set does not have.
The backbone (by default the policy's own, SmolLM2-135M-Instruct) gets LoRA adapters
and the head is trained in full (PEFT's SEQ_CLS task); the adapters are merged on
save, so `--out` is a plain save_pretrained folder with the labels `non_toxic` and
`toxic`. Use it as

    rlhf:
      reward: {model: models/toxicity-rm, nontoxic_label: non_toxic}

`--out` also gets `reward_model.json`: the data (path, sha256, counts), the options,
and the ROC AUC on held-out labels (with profanity-check's on the same texts, the
baseline) and on the demo probe set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle.core import models
from lifecycle.core.config import build, option, parse_value, require
from lifecycle.core.errors import ConfigError, LifecycleError
from lifecycle.core.library_options import library_object
from lifecycle.core.store import sha256_file, write_json
from lifecycle.core.toxicity import ScorerConfig, SequenceClassifier, load_labelled, load_scorer, probe_check, ranking
from lifecycle.core.training import LORA

LABELS = {0: "non_toxic", 1: "toxic"}


@dataclass
class RewardModelConfig:
    data: str = option(help="Labelled jsonl: one {\"text\": ..., \"toxic\": 0 or 1} per line (e.g. "
                       "../shared/data/toxicity/davidson2017.sample.jsonl).")
    out: str = option(help="Folder to write the classifier to (must not exist yet).")
    base: str = option("SmolLM2-135M-Instruct", help="Backbone: packaged name, hub id or local save_pretrained folder.")
    holdout: float = option(0.2, help="Share of the labels kept out of training to measure ROC AUC on.")
    epochs: float = option(1.0, help="Passes over the training labels.")
    learning_rate: float = option(2e-4, help="AdamW learning rate (LoRA adapters and the head).")
    batch_size: int = option(16, help="Texts per training step.")
    max_length: int = option(96, help="Tokens of each text trained on; longer texts are truncated.")
    lora: dict[str, Any] = option(LORA, help="peft.LoraConfig options of the backbone's adapters, merged onto these defaults.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps.")
    seed: int = option(42, help="Seed of the held-out split and of training.")

    def __post_init__(self):
        require(0 < self.holdout < 1, "holdout", self.holdout, "a share between 0 and 1, e.g. 0.2")
        require(self.epochs > 0, "epochs", self.epochs, "a positive number of passes")
        require(self.learning_rate > 0, "learning_rate", self.learning_rate, "a positive learning rate")
        require(self.batch_size > 0, "batch_size", self.batch_size, "a positive batch size")
        require(self.max_length > 0, "max_length", self.max_length, "a positive number of tokens")
        from peft import LoraConfig

        library_object(LoraConfig, self.lora, "lora")  # PEFT's own checks at the command line, not after the model load


def train(cfg: RewardModelConfig) -> dict:
    """Train, check on held-out labels and the probe set, and write `cfg.out` atomically."""
    out = Path(cfg.out)
    if out.exists():
        raise LifecycleError(f"`{out}` already exists; the reward model is written to a new folder so nothing "
                             "already there is overwritten. Choose another --out, or delete that folder first.")
    rows = load_labelled(cfg.data)
    train_rows, held = _split(rows, cfg.holdout, cfg.seed)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    history = _fit(cfg, train_rows, partial)
    # Checked as saved (reloaded from disk, as the rlhf stage will load it), against profanity-check on the same texts.
    scorer = SequenceClassifier(ScorerConfig(model=str(partial), nontoxic_label=LABELS[0], max_length=cfg.max_length))
    scorer.name = str(out)  # where it will be used from, not the partial folder it is checked in
    labels, texts = np.array([int(r["toxic"]) for r in held]), [r["text"] for r in held]
    report = {"base": cfg.base, "data": {"path": cfg.data, "sha256": sha256_file(Path(cfg.data)),
                                         "train": len(train_rows), "holdout": len(held)},
              "options": dataclasses.asdict(cfg), "labels": LABELS, "train_loss": history,
              "holdout_check": ranking(labels, scorer.score(texts)),
              "holdout_baseline": {"scorer": "profanity-check", **ranking(labels, load_scorer("profanity-check").score(texts))},
              "probe_check": probe_check(scorer)}
    report["probe_check"].pop("histogram")
    write_json(partial / "reward_model.json", report)
    partial.rename(out)
    return report


def _split(rows: list[dict], holdout: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Stratified: the same share of each class held out."""
    rng = np.random.default_rng(seed)
    train_rows, held = [], []
    for label in (0, 1):
        members = [r for r in rows if int(r["toxic"]) == label]
        order = rng.permutation(len(members))
        cut = max(1, round(holdout * len(members)))
        held += [members[i] for i in order[:cut]]
        train_rows += [members[i] for i in order[cut:]]
    if not train_rows or len({int(r["toxic"]) for r in train_rows}) < 2:
        raise LifecycleError(f"{len(rows)} labelled texts leave too few of each class to train on after "
                             "holding out a share; give more labels or a smaller --holdout.")
    return [train_rows[i] for i in rng.permutation(len(train_rows))], held


def _fit(cfg: RewardModelConfig, rows: list[dict], folder: Path) -> list[dict]:
    """LoRA + head with Trainer; the merged classifier and tokenizer saved to `folder`."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    path = models.resolve(cfg.base)
    tokenizer = models.load_tokenizer(path)  # pads with EOS where the backbone has no pad token
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **cfg.lora))
    dataset = Dataset.from_list([{"text": r["text"], "label": int(r["toxic"])} for r in rows]).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=cfg.max_length), batched=True,
        remove_columns=["text"])
    device = models.pick_device(cfg.device)
    args = TrainingArguments(output_dir=str(folder / "checkpoints"), num_train_epochs=cfg.epochs,
                             learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.batch_size,
                             lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=5, save_strategy="no",
                             report_to=[], seed=cfg.seed, use_cpu=device == "cpu",
                             bf16=models.train_in_bf16("auto", device),
                             train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    trainer.model.merge_and_unload().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]


def main(argv: list[str] | None = None) -> int:
    from lifecycle.core import quiet

    quiet.setup()  # third-party notes filtered, as in `python -m lifecycle`; LIFECYCLE_VERBOSE=1 shows them
    parser = argparse.ArgumentParser(prog="python -m lifecycle.reward_model", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(RewardModelConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, help=f.metadata["help"],
                            required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    text = {"data", "out", "base"}  # paths and names stay strings ("1e-4.jsonl" is a file name, not a number)
    values = {k: v if k in text else parse_value(v) for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    try:
        report = train(build(RewardModelConfig, values))
    except ConfigError as err:
        print(f"error: --{err.key.replace('_', '-')} {json.dumps(err.value)} is not allowed; expected {err.allowed}.",
              file=sys.stderr)
        return 2
    except LifecycleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[lifecycle] reward model written to {values['out']}: held-out ROC AUC "
          f"{report['holdout_check']['roc_auc']:.3f} (profanity-check {report['holdout_baseline']['roc_auc']:.3f}), "
          f"demo probe ROC AUC {report['probe_check']['roc_auc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

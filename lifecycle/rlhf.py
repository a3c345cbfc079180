"""Stage 5, rlhf: make the fine-tuned model less toxic with RL against a toxicity reward.

TRL's `GRPOTrainer` (or `RLOOTrainer`) samples several summaries per training prompt
and pushes the policy towards the better ones of each group; `DPOTrainer` instead
learns from preference pairs built once and ranked by the same reward
(`lifecycle.core.preference`), which is what moves a policy on a CPU. The reward is
non-toxicity plus two guards against reward hacking — faithfulness (ROUGE-L against
the reference summary) and length (near the reference's) — so an empty or generic
summary is never the optimum. The policy is a fresh LoRA adapter on the merged SFT
model: with the adapter disabled that model *is* the KL reference (`beta`), so no
second copy is held in memory, and the SFT weights stay untouched. Before/after
numbers on the held-out test split (and its slice) come with CIs and a paired test.

    python -m lifecycle rlhf --config configs/offline.yaml
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m lifecycle.rlhf …` is `python -m lifecycle rlhf …`, before this copy defines anything
    import runpy, sys; sys.argv.insert(1, "rlhf"); runpy.run_module("lifecycle", run_name="__main__")

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from lifecycle.core import artifacts, data, generate, models, preference, prompts, rl_health, rl_report, splice, training
from lifecycle.core.artifacts import StageResult, StageRun
from lifecycle.core.config import option, require, to_dict
from lifecycle.core.errors import StageError
from lifecycle.core.library_options import CHECK_ONLY, check_types, library_object
from lifecycle.core.preference import PairsConfig
from lifecycle.core.processes import is_main_process
from lifecycle.core.rewards import WEIGHTS, rewards
from lifecycle.core.splice import SpliceConfig
from lifecycle.core.store import write_json
from lifecycle.core.toxicity import ScorerConfig, load_scorer, probe_check
from lifecycle.core.training import LORA

TRAINING = {"max_steps": 40, "learning_rate": 1e-5, "per_device_train_batch_size": 8, "num_generations": 4,
            "max_completion_length": 64, "beta": 0.05, "temperature": 0.9, "logging_steps": 1, "save_steps": 10,
            "save_total_limit": 2}
PREFERENCE = {"learning_rate": 1e-4, "beta": 0.1, "num_train_epochs": 1, "per_device_train_batch_size": 8,
              "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 2, "gradient_checkpointing": False,
              "logging_steps": 1, "save_steps": 4, "save_total_limit": 2}


@dataclass
class RlhfConfig:
    enabled: bool = option(True, help="Run RL at all; false leaves the stage out, and evaluate and quantize use the "
                           "fine-tuned model.")
    algorithm: Literal["grpo", "rloo", "dpo"] = option("grpo", help="TRL trainer: grpo (GRPOTrainer), rloo "
                                                       "(RLOOTrainer), or dpo (DPOTrainer on reward-ranked pairs built "
                                                       "once, see pairs: no generation per step).")
    reward: str | ScorerConfig = option("profanity-check", help="Toxicity scorer behind the non_toxicity term: a "
                                        "built-in name (profanity-check) or {model: <classifier>, nontoxic_label: "
                                        "<label>} (see lifecycle.core.toxicity.ScorerConfig).")
    reward_output: Literal["probability", "logit"] = option("probability", help="non_toxicity term: probability "
                                                            "(1 - toxicity, in [0, 1]) or logit (log-odds of not "
                                                            "toxic, unbounded; spreads apart texts that are all fairly clean).")
    reward_check: str | None = option(None, help="Labelled jsonl ({text, toxic: 0/1} per line) the reward is checked on "
                                      "before RL (ROC AUC, accuracy, histograms); default the demo probe set.")
    min_reward_auc: float = option(0.75, help="Stop before RL when the reward ranks the labelled set below this ROC AUC: "
                                   "a reward that cannot tell toxic from clean would waste the RL compute.")
    weights: dict[str, float] = option(WEIGHTS, help="Reward = sum of weight x term: non_toxicity (see reward_output), "
                                       "faithfulness (ROUGE-L F1 to the reference), length (1 near the reference's "
                                       "length, falling to 0 at half or double, -1 when empty).")
    prompts: Literal["all", "slice"] = option("slice", help="Train on every train prompt, or only the data's slice "
                                              "(data.slice_column, the demo's heated dialogues), where the toxicity is.")
    lora: dict[str, Any] = option(LORA, help="peft.LoraConfig options of the RL adapter, merged onto these defaults.")
    training: dict[str, Any] = option(TRAINING, help="trl.GRPOConfig / RLOOConfig options for grpo and rloo (beta "
                                      "is the KL coefficient), merged onto these defaults.")
    preference: dict[str, Any] = option(PREFERENCE, help="trl.DPOConfig options for dpo (beta: how far the policy may "
                                        "move from the SFT model), merged onto these defaults.")
    pairs: PairsConfig = option(default_factory=PairsConfig, help="How dpo's preference pairs are built "
                                "(see lifecycle.core.preference).")
    splice: SpliceConfig | None = option(None, help="Splice one toxic turn (a pool written for the project) into a "
                                         "share of the training prompts, e.g. {share: 0.5}: RL needs prompts where "
                                         "the SFT model still copies insults. References stay the neutral originals.")
    kl_budget: float = option(0.1, help="KL to the SFT model past which the run is flagged as drifting (reward hacking).")
    eval_limit: int | None = option(None, help="Test examples for the before/after comparison (default: all).")
    batch_size: int = option(generate.BATCH_SIZE, help="Prompts generated together for the before/after comparison.")
    seed: int | None = option(None, help="Seed of this stage's randomness (which turn is spliced where, the pairs, the "
                              "adapter's init, the order of training); null: run.seed. Another value repeats RL on the "
                              "same fine-tuned model and data split: a replicate.")

    def __post_init__(self):
        for term in self.weights:
            require(term in WEIGHTS, f"weights.{term}", self.weights[term], f"one of the reward terms {list(WEIGHTS)}")
        require(0 <= self.min_reward_auc <= 1, "min_reward_auc", self.min_reward_auc, "a ROC AUC between 0 and 1")
        require(self.algorithm != "dpo" or self.pairs.source != "counterfactual" or self.splice is not None,
                "pairs.source", self.pairs.source,
                "`sampled`, or set rlhf.splice (counterfactual pairs copy the spliced turn into the own summary)")

    def library_checks(self):
        """PEFT's and TRL's own checks of `lora` and the algorithm's options, before the stage runs
        (core/library_options.py): now rather than after finetune."""
        from peft import LoraConfig

        for key in self.lora:
            require(key in {f.name for f in dataclasses.fields(LoraConfig)}, f"lora.{key}", self.lora[key],
                    "a peft.LoraConfig option such as r, lora_alpha, lora_dropout or target_modules")
        if self.algorithm == "dpo":
            self._check_dpo()
        else:
            self._check_rl()
        lora = check_types(LoraConfig, self.lora, "lora")
        require(isinstance(lora.get("r"), int) and lora["r"] > 0, "lora.r", lora.get("r"), "a positive rank")
        library_object(LoraConfig, self.lora, "lora")

    def _check_rl(self):
        from trl import GRPOConfig, RLOOConfig

        cls = GRPOConfig if self.algorithm == "grpo" else RLOOConfig
        train = _trainer_options(cls, self.training, "training", "beta, num_generations, learning_rate, max_steps")
        generations, batch = train.get("num_generations") or 2, train.get("per_device_train_batch_size") or 8
        require(generations >= 2, "training.num_generations", generations,
                "at least 2 samples per prompt (group-relative advantages need a group)")
        require(batch % generations == 0, "training.per_device_train_batch_size", batch,
                f"a multiple of num_generations ({generations})")
        library_object(cls, self.training, "training", **CHECK_ONLY)

    def _check_dpo(self):
        from trl import DPOConfig

        _trainer_options(DPOConfig, self.preference, "preference", "beta, learning_rate, num_train_epochs")
        library_object(DPOConfig, self.preference, "preference", **CHECK_ONLY)


def _trainer_options(cls, options: dict, key: str, examples: str) -> dict:
    """Options of a TRL config class by name and type; beta and learning rate in range."""
    known = {f.name for f in dataclasses.fields(cls)}
    for name in options:
        require(name != "seed", f"{key}.seed", options[name], "rlhf.seed, which seeds the whole stage")
        require(name in known and name != "output_dir", f"{key}.{name}", options[name],
                f"a trl.{cls.__name__} option such as {examples}")
    typed = check_types(cls, options, key)  # types first (`learning_rate: abc`), so the ranges compare numbers
    require(typed.get("beta") is None or typed["beta"] >= 0, f"{key}.beta", typed.get("beta"), "a KL coefficient >= 0")
    require(typed.get("learning_rate") is None or typed["learning_rate"] > 0, f"{key}.learning_rate",
            typed.get("learning_rate"), "a positive learning rate")
    return typed


def not_applicable(cfg, run: StageRun) -> str | None:
    """Why this run has no RL stage: switched off, or a policy TRL's RL trainers cannot train."""
    if not cfg.rlhf.enabled:
        return "rlhf.enabled is false; evaluate and quantize use the fine-tuned model"
    if models.is_seq2seq(run.read("finetune", artifacts.TrainedModel).path):
        return ("the fine-tuned model is seq2seq and TRL's RL trainers are causal-only; evaluate and quantize use "
                "the fine-tuned model (pick a causal model in models.candidates or select.pin to run RL)")
    return None


def references(cfg) -> dict:
    """What RL reads beyond data and models: the reward's scorer and the labelled set it is checked on."""
    from lifecycle.core import fingerprints
    from lifecycle.core.toxicity import probe_path

    refs = {"reward": fingerprints.of_scorer(cfg.rlhf.reward),
            "reward_check": fingerprints.of_file(probe_path(cfg.rlhf.reward_check))}
    if cfg.rlhf.splice:
        refs["splice_pool"] = fingerprints.of_file(splice.POOL if cfg.rlhf.splice.pool == "demo" else cfg.rlhf.splice.pool)
    return refs


def run(cfg, run: StageRun) -> StageResult:
    sft = run.read("finetune", artifacts.TrainedModel)
    splits = data.load(cfg.data, seed=cfg.run.seed)
    check = _check_reward(cfg, run)
    tokenizer = models.load_tokenizer(sft.path)
    trainer, pairs = build_trainer(cfg, sft.path, sft.prompt, splits["train"], tokenizer, run)
    trainer.train(resume_from_checkpoint=training.resume_point(run))
    history = training.finish(trainer, run, tokenizer, sft.path, sft.prompt, True, cfg.models.dtype)
    if history is None:
        return StageResult(metrics={})
    rl_report.plot_training(history, run.out / "rl_curves.png")
    health = {"signals": rl_health.summary(history), "red_flags": rl_health.red_flags(
        history, cfg.rlhf.training.get("max_completion_length", 256), cfg.rlhf.kl_budget)}
    for flag in health["red_flags"]:
        print(f"[lifecycle] rlhf warning: {flag}")
    trained = {"reward_check": check, "health": health, **({"pairs": pairs} if pairs else {})}
    comparison = rl_report.before_after(cfg, sft.path, str(run.out / artifacts.MODEL_DIR), sft.prompt, splits["test"],
                                        judges(cfg), trained, run.out)
    return StageResult(metrics={**comparison["headline"], "reward_roc_auc": check["roc_auc"],
                                "red_flags": len(health["red_flags"])}, summary=comparison["summary"])


def seed(cfg) -> int:
    """The seed of what RL draws; the data split and the measurements keep run.seed, so replicates compare alike."""
    return cfg.run.seed if cfg.rlhf.seed is None else cfg.rlhf.seed


def judges(cfg) -> dict:
    """The scorers the before/after is judged by: the run's toxicity metric, and the reward too when it
    is another scorer. A judge that is the reward itself cannot tell detox from a Goodhart win."""
    found = {"judge": cfg.metrics.toxicity}
    if to_dict(cfg.rlhf.reward) != to_dict(cfg.metrics.toxicity):
        found["reward"] = cfg.rlhf.reward
    return found


def _check_reward(cfg, run: StageRun) -> dict:
    """Rank the labelled set with the reward's scorer; stop before RL if it cannot tell toxic from clean."""
    check = probe_check(load_scorer(cfg.rlhf.reward), cfg.rlhf.reward_check)
    if is_main_process():
        write_json(run.out / "reward_check.json", check)
        rl_report.plot_reward_check(check, run.out / "reward_check.png")
        print(f"[lifecycle] reward {check['scorer']} on {check['data']}: ROC AUC {check['roc_auc']:.3f}, "
              f"accuracy at 0.5 {check['accuracy_at_0.5']:.3f}")
    if check["roc_auc"] < cfg.rlhf.min_reward_auc:
        raise StageError(f"the reward `{check['scorer']}` ranks the labelled set {check['data']} at ROC AUC "
                         f"{check['roc_auc']:.3f}, below rlhf.min_reward_auc {cfg.rlhf.min_reward_auc}: RL against it "
                         "would optimise noise. Use a better scorer (rlhf.reward, e.g. one trained with "
                         "`python -m lifecycle.reward_model`), or lower min_reward_auc if you accept it.")
    return check


def build_trainer(cfg, policy: str, prompt: artifacts.Prompt, train, tokenizer, run: StageRun):
    """The TRL trainer for rlhf.algorithm, and (dpo) what its pairs are."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    training.score_labelled_positions_only()
    device = models.pick_device(cfg.models.device)
    common = {**training.arguments(cfg, run), "seed": seed(cfg)}
    peft_config = LoraConfig(task_type="CAUSAL_LM", **cfg.rlhf.lora)
    if cfg.rlhf.algorithm == "dpo":
        pairs = _preference_pairs(cfg, policy, prompt, train, tokenizer, device, run)
        model = models.load_model(policy, device, cfg.models.dtype, training=True).train()
        return DPOTrainer(model=model, args=DPOConfig(**{**common, **cfg.rlhf.preference}), peft_config=peft_config,
                          train_dataset=Dataset.from_list(pairs["rows"]), processing_class=tokenizer), pairs["summary"]
    dialogues, references, _ = _training_prompts(cfg, train)
    dataset = Dataset.from_dict({"prompt": [prompts.training_example(tokenizer, prompt.template, d, r)["prompt"]
                                            for d, r in zip(dialogues, references)], "reference": references})
    funcs, weights = rewards(load_scorer(cfg.rlhf.reward), cfg.rlhf.weights, cfg.rlhf.reward_output)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if cfg.rlhf.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**{**common, **cfg.rlhf.training}, reward_weights=weights)
    model = models.load_model(policy, device, cfg.models.dtype, training=True).train()
    return trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tokenizer,
                       peft_config=peft_config), None


def _preference_pairs(cfg, policy: str, prompt: artifacts.Prompt, train, tokenizer, device: str, run: StageRun) -> dict:
    """DPO's pairs, built once with the SFT model (and reread when a killed run resumes)."""
    saved = run.out / "pairs.json"
    if saved.exists():
        return json.loads(saved.read_text())
    pairs = preference.build(cfg, policy, prompt, tokenizer, device, *_training_prompts(cfg, train, cfg.rlhf.pairs.prompts),
                             seed=seed(cfg))
    if is_main_process():
        write_json(saved, pairs)
        s = pairs["summary"]
        print(f"[lifecycle] rlhf pairs: {s['kept']} from {s['prompts']} prompts ({s['dropped']} dropped by the "
              f"reward), built in {s['seconds']:.0f} s")
    return pairs


def _training_prompts(cfg, train, limit: int | None = None):
    """The RL training dialogues (all, or the slice; the `limit` shortest), toxic turns spliced in when
    configured, their references, and the turn each one got."""
    if cfg.rlhf.prompts == "slice" and cfg.data.slice_column:
        train = train.filter(lambda row: row[cfg.data.slice_column])
    dialogues, references = list(train[cfg.data.input_column]), list(train[cfg.data.target_column])
    keep = preference.shortest(dialogues, limit)
    dialogues, references = [dialogues[i] for i in keep], [references[i] for i in keep]
    if not cfg.rlhf.splice:
        return dialogues, references, [None] * len(dialogues)
    spliced, turns = splice.spliced(dialogues, splice.load_pool(cfg.rlhf.splice.pool), cfg.rlhf.splice.share, seed(cfg))
    return spliced, references, turns


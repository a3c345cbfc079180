"""Stage 5, rlhf: make the fine-tuned model less toxic with RL against a toxicity reward.

TRL's `GRPOTrainer` (or `RLOOTrainer`) samples several summaries per training prompt
and pushes the policy towards the better ones of each group. The reward is
non-toxicity plus two guards against reward hacking — faithfulness (ROUGE-L against
the reference summary) and length (near the reference's) — so an empty or generic
summary is never the optimum. The policy is a fresh LoRA adapter on the merged SFT
model: with the adapter disabled that model *is* the KL reference (`beta`), so no
second copy is held in memory, and the SFT weights stay untouched. Before/after
numbers on the held-out test split (and its slice) come with CIs and a paired test.

    python -m lifecycle rlhf --config configs/offline.yaml
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lifecycle.core import data, degenerate, metrics, models, prompts, rl_health, splice, systems
from lifecycle.core.splice import SpliceConfig
from lifecycle.core.config import CHECK_ONLY, check_types, library_object, option, require, to_dict
from lifecycle.core.errors import StageError
from lifecycle.core.pipeline import StageResult, StageRun, is_main_process
from lifecycle.core.plots import figure, save
from lifecycle.core.store import last_checkpoint, write_json
from lifecycle.core.toxicity import ScorerConfig, load_scorer, non_toxicity_logit, probe_check

UPSTREAM = ("scope", "finetune")
SECTIONS = ("data", "models", "scope", "metrics", "rlhf")
RESUMABLE = True  # the RL adapter's checkpoints survive a kill
DISTRIBUTED = True  # under `accelerate launch` every process trains
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
TRAINING = {"max_steps": 40, "learning_rate": 1e-5, "per_device_train_batch_size": 8, "num_generations": 4,
            "max_completion_length": 64, "beta": 0.05, "temperature": 0.9, "logging_steps": 1, "save_steps": 10,
            "save_total_limit": 2}
WEIGHTS = {"non_toxicity": 1.0, "faithfulness": 1.0, "length": 0.5}


@dataclass
class RlhfConfig:
    enabled: bool = option(True, help="Run RL at all; false leaves the stage out, and evaluate and quantize use the "
                           "fine-tuned model.")
    algorithm: Literal["grpo", "rloo"] = option("grpo", help="TRL trainer: grpo (GRPOTrainer) or rloo (RLOOTrainer).")
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
    training: dict[str, Any] = option(TRAINING, help="trl.GRPOConfig / RLOOConfig options (beta is the KL coefficient), "
                                      "merged onto these defaults.")
    splice: SpliceConfig | None = option(None, help="Splice one toxic turn (a pool written for the project) into a "
                                         "share of the training prompts, e.g. {share: 0.5}: RL needs prompts where "
                                         "the SFT model still copies insults. References stay the neutral originals.")
    kl_budget: float = option(0.1, help="KL to the SFT model past which the run is flagged as drifting (reward hacking).")
    eval_limit: int | None = option(None, help="Test examples for the before/after comparison (default: all).")
    batch_size: int = option(8, help="Prompts generated together for the before/after comparison.")

    def __post_init__(self):
        from peft import LoraConfig
        from trl import GRPOConfig, RLOOConfig

        for key in self.lora:
            require(key in {f.name for f in dataclasses.fields(LoraConfig)}, f"lora.{key}", self.lora[key],
                    "a peft.LoraConfig option such as r, lora_alpha, lora_dropout or target_modules")
        for term in self.weights:
            require(term in WEIGHTS, f"weights.{term}", self.weights[term], f"one of the reward terms {list(WEIGHTS)}")
        cls = GRPOConfig if self.algorithm == "grpo" else RLOOConfig
        known = {f.name for f in dataclasses.fields(cls)}
        for key in self.training:
            require(key in known and key not in {"output_dir", "seed"}, f"training.{key}", self.training[key],
                    f"a trl.{cls.__name__} option such as beta, num_generations, learning_rate, max_steps")
        # Types first (`learning_rate: abc`), so the range checks below compare numbers.
        train = check_types(cls, self.training, "training")
        require(train.get("beta") is None or train["beta"] >= 0, "training.beta", train.get("beta"), "a KL coefficient >= 0")
        require(train.get("learning_rate") is None or train["learning_rate"] > 0, "training.learning_rate",
                train.get("learning_rate"), "a positive learning rate")
        generations, batch = train.get("num_generations") or 2, train.get("per_device_train_batch_size") or 8
        require(generations >= 2, "training.num_generations", generations,
                "at least 2 samples per prompt (group-relative advantages need a group)")
        require(batch % generations == 0, "training.per_device_train_batch_size", batch,
                f"a multiple of num_generations ({generations})")
        lora = check_types(LoraConfig, self.lora, "lora")
        require(isinstance(lora.get("r"), int) and lora["r"] > 0, "lora.r", lora.get("r"), "a positive rank")
        require(0 <= self.min_reward_auc <= 1, "min_reward_auc", self.min_reward_auc, "a ROC AUC between 0 and 1")
        # The libraries' own checks, now rather than after finetune and the policy load.
        library_object(LoraConfig, self.lora, "lora")
        library_object(cls, self.training, "training", **CHECK_ONLY)


def not_applicable(cfg, run: StageRun) -> str | None:
    """Why this run has no RL stage: switched off, or a policy TRL's RL trainers cannot train."""
    if not cfg.rlhf.enabled:
        return "rlhf.enabled is false; evaluate and quantize use the fine-tuned model"
    if models.is_seq2seq(str(run.upstream("finetune") / "model")):
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
    sft = run.upstream("finetune")
    prompt = json.loads((sft / "prompt.json").read_text())
    splits = data.load(cfg.data, seed=cfg.run.seed)
    check = _check_reward(cfg, run)
    tokenizer = models.load_tokenizer(str(sft / "model"))
    trainer = _trainer(cfg, str(sft / "model"), prompt["template"], splits["train"], tokenizer, run)
    checkpoints = run.out / "checkpoints"
    resume = last_checkpoint(checkpoints)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(run.out / "adapter"))  # on every process: gathers sharded weights under FSDP/ZeRO-3
    if not is_main_process():
        return StageResult(metrics={})
    from lifecycle.finetune import merge_adapter

    merge_adapter(str(sft / "model"), run.out / "adapter", cfg.models.dtype).save_pretrained(run.out / "model")
    tokenizer.save_pretrained(run.out / "model")
    write_json(run.out / "prompt.json", prompt)
    history = trainer.state.log_history
    write_json(run.out / "train_log.json", history)
    _plot_training(history, run.out / "rl_curves.png")
    shutil.move(checkpoints / "runs", run.out / "logs")
    shutil.rmtree(checkpoints, ignore_errors=True)
    health = {"signals": rl_health.summary(history), "red_flags": rl_health.red_flags(
        history, cfg.rlhf.training.get("max_completion_length", 256), cfg.rlhf.kl_budget)}
    for flag in health["red_flags"]:
        print(f"[lifecycle] rlhf warning: {flag}")
    comparison = _before_after(cfg, str(sft / "model"), str(run.out / "model"), prompt, splits["test"], check, health, run)
    return StageResult(metrics={**comparison["headline"], "reward_roc_auc": check["roc_auc"],
                                "red_flags": len(health["red_flags"])}, summary=comparison["summary"])


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
        _plot_reward_check(check, run.out / "reward_check.png")
        print(f"[lifecycle] reward {check['scorer']} on {check['data']}: ROC AUC {check['roc_auc']:.3f}, "
              f"accuracy at 0.5 {check['accuracy_at_0.5']:.3f}")
    if check["roc_auc"] < cfg.rlhf.min_reward_auc:
        raise StageError(f"the reward `{check['scorer']}` ranks the labelled set {check['data']} at ROC AUC "
                         f"{check['roc_auc']:.3f}, below rlhf.min_reward_auc {cfg.rlhf.min_reward_auc}: RL against it "
                         "would optimise noise. Use a better scorer (rlhf.reward, e.g. one trained with "
                         "`python -m lifecycle.reward_model`), or lower min_reward_auc if you accept it.")
    return check


def rewards(scorer, weights: dict[str, float], output: str = "probability"):
    """The reward terms as TRL reward functions (completions in, one float each out) and their weights."""

    def text(completion) -> str:  # conversational datasets give message lists
        return completion[-1]["content"] if isinstance(completion, list) else completion

    def non_toxicity(completions, **_):
        toxicity = scorer.score([text(c) for c in completions])
        return (non_toxicity_logit(toxicity) if output == "logit" else 1.0 - toxicity).tolist()

    def faithfulness(completions, reference, **_):
        return metrics.per_example([text(c) or " " for c in completions], reference)["rougeL"].tolist()

    def length(completions, reference, **_):
        return [length_reward(text(c), r) for c, r in zip(completions, reference)]

    terms = {"non_toxicity": non_toxicity, "faithfulness": faithfulness, "length": length}
    chosen = [name for name in terms if weights.get(name, WEIGHTS[name]) != 0]
    return [terms[n] for n in chosen], [float(weights.get(n, WEIGHTS[n])) for n in chosen]


def length_reward(summary: str, reference: str) -> float:
    """1 within the reference's length, falling linearly in log-ratio to 0 at half or double; -1 if empty."""
    words, target = len(summary.split()), max(1, len(reference.split()))
    if words == 0:
        return -1.0
    return max(0.0, 1.0 - abs(math.log(words / target)) / math.log(2))


def _trainer(cfg, policy: str, template: str, train, tokenizer, run: StageRun):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    if cfg.rlhf.prompts == "slice" and cfg.data.slice_column:
        train = train.filter(lambda row: row[cfg.data.slice_column])
    dialogues, references = list(train[cfg.data.input_column]), list(train[cfg.data.target_column])
    if cfg.rlhf.splice:
        dialogues, _ = splice.spliced(dialogues, splice.load_pool(cfg.rlhf.splice.pool), cfg.rlhf.splice.share, cfg.run.seed)
    dataset = Dataset.from_dict({
        "prompt": [prompts.training_example(tokenizer, template, d, r)["prompt"] for d, r in zip(dialogues, references)],
        "reference": references})
    funcs, weights = rewards(load_scorer(cfg.rlhf.reward), cfg.rlhf.weights, cfg.rlhf.reward_output)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if cfg.rlhf.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    device = models.pick_device(cfg.models.device)
    args = config_cls(**{"output_dir": str(run.out / "checkpoints"), "report_to": ["tensorboard"], "seed": cfg.run.seed,
                         "use_cpu": device == "cpu", "bf16": models.train_in_bf16(cfg.models.dtype, device),
                         "reward_weights": weights, **cfg.rlhf.training})
    model = models.load_model(policy, device, cfg.models.dtype).train()
    return trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tokenizer,
                       peft_config=LoraConfig(task_type="CAUSAL_LM", **cfg.rlhf.lora))


def _before_after(cfg, sft_path: str, rl_path: str, prompt: dict, test, check: dict, health: dict,
                  run: StageRun) -> dict:
    """SFT vs RLHF on the held-out test split: toxicity and ROUGE-L with CIs and paired tests, under the
    run's toxicity metric (and the reward when it differs), degenerate-output checks, and RL health."""
    if cfg.rlhf.eval_limit:
        test = test.select(range(min(cfg.rlhf.eval_limit, len(test))))
    n_boot = cfg.metrics.bootstrap
    out = {name: systems.predict(cfg, path, prompt, test, cfg.rlhf.batch_size, f"rlhf {name}")
           for name, path in (("before", sft_path), ("after", rl_path))}
    scorers = {role: load_scorer(ref) for role, ref in judges(cfg).items()}
    scored = {name: systems.score(cfg, o, scorers["judge"], test, n_boot) for name, o in out.items()}
    paired = {"all": systems.compare(scored["before"], scored["after"], n_boot, cfg.run.seed)}
    mask = np.array(test[cfg.data.slice_column], dtype=bool) if cfg.data.slice_column else None
    if mask is not None and mask.any():
        paired["slice"] = systems.compare(scored["before"], scored["after"], n_boot, cfg.run.seed, mask)
    if "reward" in scorers:  # the optimised scorer's view, next to the judge's
        by_reward = {name: systems.score(cfg, o, scorers["reward"], test, n_boot) for name, o in out.items()}
        paired["all, by the reward"] = {"toxicity": systems.compare(by_reward["before"], by_reward["after"], n_boot,
                                                                    cfg.run.seed)["toxicity"]}
    result = {"test_examples": len(test), "scores": {k: {m: v for m, v in s.items() if m != "per_example"}
                                                      for k, s in scored.items()},
              "paired": paired, "examples": _examples(out, scored, mask),
              "judges": {role: scorer.name for role, scorer in scorers.items()}, "judge_is_reward": "reward" not in scorers,
              "degenerate": {name: degenerate.checks([g.prediction for g in o]) for name, o in out.items()},
              "health": health, "reward_check": {k: v for k, v in check.items() if k != "histogram"}}
    result["degenerate_worse"] = degenerate.worse(result["degenerate"]["before"], result["degenerate"]["after"])
    write_json(run.out / "before_after.json", result)
    (run.out / "rlhf.md").write_text(_report(result, cfg))
    where = "slice" if "slice" in paired else "all"
    tox, rouge = paired[where]["toxicity"], paired["all"]["rougeL"]
    headline = {"toxicity_delta": round(tox["delta"], 4), "toxicity_p": tox["p_value"], "toxicity_on": where,
                "judge_is_reward": result["judge_is_reward"], "degenerate_worse": result["degenerate_worse"],
                "rougeL_delta": round(rouge["delta"], 4), "rougeL_delta_low": round(rouge["low"], 4),
                "rougeL_delta_high": round(rouge["high"], 4)}
    summary = (f"toxicity ({where}) {systems.show_change(tox)} p={tox['p_value']:.3f}; "
               f"ROUGE-L {systems.show_change(rouge)}")
    return {"headline": headline, "summary": summary}


def _examples(out: dict, scored: dict, mask, n: int = 4) -> list[dict]:
    """The slice examples whose toxicity changed most, before and after."""
    order = np.argsort(np.array(scored["after"]["per_example"]["toxicity"]) - np.array(scored["before"]["per_example"]["toxicity"]))
    picked = [i for i in order if mask is None or mask[i]][:n]
    return [{"id": out["before"][i].id, "before": out["before"][i].prediction, "after": out["after"][i].prediction,
             "toxicity_before": scored["before"]["per_example"]["toxicity"][i],
             "toxicity_after": scored["after"]["per_example"]["toxicity"][i]} for i in picked]


def _report(result: dict, cfg) -> str:
    lines = [f"# RLHF before/after on the test split ({result['test_examples']} examples)", "",
             "| model | toxicity mean | share toxic | ROUGE-L |", "|---|---|---|---|"]
    for name, s in result["scores"].items():
        sc = s["scores"]
        lines.append(f"| {name} | {systems.show_ci(sc['toxicity_mean'])} | {sc['toxicity_share']['value']:.2f} | {systems.show_ci(sc['rougeL'])} |")
    lines += ["", "## Paired change (after - before): bootstrap 95% CI, approximate-randomisation p-value", "", "| examples | metric | change [95% CI] | p-value |",
              "|---|---|---|---|"]
    for where, comparison in result["paired"].items():
        label = f"slice `{cfg.data.slice_column}`" if where == "slice" else "all"
        for m, d in comparison.items():
            lines.append(f"| {label} | {m} | {systems.show_change(d)} | {d['p_value']:.3f} |")
    judged = result["judges"]
    lines += ["", f"Judged by `{judged['judge']}` (metrics.toxicity)" + (
        f" and by the reward `{judged['reward']}`." if "reward" in judged else
        ", which is also the reward RL optimised: a drop here can be a Goodhart win rather than detox. Set "
        "metrics.toxicity to an independent scorer (a classifier) to rule that out.")]
    lines += ["", "## Degenerate-output checks", "", "| model | empty | repetition (trigrams) | distinct-1 | distinct-2 |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {d['empty_share']:.3f} | {d['repetition']:.3f} | {d['distinct_1']:.3f} | {d['distinct_2']:.3f} |"
              for name, d in result["degenerate"].items()]
    lines += ["", ("Worse after RL: " + ", ".join(result["degenerate_worse"]) + ".") if result["degenerate_worse"]
              else "None worse after RL (tolerance 0.02)."]
    lines += ["", "## RL health (first vs last quarter of the steps)", "", "| signal | first | last |", "|---|---|---|"]
    lines += [f"| {rl_health.SIGNALS[k]} | {v['first']:.4g} | {v['last']:.4g} |" for k, v in result["health"]["signals"].items()]
    lines += [""] + ([f"- **Red flag:** {f}" for f in result["health"]["red_flags"]] or ["No red flags."])
    rc = result["reward_check"]
    lines += ["", f"## Reward check: `{rc['scorer']}` on {rc['data']} ({rc['examples']} labelled texts)", "",
              f"ROC AUC {rc['roc_auc']:.3f}, accuracy at 0.5 {rc['accuracy_at_0.5']:.3f}, mean score toxic "
              f"{rc['mean_score']['toxic']:.3f} vs non-toxic {rc['mean_score']['non_toxic']:.3f}"
              + "".join(f"; {kind} AUC {auc:.3f}" for kind, auc in rc["roc_auc_by_kind"].items()) + ".", "",
              "![reward scores per class](reward_check.png)", "",
              "![training curves](rl_curves.png)", "", "## Examples (largest toxicity change)", ""]
    for e in result["examples"]:
        lines += [f"**{e['id']}** — toxicity {e['toxicity_before']:.2f} -> {e['toxicity_after']:.2f}", "",
                  f"- before: {e['before']}", f"- after: {e['after']}", ""]
    return "\n".join(lines)


def _plot_reward_check(check: dict, path) -> None:
    hist = check["histogram"]
    edges = np.array(hist["edges"])
    fig, ax = figure(width=5, height=3.2)
    for label, color in (("non_toxic", "tab:blue"), ("toxic", "tab:red")):
        ax.stairs(hist[label], edges, label=f"{label} ({sum(hist[label])})", color=color, fill=True, alpha=0.5)
    ax.set(title=f"{check['scorer']}: ROC AUC {check['roc_auc']:.3f}", xlabel="toxicity score", ylabel="texts")
    ax.legend()
    save(fig, path)


def _plot_training(history: list[dict], path) -> None:
    keys = [("reward", "total reward"), ("rewards/non_toxicity/mean", "non-toxicity"), ("rewards/faithfulness/mean",
            "faithfulness (ROUGE-L)"), ("kl", "KL to the SFT model"), ("completions/mean_length", "completion length")]
    present = [(k, t) for k, t in keys if any(k in h for h in history)]
    fig, axes = figure(ncols=len(present), width=3.4 * len(present), height=3.2)
    for ax, (key, title) in zip(np.atleast_1d(axes), present):
        points = [(h["step"], h[key]) for h in history if key in h]
        ax.plot(*zip(*points))
        ax.set(title=title, xlabel="step")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    from lifecycle.cli import stage_main

    return stage_main("rlhf", argv)


if __name__ == "__main__":
    raise SystemExit(main())

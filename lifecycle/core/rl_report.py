"""The rlhf stage's before/after: SFT vs RLHF measured on the test split, written as
before_after.json and rlhf.md, with the reward-check and training-curve plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lifecycle.core import data, degenerate, rl_health, systems
from lifecycle.core.artifacts import Prompt
from lifecycle.core.plots import figure, save
from lifecycle.core.store import write_json
from lifecycle.core.toxicity import load_scorer


def before_after(cfg, sft_path: str, rl_path: str, prompt: Prompt, test, judges: dict, training: dict, out: Path) -> dict:
    """SFT vs RLHF on the held-out test split: toxicity and ROUGE-L with CIs and paired tests, under every
    judge (the run's toxicity metric, and the reward when it differs), degenerate-output checks, RL health;
    written to `out` as before_after.json and rlhf.md."""
    test = data.first(test, cfg.rlhf.eval_limit)
    n_boot = cfg.metrics.bootstrap
    generated = {name: systems.predict(cfg, path, prompt, test, cfg.rlhf.batch_size, f"rlhf {name}")
                 for name, path in (("before", sft_path), ("after", rl_path))}
    scorers = {role: load_scorer(ref) for role, ref in judges.items()}
    scored = {name: systems.score(cfg, o, scorers["judge"], test, n_boot) for name, o in generated.items()}
    paired = {"all": systems.compare(scored["before"], scored["after"], n_boot, cfg.run.seed)}
    mask = np.array(test[cfg.data.slice_column], dtype=bool) if cfg.data.slice_column else None
    if mask is not None and mask.any():
        paired["slice"] = systems.compare(scored["before"], scored["after"], n_boot, cfg.run.seed, mask)
    if "reward" in scorers:  # the optimised scorer's view, next to the judge's
        by_reward = {name: systems.score(cfg, o, scorers["reward"], test, n_boot) for name, o in generated.items()}
        paired["all, by the reward"] = {"toxicity": systems.compare(by_reward["before"], by_reward["after"], n_boot,
                                                                    cfg.run.seed)["toxicity"]}
    result = {"test_examples": len(test), "scores": {k: {m: v for m, v in s.items() if m != "per_example"}
                                                      for k, s in scored.items()},
              "paired": paired, "examples": _examples(generated, scored, mask),
              "judges": {role: scorer.name for role, scorer in scorers.items()}, "judge_is_reward": "reward" not in scorers,
              "degenerate": {name: degenerate.checks([g.prediction for g in o]) for name, o in generated.items()},
              "health": training["health"], **({"pairs": training["pairs"]} if "pairs" in training else {}),
              "reward_check": {k: v for k, v in training["reward_check"].items() if k != "histogram"}}
    result["degenerate_worse"] = degenerate.worse(result["degenerate"]["before"], result["degenerate"]["after"])
    write_json(out / "before_after.json", result)
    (out / "rlhf.md").write_text(markdown(result, cfg))
    where = "slice" if "slice" in paired else "all"
    tox, rouge = paired[where]["toxicity"], paired["all"]["rougeL"]
    headline = {"toxicity_delta": round(tox["delta"], 4), "toxicity_p": tox["p_value"], "toxicity_on": where,
                "judge_is_reward": result["judge_is_reward"], "degenerate_worse": result["degenerate_worse"],
                "rougeL_delta": round(rouge["delta"], 4), "rougeL_delta_low": round(rouge["low"], 4),
                "rougeL_delta_high": round(rouge["high"], 4)}
    summary = (f"toxicity ({where}) {systems.show_change(tox)} p={tox['p_value']:.3f}; "
               f"ROUGE-L {systems.show_change(rouge)}")
    return {"headline": headline, "summary": summary}


def _examples(generated: dict, scored: dict, mask, n: int = 4) -> list[dict]:
    """The slice examples whose toxicity changed most, before and after."""
    order = np.argsort(np.array(scored["after"]["per_example"]["toxicity"]) - np.array(scored["before"]["per_example"]["toxicity"]))
    picked = [i for i in order if mask is None or mask[i]][:n]
    before, after = generated["before"], generated["after"]
    return [{"id": before[i].id, "before": before[i].prediction, "after": after[i].prediction,
             "toxicity_before": scored["before"]["per_example"]["toxicity"][i],
             "toxicity_after": scored["after"]["per_example"]["toxicity"][i]} for i in picked]


def markdown(result: dict, cfg) -> str:
    """rlhf.md: before/after tables, judges, degenerate checks, RL health, the reward check, examples."""
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
    if "pairs" in result:
        lines += ["", _pairs_section(result["pairs"])]
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


def plot_reward_check(check: dict, path) -> None:
    hist = check["histogram"]
    edges = np.array(hist["edges"])
    fig, ax = figure(width=5, height=3.2)
    for label, color in (("non_toxic", "tab:blue"), ("toxic", "tab:red")):
        ax.stairs(hist[label], edges, label=f"{label} ({sum(hist[label])})", color=color, fill=True, alpha=0.5)
    ax.set(title=f"{check['scorer']}: ROC AUC {check['roc_auc']:.3f}", xlabel="toxicity score", ylabel="texts")
    ax.legend()
    save(fig, path)


def plot_training(history: list[dict], path) -> None:
    keys = [("reward", "total reward"), ("rewards/non_toxicity/mean", "non-toxicity"), ("rewards/faithfulness/mean",
            "faithfulness (ROUGE-L)"), ("kl", "KL to the SFT model"), ("completions/mean_length", "completion length"),
            ("loss", "training loss"), ("rewards/margins", "DPO margin (chosen - rejected)"),
            ("rewards/accuracies", "pairs ranked right")]
    present = [(k, t) for k, t in keys if any(k in h for h in history)]
    fig, axes = figure(ncols=len(present), width=3.4 * len(present), height=3.2)
    for ax, (key, title) in zip(np.atleast_1d(axes), present):
        points = [(h["step"], h[key]) for h in history if key in h]
        ax.plot(*zip(*points))
        ax.set(title=title, xlabel="step")
    save(fig, path)


def _pairs_section(pairs: dict) -> str:
    own = f"; {pairs['own_toxic']} own summaries already toxic (chosen = the reference there)" if pairs["chosen"] == "own" else ""
    return (f"## Preference pairs ({pairs['source']}, chosen: {pairs['chosen']})\n\n{pairs['kept']} pairs from "
            f"{pairs['prompts']} training prompts; {pairs['dropped']} dropped because the reward did not rank chosen "
            f"above rejected{own}; mean reward gap {pairs['reward_gap']:.2f}. Built in {pairs['seconds']:.0f} s, once, "
            "before training.")

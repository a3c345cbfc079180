"""Is RL moving the policy, and in the right direction? Red flags read off the trainer's log.

A reward that goes up proves little: the documented failure modes of RL fine-tuning
(reward hacking, mode collapse) raise it too. What gives them away is in TRL's own
per-step log: the KL to the reference running far past its budget, the policy's
entropy collapsing, groups whose samples all get the same reward (no signal to
learn from), and completions pinned at the length cap. DPO's own failure shows in
its log too: the chosen summaries losing likelihood along with the rejected ones
(likelihood displacement), a margin won by making the policy worse at both.
"""

from __future__ import annotations

import numpy as np

SIGNALS = {"kl": "KL to the SFT model", "entropy": "entropy", "reward_std": "within-group reward spread",
           "frac_reward_zero_std": "groups with no reward spread", "completions/mean_length": "completion length",
           "completions/clipped_ratio": "completions cut at the cap", "rewards/margins": "DPO margin (chosen - rejected)",
           "rewards/accuracies": "pairs ranked right", "rewards/chosen": "chosen log-ratio to the SFT model (x beta)",
           "rewards/rejected": "rejected log-ratio to the SFT model (x beta)"}


def series(history: list[dict], key: str) -> np.ndarray:
    return np.array([h[key] for h in history if key in h and "train_runtime" not in h], dtype=float)


def summary(history: list[dict]) -> dict:
    """First-quarter and last-quarter means of each health signal the log has."""
    out = {}
    for key in SIGNALS:
        values = series(history, key)
        if len(values):
            q = max(1, len(values) // 4)
            out[key] = {"first": round(float(values[:q].mean()), 4), "last": round(float(values[-q:].mean()), 4)}
    return out


def red_flags(history: list[dict], max_completion_length: int, kl_budget: float) -> list[str]:
    """Plain-language warnings, empty when the run looks healthy."""
    s, flags = summary(history), []
    if "kl" in s and s["kl"]["last"] > kl_budget:
        flags.append(f"KL to the SFT model ended at {s['kl']['last']:.3f}, past the budget {kl_budget} "
                     "(rlhf.kl_budget): the policy drifted far from the SFT model, the usual road to reward hacking. "
                     "Lower the learning rate or raise beta, and read the examples.")
    if "entropy" in s and s["entropy"]["first"] > 0 and s["entropy"]["last"] < 0.5 * s["entropy"]["first"]:
        flags.append(f"entropy fell from {s['entropy']['first']:.3f} to {s['entropy']['last']:.3f}: the policy is "
                     "collapsing onto a few outputs (mode collapse). Lower the learning rate or raise beta.")
    if "frac_reward_zero_std" in s and s["frac_reward_zero_std"]["last"] >= 0.8:
        flags.append(f"{100 * s['frac_reward_zero_std']['last']:.0f}% of the groups got the same reward for every "
                     "sample: no signal to learn from. Sample more completions per prompt (num_generations), raise "
                     "the temperature, or use a reward that ranks finer (reward_output=logit).")
    if "completions/clipped_ratio" in s and s["completions/clipped_ratio"]["last"] >= 0.8:
        flags.append(f"{100 * s['completions/clipped_ratio']['last']:.0f}% of the completions hit "
                     f"max_completion_length ({max_completion_length} tokens): lengths pinned at the cap are cut "
                     "summaries, or a length term being gamed. Raise the cap or check the length reward.")
    if "rewards/chosen" in s and "rewards/margins" in s and s["rewards/chosen"]["last"] < -0.5 * abs(s["rewards/margins"]["last"]):
        flags.append(f"the chosen summaries lost likelihood (log-ratio x beta {s['rewards/chosen']['last']:.3f}) by more "
                     f"than half the margin won ({s['rewards/margins']['last']:.3f}): DPO is pushing both sides down "
                     "(likelihood displacement). Lower the learning rate or the epochs, or raise beta.")
    if "rewards/accuracies" in s and s["rewards/accuracies"]["last"] <= 0.5:
        flags.append(f"only {100 * s['rewards/accuracies']['last']:.0f}% of the pairs ranked right at the end: DPO "
                     "is not learning the preference. Raise the learning rate or the epochs, or check the pairs.")
    return flags

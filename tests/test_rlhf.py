"""The rlhf stage on tiny models: each reward term, the guard against reward hacking,
one short GRPO run end to end, and the clear refusal of a seq2seq policy."""

import json

import pytest

from lifecycle import rlhf
from lifecycle.core.store import MANIFEST
from lifecycle.core.toxicity import load_scorer

REFERENCE = "#Person1# complains to #Person2# about the late delivery and asks for a refund."


def test_reward_terms_and_the_hacking_guard():
    funcs, weights = rlhf.rewards(load_scorer("profanity-check"), rlhf.WEIGHTS)
    assert [f.__name__ for f in funcs] == ["non_toxicity", "faithfulness", "length"] and weights == [1.0, 1.0, 0.5]
    candidates = {"faithful": REFERENCE,
                  "toxic": "#Person1# calls #Person2# a fucking idiot about the late delivery and asks for a refund.",
                  "empty": "", "generic": "They talk."}

    def total(text):
        scores = [f(completions=[[{"role": "assistant", "content": text}]], reference=[REFERENCE])[0] for f in funcs]
        return sum(w * s for w, s in zip(weights, scores))

    totals = {name: total(text) for name, text in candidates.items()}
    assert totals["faithful"] > totals["toxic"]  # toxicity costs reward
    assert totals["faithful"] > totals["empty"] and totals["faithful"] > totals["generic"]  # no hacking by saying nothing
    assert rlhf.length_reward("", REFERENCE) == -1.0 and rlhf.length_reward(REFERENCE, REFERENCE) == 1.0
    assert rlhf.length_reward(" ".join(REFERENCE.split()[:3]), REFERENCE) == 0.0


def test_one_grpo_run_writes_artifacts(run_cli):
    code, out, err = run_cli("all", "--until", "rlhf", f"models.candidates=[{run_cli.causal}]")
    assert code == 0, err
    folder = run_cli.root / "rlhf"
    assert {"adapter", "model", "prompt.json", "train_log.json", "rl_curves.png", "before_after.json", "rlhf.md",
            "reward_check.json", "reward_check.png", "logs", MANIFEST} <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {"toxicity_delta", "toxicity_p", "rougeL_delta", "reward_roc_auc"} <= set(manifest["metrics"])
    assert manifest["metrics"]["reward_roc_auc"] == json.loads((folder / "reward_check.json").read_text())["roc_auc"]
    log = json.loads((folder / "train_log.json").read_text())
    assert any("rewards/non_toxicity/mean" in h for h in log) and any("kl" in h for h in log)
    result = json.loads((folder / "before_after.json").read_text())
    assert set(result["scores"]) == {"before", "after"} and "all" in result["paired"]


def test_a_reward_that_cannot_rank_stops_before_rl(run_cli):
    code, _, err = run_cli("all", "--until", "rlhf", f"models.candidates=[{run_cli.causal}]", "rlhf.min_reward_auc=0.99")
    assert code == 2 and "ranks the labelled set" in err and "below rlhf.min_reward_auc 0.99" in err
    assert not (run_cli.root / "rlhf").exists()  # nothing trained, nothing committed


def test_seq2seq_policy_is_refused_with_a_reason(run_cli):
    code, _, err = run_cli("all", "--until", "rlhf", f"models.candidates=[{run_cli.seq2seq}]")
    assert code == 2 and "TRL's RL trainers are causal-only" in err


@pytest.mark.parametrize("override, fragment", [
    ("rlhf.weights.politeness=1", "one of the reward terms"),
    ("rlhf.training.num_generations=1", "at least 2 samples per prompt"),
    ("rlhf.training.per_device_train_batch_size=3", "a multiple of num_generations"),
    ("rlhf.training.beta=-0.1", "a KL coefficient >= 0"),
])
def test_bad_rlhf_options(override, fragment):
    from lifecycle.config import load
    from lifecycle.core.errors import ConfigError
    from tests.test_finetune import TINY

    with pytest.raises(ConfigError, match=fragment):
        load(TINY, [override])

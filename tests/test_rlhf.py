"""The rlhf stage on tiny models: each reward term, the guard against reward hacking,
one short GRPO run end to end, and the clear refusal of a seq2seq policy."""

import json

import pytest

from lifecycle.core import rewards
from lifecycle.core.store import MANIFEST
from lifecycle.core.toxicity import load_scorer

REFERENCE = "#Person1# complains to #Person2# about the late delivery and asks for a refund."


def test_reward_terms_and_the_hacking_guard():
    funcs, weights = rewards.rewards(load_scorer("profanity-check"), rewards.WEIGHTS)
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
    assert rewards.length_reward("", REFERENCE) == -1.0 and rewards.length_reward(REFERENCE, REFERENCE) == 1.0
    assert rewards.length_reward(" ".join(REFERENCE.split()[:3]), REFERENCE) == 0.0
    total = rewards.total_reward(load_scorer("profanity-check"), rewards.WEIGHTS)
    assert total([candidates["faithful"], candidates["toxic"]], [REFERENCE] * 2).tolist() == pytest.approx(
        [totals["faithful"], totals["toxic"]])  # the one-call sum DPO ranks its pairs by


def test_one_grpo_run_writes_artifacts(completed_run):
    folder = completed_run / "tiny" / "rlhf"
    assert {"adapter", "model", "prompt.json", "train_log.json", "rl_curves.png", "before_after.json", "rlhf.md",
            "reward_check.json", "reward_check.png", "logs", MANIFEST} <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {"toxicity_delta", "toxicity_p", "rougeL_delta", "reward_roc_auc"} <= set(manifest["metrics"])
    assert manifest["metrics"]["reward_roc_auc"] == json.loads((folder / "reward_check.json").read_text())["roc_auc"]
    assert manifest["references"]["reward"].startswith("profanity-check@") and manifest["references"]["reward_check"]
    log = json.loads((folder / "train_log.json").read_text())
    assert any("rewards/non_toxicity/mean" in h for h in log) and any("kl" in h for h in log)
    result = json.loads((folder / "before_after.json").read_text())
    assert set(result["scores"]) == {"before", "after"} and "all" in result["paired"]
    assert result["judges"] == {"judge": "profanity-check"} and result["judge_is_reward"] is True
    assert set(result["degenerate"]["before"]) == {"empty_share", "repetition", "distinct_1", "distinct_2"}
    assert {"kl", "entropy", "completions/clipped_ratio"} <= set(result["health"]["signals"])
    md = (folder / "rlhf.md").read_text()
    assert "which is also the reward RL optimised" in md and "## RL health" in md and "## Degenerate-output checks" in md


def test_dpo_on_counterfactual_pairs_writes_its_pairs_and_reports_them(clone_run):
    code, out, err = clone_run("rlhf", "rlhf.algorithm=dpo", "rlhf.pairs.prompts=4", "rlhf.pairs.batch_size=4",
                               "rlhf.preference.max_steps=2", "rlhf.preference.per_device_train_batch_size=2",
                               "rlhf.preference.save_steps=1")
    assert code == 0, err
    folder = clone_run.root / "rlhf"
    assert "rlhf pairs: " in out and json.loads((folder / MANIFEST).read_text())["status"] == "completed"
    pairs = json.loads((folder / "pairs.json").read_text())
    assert pairs["summary"]["prompts"] == 4 and pairs["summary"]["kept"] + pairs["summary"]["dropped"] == 4
    for row in pairs["rows"]:  # the rejected side is the chosen one with the spliced insult copied in
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert len(rejected) > len(chosen) and all(word.strip(".!?") in rejected for word in chosen.split())
    result = json.loads((folder / "before_after.json").read_text())
    assert result["pairs"] == pairs["summary"] and "rewards/margins" in result["health"]["signals"]
    assert "## Preference pairs (counterfactual, chosen: reference)" in (folder / "rlhf.md").read_text()

    code, _, err = clone_run("rlhf", "rlhf.algorithm=dpo", "rlhf.pairs.prompts=4", "rlhf.pairs.batch_size=4",
                             "rlhf.preference.max_steps=2", "rlhf.preference.per_device_train_batch_size=2",
                             "rlhf.preference.save_steps=1", "rlhf.seed=7")
    assert code == 0, err  # a replicate of RL alone: a seed that staled finetune would stop the stage here
    replicate = json.loads((folder / "pairs.json").read_text())
    assert [r["prompt"] for r in replicate["rows"]] != [r["prompt"] for r in pairs["rows"]]  # other turns spliced


def test_dpo_on_sampled_pairs_keeps_only_what_the_reward_ranks(clone_run):
    code, _, err = clone_run("rlhf", "rlhf.algorithm=dpo", "rlhf.pairs.source=sampled", "rlhf.pairs.samples=2",
                             "rlhf.pairs.prompts=4", "rlhf.pairs.batch_size=4", "rlhf.preference.max_steps=1",
                             "rlhf.preference.per_device_train_batch_size=2", "rlhf.preference.save_steps=1")
    assert code == 0, err
    pairs = json.loads((clone_run.root / "rlhf" / "pairs.json").read_text())
    assert pairs["summary"]["chosen"] == "best sample" and pairs["summary"]["kept"] + pairs["summary"]["dropped"] == 4
    assert all(r["chosen"] != r["rejected"] for r in pairs["rows"]) and pairs["summary"]["reward_gap"] > 0


def test_a_reward_that_cannot_rank_stops_before_rl(clone_run):
    code, _, err = clone_run("rlhf", "rlhf.min_reward_auc=0.99")
    assert code == 2 and "ranks the labelled set" in err and "below rlhf.min_reward_auc 0.99" in err
    partial = clone_run.root / "rlhf.partial"
    assert not (partial / "checkpoints").exists()  # nothing trained, nothing committed
    assert json.loads((partial / MANIFEST).read_text())["status"] == "failed"


@pytest.mark.slow
def test_flan_t5_recipe_skips_rl_for_a_seq2seq_policy_and_reaches_quantize(run_cli):
    """configs/flan-t5-dialogsum.yaml selects a seq2seq model: rlhf cannot apply, and the chain goes on."""
    from tests.conftest import ROOT

    small = ["data.path=demo", "data.slice_column=heated", "data.limit={train: 16, validation: 8, test: 8}",
             "models.device=cpu", "scope.max_new_tokens=12", "scope.criteria.max_latency_ms_per_token=100000",
             "select.sample=4", "prompt.templates=[summarize]", "prompt.shots=[0]", "prompt.sample=4",
             "prompt.generation=[{do_sample: false}]", "finetune.training.max_steps=2", "finetune.training.save_steps=2",
             "finetune.training.eval_strategy=no", "evaluate.limit=4", "quantize.variants=[reference, int8]",
             "quantize.limit=4", "quantize.check_pipeline=false", "metrics.bootstrap=100",
             f"models.candidates=[{run_cli.seq2seq}]", "run.name=tiny"]
    code, out, err = run_cli("all", *small, config=str(ROOT / "configs" / "flan-t5-dialogsum.yaml"))
    assert code == 0, err
    assert "rlhf: skipped, the fine-tuned model is seq2seq and TRL's RL trainers are causal-only" in out
    for stage in ("evaluate", "quantize"):
        manifest = json.loads((run_cli.root / stage / MANIFEST).read_text())
        assert manifest["status"] == "completed" and "rlhf" in manifest["left_out"]
    systems = json.loads((run_cli.root / "evaluate" / "evaluation.json").read_text())["systems"]
    assert set(systems) == {"base", "finetune"}


@pytest.mark.parametrize("override, fragment", [
    ("rlhf.weights.politeness=1", "one of the reward terms"),
    ("rlhf.training.num_generations=1", "at least 2 samples per prompt"),
    ("rlhf.training.per_device_train_batch_size=3", "a multiple of num_generations"),
    ("rlhf.training.beta=-0.1", "a KL coefficient >= 0"),
    ("rlhf.algorithm=dpo rlhf.preference.num_generations=4", "a trl.DPOConfig option"),
    ("rlhf.algorithm=dpo rlhf.preference.beta=-1", "a KL coefficient >= 0"),
    ("rlhf.algorithm=dpo rlhf.splice=null", "counterfactual pairs copy the spliced turn"),
    ("rlhf.pairs.samples=1", "at least 2 summaries per prompt"),
    ("rlhf.algorithm=dpo rlhf.preference.seed=1", "rlhf.seed, which seeds the whole stage"),
])
def test_bad_rlhf_options(override, fragment):
    from lifecycle.config import load
    from lifecycle.core import library_options
    from lifecycle.core.errors import ConfigError
    from tests.test_finetune import TINY

    with pytest.raises(ConfigError, match=fragment):  # at load, or by PEFT/TRL before the stage runs (preflight)
        library_options.check(load(TINY, override.split()))

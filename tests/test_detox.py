"""The pieces that make RL detoxify measurably: toxic turns spliced into training prompts, the
red-flag detector over the RL log, the judge-differs-from-reward rule, degenerate-output checks."""

import json
import random

import numpy as np
import pytest

from lifecycle import rlhf
from lifecycle.config import load
from lifecycle.core import degenerate, preference, rl_health, splice
from lifecycle.core.data import DEMO_DIR
from lifecycle.core.errors import DataError
from tests.test_finetune import TINY

DIALOGUE = "#Person1#: Did you get the tickets?\n#Person2#: Yes, two for Friday.\n#Person1#: Great, thanks."


def test_a_spliced_turn_belongs_to_an_existing_speaker_and_keeps_every_original_line():
    rng = random.Random(0)
    for _ in range(50):
        out, turn = splice.splice(DIALOGUE, "You stupid idiot.", rng)
        lines = out.split("\n")
        added = [line for line in lines if line.endswith("You stupid idiot.")]
        assert len(lines) == 4 and len(added) == 1
        assert added[0] == f"{turn.speaker}: {turn.text}" and turn.speaker in {"#Person1#", "#Person2#"}
        assert lines[0] == DIALOGUE.split("\n")[0]
        assert [line for line in lines if line not in added] == DIALOGUE.split("\n")  # order kept
    with pytest.raises(DataError, match="without `Speaker: text` lines"):
        splice.splice("no speakers here", "x", rng)


def test_splicing_picks_a_seeded_share_and_leaves_references_neutral():
    from lifecycle.core.toxicity import load_scorer

    rows = [json.loads(line) for line in (DEMO_DIR / "dialogues" / "train.jsonl").read_text().splitlines()]
    pool = splice.load_pool()
    out, turns = splice.spliced([r["dialogue"] for r in rows], pool, 0.5, seed=3)
    assert sum(t is not None for t in turns) == round(0.5 * len(rows))
    assert (out, turns) == splice.spliced([r["dialogue"] for r in rows], pool, 0.5, 3)
    assert all((o != r["dialogue"]) == (t is not None) for o, r, t in zip(out, rows, turns))
    assert all(f"\n{t.speaker}: {t.text}" in o for o, t in zip(out, turns) if t)
    scorer = load_scorer("profanity-check")
    assert (scorer.score(pool) > 0.5).mean() > 0.9  # the pool is what the reward must learn to keep out
    assert (scorer.score([r["summary"] for r in rows]) < 0.5).all()  # the targets RL is guarded by stay clean
    probe = {json.loads(line)["text"] for line in (DEMO_DIR / "toxicity_probe.jsonl").read_text().splitlines()}
    assert not probe & set(pool)  # the reward is checked on texts it was never trained against


def test_a_counterfactual_pair_differs_only_by_the_copied_turn_and_the_reward_ranks_it_lower():
    from lifecycle.core.rewards import WEIGHTS, total_reward
    from lifecycle.core.toxicity import load_scorer

    dialogue, turn = splice.splice(DIALOGUE, "You stupid idiot, shut your damn mouth.", random.Random(1))
    own = "#Person2# has two tickets for Friday. #Person1# is pleased."
    ref = "#Person2# got two tickets for Friday."
    (chosen, rejected), untouched = preference.counterfactual([own, own], [ref, ref], [turn, None], [dialogue, DIALOGUE],
                                                              [False, False], seed=0)
    assert untouched is None and chosen == own  # only spliced prompts make pairs; the clean own summary is chosen
    assert turn.text.lower() in rejected.lower() and turn.speaker in rejected
    assert all(word.strip(".") in rejected for word in own.split())  # the own summary is all still there
    total = total_reward(load_scorer("profanity-check"), WEIGHTS, "logit")
    assert total([chosen], [ref])[0] > total([rejected], [ref])[0]
    (chosen, _), = preference.counterfactual([rejected], [ref], [turn], [dialogue], [True], seed=0)
    assert chosen == ref  # an own summary that already copies the insult is replaced by the neutral reference


def test_a_replacing_pair_is_about_as_long_and_still_ranked_lower():
    from lifecycle.core.rewards import WEIGHTS, total_reward
    from lifecycle.core.toxicity import load_scorer

    dialogue, turn = splice.splice(DIALOGUE, "You stupid idiot, shut your damn mouth.", random.Random(1))
    ref = "#Person2# got two tickets for Friday. #Person1# is pleased and will pay for dinner. They meet at seven."
    pairs = preference.counterfactual([ref] * 20, [ref] * 20, [turn] * 20, [dialogue] * 20, [False] * 20, seed=0,
                                      replacing=True)
    total = total_reward(load_scorer("profanity-check"), WEIGHTS, "logit")
    for chosen, rejected in pairs:
        kept = [s for s in preference.SENTENCE_END.split(ref) if s in rejected]
        assert chosen == ref and turn.text.lower() in rejected.lower() and len(kept) == 2  # one sentence gave way
        assert total([chosen], [ref])[0] > total([rejected], [ref])[0]
    added = preference.counterfactual([ref] * 20, [ref] * 20, [turn] * 20, [dialogue] * 20, [False] * 20, seed=0)
    replacing_gap = np.mean([len(r.split()) - len(c.split()) for c, r in pairs])
    adding_gap = np.mean([len(r.split()) - len(c.split()) for c, r in added])
    assert abs(replacing_gap) < adding_gap / 2  # the length difference DPO could learn from is mostly gone
    short = "#Person2# got two tickets."  # a one-sentence summary keeps its sentence: the turn is added
    (_, rejected), = preference.counterfactual([short], [short], [turn], [dialogue], [False], seed=0, replacing=True)
    assert short.rstrip(".") in rejected


def test_shortest_keeps_the_original_order():
    assert preference.shortest(["aaaa", "a", "aaa", "aa"], 2) == [1, 3] and preference.shortest(["b", "a"], None) == [0, 1]


def _log(steps, kl, entropy, zero_std, clipped):
    return [{"step": i, "kl": kl(i), "entropy": entropy(i), "frac_reward_zero_std": zero_std, "reward_std": 0.1,
             "completions/clipped_ratio": clipped, "completions/mean_length": 40} for i in range(1, steps + 1)]


def test_red_flags_fire_on_a_collapsing_run_and_stay_quiet_on_a_healthy_one():
    healthy = _log(24, lambda i: 0.002 * i / 24, lambda i: 2.0, 0.1, 0.2)
    assert rl_health.red_flags(healthy, 96, kl_budget=0.1) == []
    collapsing = _log(24, lambda i: 0.02 * i, lambda i: 2.0 / i, 0.9, 1.0)
    flags = rl_health.red_flags(collapsing, 96, kl_budget=0.1)
    assert len(flags) == 4
    assert "past the budget 0.1" in flags[0] and "mode collapse" in flags[1]
    assert "no signal to learn from" in flags[2] and "max_completion_length (96 tokens)" in flags[3]
    assert rl_health.summary(collapsing)["entropy"]["last"] < rl_health.summary(collapsing)["entropy"]["first"]


def test_dpo_red_flags_fire_on_likelihood_displacement_and_on_no_learning():
    def dpo_log(chosen, margin, accuracy):
        return [{"step": i, "rewards/chosen": chosen * i / 16, "rewards/margins": margin * i / 16,
                 "rewards/accuracies": accuracy} for i in range(1, 17)]

    assert rl_health.red_flags(dpo_log(-0.2, 2.0, 1.0), 96, 0.1) == []
    displaced = rl_health.red_flags(dpo_log(-2.0, 2.0, 1.0), 96, 0.1)
    assert len(displaced) == 1 and "likelihood displacement" in displaced[0]
    assert "not learning the preference" in rl_health.red_flags(dpo_log(0.0, 0.0, 0.4), 96, 0.1)[0]


def test_the_judge_is_the_run_metric_and_the_reward_is_reported_too_when_it_differs():
    same = load(TINY)
    assert list(rlhf.judges(same)) == ["judge"]  # one scorer: rlhf.md says the judge is the reward
    other = load(TINY, ["rlhf.reward={model: some/classifier, nontoxic_label: ok}"])
    assert list(rlhf.judges(other)) == ["judge", "reward"] and rlhf.judges(other)["judge"] == "profanity-check"


def test_degenerate_checks_see_empty_repetitive_and_samey_outputs():
    varied = ["Anna booked two tickets for Friday.", "Ben asks the shop to repair his bike chain."]
    samey = ["the meeting is fine the meeting is fine the meeting is fine", "", "the meeting is fine"]
    good, bad = degenerate.checks(varied), degenerate.checks(samey)
    assert good["empty_share"] == 0 and good["repetition"] == 0 and good["distinct_1"] == 1
    assert bad["empty_share"] == pytest.approx(1 / 3, abs=1e-3) and bad["repetition"] == pytest.approx(0.6 / 3, abs=1e-3) and bad["distinct_2"] < 0.5
    assert degenerate.repetition(samey[0]) == pytest.approx(0.6)  # 4 distinct of 10 trigrams
    assert set(degenerate.worse(good, bad)) == {"empty_share", "repetition", "distinct_1", "distinct_2"}
    assert degenerate.worse(good, good) == []

"""select -> prompt -> evaluate through the real CLI on tiny models: the files each
writes, select's budget rule, evaluate's criteria and its reuse of predictions."""

import json

import pytest

from lifecycle import evaluate, select
from lifecycle.core.data import DEMO_DIR
from lifecycle.core.errors import StageError
from lifecycle.core.store import MANIFEST


@pytest.fixture
def evaluated(clone_run):
    return clone_run


def test_all_stages_write_their_artifacts(evaluated):
    root = evaluated.root
    assert {p.name for p in (root / "select").iterdir()} == {"selection.json", "selection.md", "selection.png",
                                                            "predictions", MANIFEST}
    selection = json.loads((root / "select" / "selection.json").read_text())
    assert len(selection["candidates"]) == 1 and selection["selected"] in {c["ref"] for c in selection["candidates"]}
    for c in selection["candidates"]:
        assert c["parameters"] > 0 and c["memory_mb"] > 0 and c["latency_ms_per_token"] > 0
        assert c["rougeL"]["low"] <= c["rougeL"]["value"] <= c["rougeL"]["high"]
    assert {p.name for p in (root / "prompt").iterdir()} == {"best.json", "trials.json", "prompt.md", "prompt.png", MANIFEST}
    best = json.loads((root / "prompt" / "best.json").read_text())
    assert best["shots"] in (0, 1) and best["template"].count("{input}") == 1 and best["generation"]["max_new_tokens"] == 12
    trials = json.loads((root / "prompt" / "trials.json").read_text())
    assert len(trials) == 2 * 2 + 1  # templates x shots, then the best under the other generation config
    train_ids = {json.loads(line)["id"] for line in (DEMO_DIR / "dialogues" / "train.jsonl").read_text().splitlines()}
    assert set(best["shot_ids"]) <= train_ids  # few-shot examples never come from validation
    evaluation = json.loads((root / "evaluate" / "evaluation.json").read_text())
    base = evaluation["systems"]["base"]
    assert evaluation["test_examples"] == 8 and len(base["per_example"]["rougeL"]) == 8
    assert set(base["criteria"]) == {"min_rougeL", "max_mean_toxicity", "max_general_nll_increase"}
    # rlhf's before/after generated both trained models on the same test rows with the same decoding: read back
    assert base["reused_predictions"] is None
    assert all(evaluation["systems"][s]["reused_predictions"] for s in ("finetune", "rlhf"))
    heated = [json.loads(line)["heated"] for line in (DEMO_DIR / "dialogues" / "test.jsonl").read_text().splitlines()]
    assert base["slice"]["rows"] == sum(heated[:8])
    for name in ("evaluation.md", "metrics.png", "toxicity.png", "predictions/base.jsonl"):
        assert (root / "evaluate" / name).is_file()
    report = (root / "evaluate" / "evaluation.md").read_text()
    assert "ROUGE-L [95% CI]" in report and "Slice `heated`" in report and "## Examples" in report


def test_evaluate_marks_scopes_criteria_and_reuses_unchanged_predictions(evaluated):
    criteria = json.loads((evaluated.root / "scope" / "scope.json").read_text())["criteria"]
    systems = json.loads((evaluated.root / "evaluate" / "evaluation.json").read_text())["systems"]
    for system in systems.values():  # scope's bounds (the rule itself: the test below), not the config's
        assert system["criteria"]["min_rougeL"] == (system["scores"]["rougeL"]["value"] >= criteria["min_rougeL"])
        assert set(system["criteria"]) == {"min_rougeL", "max_mean_toxicity", "max_general_nll_increase"}
    code, out, _ = evaluated("evaluate", "scope.criteria.min_rougeL=0.0", "scope.criteria.max_mean_toxicity=1.0")
    # scope changed, so everything after it is stale: evaluate refuses until scope re-runs
    assert code == 2
    code, out, _ = evaluated("all", "evaluate.examples=1")
    assert code == 0 and "reusing the" in out


def test_evaluate_criteria_are_scopes_bounds_inclusive():
    """The rule itself, without re-running the lifecycle for each side of a bound."""
    system = {"scores": {"rougeL": {"value": 0.3}, "toxicity_mean": {"value": 0.1}}}
    assert evaluate._criteria(system, {"min_rougeL": 0.3, "max_mean_toxicity": 0.1}) == {
        "min_rougeL": True, "max_mean_toxicity": True}
    assert evaluate._criteria(system, {"min_rougeL": 0.31, "max_mean_toxicity": 0.09}) == {
        "min_rougeL": False, "max_mean_toxicity": False}


def _row(ref, rouge, memory, latency):
    return {"ref": ref, "rougeL": {"value": rouge}, "memory_mb": memory, "latency_ms_per_token": latency}


def test_select_picks_best_quality_within_budgets():
    rows = [_row("big", 0.40, 2000, 10), _row("slow", 0.35, 100, 500), _row("ok", 0.30, 100, 10), _row("meh", 0.2, 50, 5)]
    budget = {"max_memory_mb": 1024, "max_latency_ms_per_token": 100}
    assert select._choose(rows, budget, None)[0]["ref"] == "ok"
    assert select._choose(rows, budget, "big")[0]["ref"] == "big"
    with pytest.raises(StageError, match="no candidate is within scope's budgets"):
        select._choose(rows[:2], budget, None)
    with pytest.raises(StageError, match="is not one of models.candidates"):
        select._choose(rows, budget, "other")


def test_prompt_keeps_the_first_trial_unless_another_beats_it_beyond_chance():
    from types import SimpleNamespace

    from lifecycle.prompt import Trial, pick

    refs = [f"#Person{i % 2 + 1}# asks about the {w} and pays for it at the desk today." for i, w in
            enumerate(["ticket", "parcel", "room", "bill", "car", "dog", "cake", "phone", "shoes", "lamp", "book", "key"])]
    first = Trial("a", 0, {}, predictions=["They talk about things."] * len(refs))
    noise = Trial("b", 0, {}, predictions=[refs[0]] + first.predictions[1:])  # ahead by one example's luck
    clear = Trial("c", 0, {}, predictions=[r.replace("today", "now") for r in refs])
    for metric in ("rougeL", "chrf", "bleu"):  # per-example scores; BLEU through sacrebleu's corpus-level test
        cfg = SimpleNamespace(prompt=SimpleNamespace(metric=metric), metrics=SimpleNamespace(bootstrap=1000),
                              run=SimpleNamespace(seed=0))
        for trial, value in ((first, 0.30), (noise, 0.31), (clear, 0.60)):
            trial.scores[metric] = {"value": value}
        assert pick([first, noise, clear], refs, cfg) is clear
        if metric != "bleu":  # sacrebleu counts only strictly larger shuffles: one changed sentence "wins" there
            assert pick([first, noise], refs, cfg) is first

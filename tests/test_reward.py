"""Toxicity scorers beyond profanity-check: a sequence-classification model (what a hub
classifier or a locally trained one is), the reward's logit output, the labelled-set
check that gates RL, and training a reward model on labels with lifecycle.reward_model."""

import json

import numpy as np
import pytest

from lifecycle.core.errors import LifecycleError
from lifecycle.core.toxicity import ScorerConfig, load_scorer, non_toxicity_logit, probe_check
from lifecycle import reward_model

LABELS = {0: "non_toxic", 1: "toxic"}


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tokenizer) -> str:
    """A 2-layer Llama sequence classifier with labels non_toxic/toxic, saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    path = tmp_path_factory.mktemp("models") / "tiny-classifier"
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


TEXTS = ["thank you for your help", "you are a useless idiot and I hate you", "ok", "see you at six tomorrow then"]


def test_classifier_scores_are_one_minus_the_nontoxic_probability(tiny_classifier):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scores = load_scorer(ScorerConfig(model=tiny_classifier, nontoxic_label="non_toxic")).score(TEXTS)
    model, tok = AutoModelForSequenceClassification.from_pretrained(tiny_classifier), AutoTokenizer.from_pretrained(tiny_classifier)
    with torch.no_grad():  # one text at a time: no padding involved
        expected = [1 - model(**tok(t, return_tensors="pt")).logits.softmax(-1)[0, 0].item() for t in TEXTS]
    assert scores.shape == (4,) and np.allclose(scores, expected, atol=1e-5)  # padding in a batch changes nothing
    flipped = load_scorer(ScorerConfig(model=tiny_classifier, nontoxic_label="toxic")).score(TEXTS)
    assert np.allclose(flipped, 1 - scores, atol=1e-6)


def test_logit_reward_is_the_classifier_logit_margin(tiny_classifier):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scores = load_scorer(ScorerConfig(model=tiny_classifier, nontoxic_label="non_toxic")).score(TEXTS)
    model, tok = AutoModelForSequenceClassification.from_pretrained(tiny_classifier), AutoTokenizer.from_pretrained(tiny_classifier)
    with torch.no_grad():
        logits = [model(**tok(t, return_tensors="pt")).logits[0] for t in TEXTS]
    assert np.allclose(non_toxicity_logit(scores), [(l[0] - l[1]).item() for l in logits], atol=1e-4)


@pytest.mark.parametrize("cfg, fragment", [
    (ScorerConfig(model="perspective"), "need `nontoxic_label`"),
    (ScorerConfig(model="org/no-such-classifier", nontoxic_label="nothate"), "could not load the toxicity classifier"),
])
def test_bad_scorer_references_say_what_to_do(cfg, fragment):
    with pytest.raises(LifecycleError, match=fragment):
        load_scorer(cfg)


def test_a_label_the_classifier_lacks_lists_its_labels(tiny_classifier):
    with pytest.raises(LifecycleError, match=r"no label `nothate`; its labels are \['non_toxic', 'toxic'\]"):
        load_scorer(ScorerConfig(model=tiny_classifier, nontoxic_label="nothate"))


def test_scorer_in_config_is_a_name_or_a_mapping(tiny_classifier):
    from lifecycle.config import load
    from tests.test_finetune import TINY

    cfg = load(TINY, [f"rlhf.reward={{model: {tiny_classifier}, nontoxic_label: non_toxic}}", "rlhf.reward_output=logit"])
    assert cfg.rlhf.reward == ScorerConfig(model=tiny_classifier, nontoxic_label="non_toxic")
    assert load(TINY).metrics.toxicity == "profanity-check"
    with pytest.raises(LifecycleError, match="rlhf.reward.batch_size"):
        load(TINY, ["rlhf.reward={model: x, nontoxic_label: y, batch_size: 0}"])


def test_probe_check_histograms_and_custom_sets(tmp_path):
    check = probe_check(load_scorer("profanity-check"))
    hist = check["histogram"]
    assert len(hist["edges"]) == 11 and sum(hist["toxic"]) == sum(hist["non_toxic"]) == 180
    labelled = tmp_path / "labels.jsonl"
    labelled.write_text("\n".join(json.dumps({"text": t, "toxic": int("idiot" in t)}) for t in TEXTS))
    assert probe_check(load_scorer("profanity-check"), str(labelled))["roc_auc"] == 1.0
    labelled.write_text(json.dumps({"text": "hi", "toxic": 2}))
    with pytest.raises(LifecycleError, match="lines \\[1\\]"):
        probe_check(load_scorer("profanity-check"), str(labelled))


def _labels(path, n=48):
    """Clearly separable labels: insults vs thanks, in varied wording."""
    rng = np.random.default_rng(0)
    insults = ["idiot", "stupid", "moron", "useless", "shut up", "hate"]
    polite = ["thanks", "please", "great", "lovely", "see you", "kind"]
    rows = []
    for i in range(n):
        toxic = i % 2
        words = rng.choice(insults if toxic else polite, size=3)
        rows.append({"text": f"you are {' and '.join(words)}", "toxic": toxic})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_train_a_reward_model_and_use_it(tmp_path, tiny_causal, capsys):
    data = _labels(tmp_path / "labels.jsonl")
    out = tmp_path / "rm"
    code = reward_model.main(["--data", data, "--out", str(out), "--base", tiny_causal, "--epochs", "8",
                              "--learning-rate", "5e-3", "--batch-size", "8", "--holdout", "0.25"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "reward_model.json").read_text())
    assert report["data"]["train"] == 36 and report["data"]["holdout"] == 12 and report["labels"] == {"0": "non_toxic", "1": "toxic"}
    assert report["holdout_check"]["roc_auc"] >= 0.9  # it learned the labels, on texts it did not train on
    assert report["holdout_baseline"]["scorer"] == "profanity-check" and report["holdout_baseline"]["examples"] == 12
    assert report["train_loss"][-1]["loss"] < report["train_loss"][0]["loss"]
    assert not list(tmp_path.glob(".rm.partial")) and report["probe_check"]["scorer"] == str(out)
    scorer = load_scorer(ScorerConfig(model=str(out), nontoxic_label="non_toxic"))
    scores = scorer.score(["you are idiot and moron and stupid", "you are thanks and kind and lovely"])
    assert scores[0] > scores[1]
    assert reward_model.main(["--data", data, "--out", str(out), "--base", tiny_causal]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_reward_model_rejects_one_class_labels(tmp_path, capsys):
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"hello {i}", "toxic": 0}) for i in range(10)))
    assert reward_model.main(["--data", str(data), "--out", str(tmp_path / "rm")]) == 2
    assert "one class only" in capsys.readouterr().err and not (tmp_path / "rm").exists()

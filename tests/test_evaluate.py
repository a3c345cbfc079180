"""evaluate as a practitioner uses it, on tiny models: extra held-out sets (adding one re-runs
evaluate only), perplexity against a hand computation, the forgetting check on a model trained
to forget, and a set skipped cleanly when its files are absent."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lifecycle.cli import main as cli_main
from lifecycle.core import forgetting, likelihood, systems
from tests.judge_stub import serve

ROOT = Path(__file__).resolve().parent.parent
SET = ["evaluate.sets={val: {path: demo, split: validation, slice_column: heated, limit: {validation: 6}}}"]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
# one worker runs this module (`make test` distributes by group), so its module-scoped run is made once
pytestmark = pytest.mark.xdist_group("evaluate")


@pytest.fixture(scope="module")
def cli(tmp_path_factory, tiny_causal, tiny_seq2seq):
    root = tmp_path_factory.mktemp("evaluate") / "runs"

    def call(command: str, *overrides: str):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main([command, "--config", str(ROOT / "configs" / "tiny.yaml"), f"run.root={root}",
                             f"models.candidates=[{tiny_causal}, {tiny_seq2seq}]", f"select.pin={tiny_causal}",
                             "evaluate.forgetting.limit=40", "rlhf.enabled=false", *overrides])
        return code, out.getvalue(), err.getvalue()

    call.root = root / "tiny"
    return call


@pytest.fixture(scope="module")
def with_set(cli):
    code, _, err = cli("all", "--until", "evaluate")
    assert code == 0, err
    code, out, err = cli("all", "--until", "evaluate", *SET)
    assert code == 0, err
    return out


def test_adding_a_set_reruns_evaluate_only(with_set):
    for stage in ("scope", "select", "prompt", "finetune"):
        assert f"[lifecycle] {stage}: up to date" in with_set, stage
    assert "stage: evaluate" in with_set
    assert "evaluate base on test: reusing the" in with_set


def test_a_set_is_scored_like_the_test_split(cli, with_set):
    ev = json.loads((cli.root / "evaluate" / "evaluation.json").read_text())
    val = ev["sets"]["val"]
    assert val["examples"] == 6 and set(val["systems"]) == set(ev["systems"]) == {"base", "finetune"}
    for name, s in val["systems"].items():
        assert len(s["per_example"]["rougeL"]) == 6 and "slice" in s
        ppl = s["scores"]["perplexity"]
        assert 1 < ppl["low"] <= ppl["value"] <= ppl["high"]
        if name != "base":
            assert set(s["vs_base"]) == {"rougeL", "toxicity", "nll", "bleu", "chrf"}
            assert all(0 < d["p_value"] <= 1 and d["test"].startswith("approximate randomisation")
                       for d in s["vs_base"].values())
            assert "low" in s["vs_base"]["nll"] and s["vs_base"]["bleu"]["test"].endswith("(sacrebleu)")
    assert (cli.root / "evaluate" / "predictions" / "val" / "finetune.jsonl").is_file()
    assert (cli.root / "evaluate" / "metrics-val.png").is_file()
    md = (cli.root / "evaluate" / "evaluation.md").read_text()
    assert "## Set `val` (6 examples from `demo`)" in md and "perplexity [95% CI]" in md
    assert md.index("## Set `val`") < md.index("![metrics]")  # tables before plots: the run report quotes them
    forgot = ev["forgetting"]
    assert forgot["texts"] == 40 and forgot["threshold_from"] == "evaluate.forgetting.max_nll_increase"
    assert set(forgot["systems"]["finetune"]["vs_base"]) >= {"delta", "low", "high", "p_value"}
    assert "## Forgetting check" in md and "max_general_nll_increase" in md


def test_evaluate_runs_the_llm_judge_on_every_trained_system(cli, with_set):
    proc, url = serve("longer")
    try:
        code, out, err = cli("evaluate", *SET, f"evaluate.judge={{url: {url}, model: stub, examples: 3}}")
    finally:
        proc.terminate()
        proc.wait(10)
    assert code == 0, err
    assert "reusing the" in out  # only the judge is new
    j = json.loads((cli.root / "evaluate" / "evaluation.json").read_text())["judge"]
    assert j["model"] == "stub" and set(j["vs_base"]) == {"finetune"}
    assert all(r["n"] == 3 and len(r["verdicts"]) == 3 for r in j["vs_base"].values())
    assert "## LLM judge (`stub`" in (cli.root / "evaluate" / "evaluation.md").read_text()


def test_a_missing_set_is_skipped_with_a_notice_and_stays_up_to_date(cli, with_set, tmp_path):
    missing = [f"evaluate.sets={{gone: {{path: json, data_files: {{test: {tmp_path}/absent.jsonl}}, skip_missing: true}}}}"]
    code, out, err = cli("evaluate", *missing)
    assert code == 0, err
    assert out.count("set `gone` skipped") == 1 and "absent.jsonl not found" in out
    ev = json.loads((cli.root / "evaluate" / "evaluation.json").read_text())
    assert ev["skipped_sets"] == {"gone": f"{tmp_path}/absent.jsonl not found"} and ev["sets"] == {}
    code, out, _ = cli("status", *missing)
    assert code == 0 and [line for line in out.splitlines() if line.startswith("evaluate")][0].split()[1] == "up"
    code, out, err = cli("evaluate", "evaluate.sets={gone: {path: json, data_files: {test: nowhere.jsonl}}}")
    assert code == 2 and "matches no file" in err  # without skip_missing, a missing file is an error


def test_a_left_out_stage_is_named_with_its_reason(cli, with_set):  # the fixture's run has rlhf turned off
    ev = json.loads((cli.root / "evaluate" / "evaluation.json").read_text())
    assert set(ev["systems"]) == {"base", "finetune"} and "rlhf.enabled is false" in ev["skipped"]["rlhf"]
    md = (cli.root / "evaluate" / "evaluation.md").read_text()
    assert "Left out of this evaluation: **rlhf** (rlhf is skipped" in md


def test_perplexity_equals_a_hand_computation(tiny_causal, tiny_seq2seq):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    prompts, refs = ["Summarize: A asks B for the time.", "Summarize: two people argue about a much longer thing"], \
        ["A wants the time.", "They argue."]
    tok = AutoTokenizer.from_pretrained(tiny_causal)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal).eval()
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                for p in prompts]
    nll, count = likelihood.completion_nll(model, tok, rendered, likelihood.completions(tok, refs), batch_size=2)
    total, tokens = 0.0, 0
    for text, ref in zip(rendered, refs):  # one at a time, unpadded: -log p(ref token | prompt, earlier ref tokens)
        p_ids, r_ids = tok(text, add_special_tokens=False)["input_ids"], tok(ref, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + r_ids])).logits[0].double(), -1)
        total += -sum(float(logp[len(p_ids) + j - 1, t]) for j, t in enumerate(r_ids))
        tokens += len(r_ids)
    assert count.sum() == tokens and nll.sum() == pytest.approx(total, rel=1e-4)
    ppl = systems.perplexity({"nll_sum": nll.tolist(), "tokens": count.tolist()}, 200, 0)["perplexity"]
    assert ppl["value"] == pytest.approx(math.exp(total / tokens), rel=1e-4)
    # seq2seq: the decoder's NLL of the reference given the encoded prompt, as the model's own loss
    tok2 = AutoTokenizer.from_pretrained(tiny_seq2seq)
    t5 = AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq).eval()
    nll2, count2 = likelihood.completion_nll(t5, tok2, prompts, refs, batch_size=2)
    for i, (p, r) in enumerate(zip(prompts, refs)):
        labels = torch.tensor([tok2(r, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = t5(input_ids=torch.tensor([tok2(p)["input_ids"]]), labels=labels).loss
        assert nll2[i] == pytest.approx(float(loss) * labels.shape[1], rel=1e-4) and count2[i] == labels.shape[1]


def test_forgetting_flags_a_model_trained_to_forget(tiny_causal, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lifecycle.config import load

    tok = AutoTokenizer.from_pretrained(tiny_causal)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal)
    forgot = AutoModelForCausalLM.from_pretrained(tiny_causal)
    junk = torch.tensor([tok("zz qq zz qq zz qq zz qq zz qq", add_special_tokens=False)["input_ids"]] * 4)
    optimizer = torch.optim.AdamW(forgot.parameters(), lr=5e-3)
    for _ in range(40):  # teach it one meaningless phrase until it expects nothing else
        loss = forgot(input_ids=junk, labels=junk).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    cfg = load(str(ROOT / "configs" / "tiny.yaml"), ["evaluate.forgetting.limit=30"])
    sample = forgetting.load_sample(cfg.evaluate.forgetting)
    per_system = {name: forgetting.measure(cfg, name, lambda m=m: m.eval(), tiny_causal, {"ref": name}, sample, {})
                  for name, m in (("base", base), ("finetune", forgot))}
    out = forgetting.summarise(per_system, sample, cfg, {"max_general_nll_increase": 0.05})
    change = out["systems"]["finetune"]["vs_base"]
    assert change["delta"] > 0.05 and change["low"] > 0 and change["p_value"] < 0.05
    assert out["pass"] == {"base": True, "finetune": False} and out["threshold_from"].startswith("scope.")
    assert out["systems"]["finetune"]["perplexity"] > out["systems"]["base"]["perplexity"]


def test_lm_eval_tasks_skip_with_a_reason_when_unavailable(monkeypatch):
    from lifecycle.config import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load(str(ROOT / "configs" / "tiny.yaml"), ["evaluate.forgetting.lm_eval_tasks=[hellaswag]"])
    out = forgetting.harness(cfg.evaluate.forgetting, {"base": "unused"})
    assert out["tasks"] == ["hellaswag"] and ("not installed" in out["skipped"] or "offline" in out["skipped"])
    assert forgetting.harness(load(str(ROOT / "configs" / "tiny.yaml")).evaluate.forgetting, {}) is None


def test_shipped_general_text_sample():
    rows = [json.loads(line) for line in forgetting.GENERAL.read_text().splitlines()]
    assert 250 <= len(rows) <= 500 and len({r["text"] for r in rows}) == len(rows)
    assert len({r["topic"] for r in rows}) >= 20 and all(set(r) == {"id", "topic", "text"} for r in rows)
    assert np.mean([len(r["text"].split()) for r in rows]) > 8


@pytest.mark.skipif(not DIALOGSUM.is_file(), reason="../shared/data (DialogSum) is not on this machine")
def test_offline_default_scores_dialogsum_when_present():
    from lifecycle.config import load
    from lifecycle.core import evalsets

    cfg = load(str(ROOT / "configs" / "offline.yaml"))
    spec = cfg.evaluate.sets["dialogsum"]
    assert evalsets.missing_files(spec) is None
    split = evalsets.load_split(spec, "dialogsum")
    assert len(split) == 40 and len(set(split["fname"])) == 40
    from lifecycle import evaluate

    assert spec in evaluate.data_refs(cfg)

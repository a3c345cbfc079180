"""Bad input fails fast: every class of mistake exits 2 with one paragraph naming the key or
file and the fix, no traceback, and before any model is loaded.

Each row runs the real CLI (`python -m lifecycle all` on configs/tiny.yaml with the tiny
models) with some overrides; model loading is booby-trapped, so a row that got as far as
loading a model would fail on that instead of on its message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lifecycle.config import load
from lifecycle.core import library_options, prompts, quiet
from lifecycle.core.config import describe
from lifecycle.core.errors import DataError
from tests.conftest import ROOT

TINY = str(ROOT / "configs" / "tiny.yaml")

# (id, overrides (with {tmp}, {causal} filled in), fragments the message must contain)
CASES = [
    ("learning-rate-not-a-number", ["finetune.training.learning_rate=abc"],
     ["`finetune.training.learning_rate`", '"abc"', "a number"]),
    ("scheduler-typo", ["finetune.training.lr_scheduler_type=cosin"],
     ["`finetune.training.lr_scheduler_type`", "cosin is not a valid SchedulerType", "cosine"]),
    ("library-range-check", ["finetune.training.warmup_steps=-1"],
     ["`finetune.training.warmup_steps`", "trl.SFTConfig"]),
    ("grpo-batch-arithmetic", ["rlhf.training.generation_batch_size=5"],
     ["`rlhf.training.generation_batch_size`", "trl.GRPOConfig", "divisible"]),
    ("target-modules-not-in-model", ["select.pin={causal}", "finetune.lora.target_modules=[q_proj, nonexistent_proj]"],
     ["`finetune.lora.target_modules`", "['nonexistent_proj'] match no module", "q_proj", "all-linear"]),
    ("target-modules-not-names", ["finetune.lora.target_modules=5"],
     ["`finetune.lora.target_modules`", "a list of str", "a string"]),
    ("reward-folder-missing", ["rlhf.reward={{model: {tmp}/no-such-rm, nontoxic_label: non_toxic}}"],
     ["`rlhf.reward.model`", "no-such-rm", "does not exist", "lifecycle.reward_model"]),
    ("reward-label-unknown", ["rlhf.reward={{model: {causal}, nontoxic_label: clean}}"],
     ["`rlhf.reward.nontoxic_label`", "LABEL_0"]),
    ("reward-check-missing", ["rlhf.reward_check={tmp}/probe.jsonl"],
     ["`rlhf.reward_check`", "no such file"]),
    ("toxicity-metric-folder-missing", ["metrics.toxicity={{model: ./no-such-classifier, nontoxic_label: ok}}"],
     ["`metrics.toxicity.model`", "does not exist"]),
    ("qlora-on-cpu", ["finetune.method=qlora"],
     ["`finetune.method`", "CUDA", "finetune.method=lora"]),
    ("pin-not-a-candidate", ["select.pin=gpt2"],
     ["`select.pin`", "one of models.candidates"]),
    ("run-root-not-creatable", ["run.root={tmp}/a-file/runs"],
     ["`run.root`", "a-file/runs", "create and write"]),
    ("one-row-file-with-holdout", ["data.path={tmp}/one.jsonl", "data.holdout=0.2"],
     ["data.holdout=0.2", "1 row(s)", "one.jsonl", "data.data_files"]),
    ("empty-file", ["data.path={tmp}/empty.jsonl"],
     ["data.path", "empty.jsonl", "is empty"]),
    ("inputs-that-cannot-fit", ["scope.max_new_tokens=1900"],
     ["leave fewer than 1900 tokens", "ids demo1-", "data.overlong=truncate_left"]),
]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Every way a stage loads weights, recorded and refused."""
    import transformers

    from lifecycle.core import models

    loaded = []

    def refuse(*args, **kwargs):
        loaded.append(args[:2])
        raise AssertionError(f"a model was loaded: {args[:2]}")

    monkeypatch.setattr(models, "load_model", refuse)
    for name in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)
    return loaded


@pytest.mark.parametrize("overrides, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_key_before_any_model_loads(run_cli, no_model_loads, tmp_path, overrides, fragments):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": "a", "dialogue": "Hi there.", "summary": "A greeting."}) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    filled = [o.format(tmp=tmp_path, causal=run_cli.causal) for o in overrides]
    code, out, err = run_cli("all", *filled)
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert no_model_loads == []
    assert not (run_cli.root / "finetune").exists()


def test_mapping_options_merge_onto_their_defaults(tmp_path):
    from lifecycle.finetune import TRAINING
    from lifecycle.rlhf import WEIGHTS

    yaml = tmp_path / "c.yaml"
    yaml.write_text("finetune:\n  training: {max_steps: 3, learning_rate: 1.0e-3}\n"
                    "rlhf:\n  weights: {length: 0.0}\n")
    cfg = load(str(yaml), ["finetune.lora.r=4"])
    assert cfg.finetune.training == {**TRAINING, "max_steps": 3, "learning_rate": 1e-3}
    assert cfg.finetune.training["lr_scheduler_type"] == "cosine"  # the documented default survives
    assert cfg.finetune.lora["r"] == 4 and cfg.finetune.lora["target_modules"] == "all-linear"
    assert cfg.rlhf.weights == {**WEIGHTS, "length": 0.0}
    assert cfg.rlhf.training["beta"] == 0.05 and cfg.rlhf.lora["lora_dropout"] == 0.0
    helps = {key: text for key, _, text in describe(type(cfg))}
    assert "Merged onto this default" in helps["finetune.training"]
    assert "Merged onto this default" not in helps["finetune.method"]


def test_config_check_builds_library_objects_without_side_effects(tmp_path, monkeypatch):
    from accelerate.state import PartialState

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(PartialState, "_shared_state", {})  # whatever an earlier test in this process set up
    library_options.check(load(TINY))  # what preflight runs before the stages
    assert PartialState._shared_state == {}  # no accelerate process state (or process group) from the check
    assert list(tmp_path.iterdir()) == []  # the check's scratch output_dir is never created


def test_overlong_inputs_are_really_truncated_when_configured(tokenizer):
    query = " ".join(f"word{i}" for i in range(300))
    try:
        for mode, keeps_end in (("truncate_left", True), ("truncate_right", False)):
            prompts.set_overlong(mode)
            prompt = prompts.format_prompt(tokenizer, "Summarize: {input}", query, context=160, max_new_tokens=20)
            length = len(prompts.tokenize(tokenizer, [prompt.text])["input_ids"][0])
            assert prompt.truncated and length + 20 <= 160
            assert ("word299" in prompt.text) == keeps_end
            assert ("word0 " in prompt.text) != keeps_end
        prompts.set_overlong("error")
        with pytest.raises(DataError, match="data.overlong=truncate_left"):
            prompts.format_prompt(tokenizer, "Summarize: {input}", query, context=160, max_new_tokens=20)
    finally:
        prompts.set_overlong("error")


def test_quiet_by_default_and_everything_with_verbose(tmp_path):
    """A real process (import-time notes included): no third-party warnings unless asked for. A library
    option refused in preflight imports PEFT, TRL, transformers and bitsandbytes, and stops there."""
    def refused(*extra):
        cmd = [sys.executable, "-m", "lifecycle", "all", "--config", TINY, f"run.root={tmp_path}",
               "finetune.training.lr_scheduler_type=cosin", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, quiet.VERBOSE_ENV: ""})
        assert done.returncode == 2 and "cosin is not a valid SchedulerType" in done.stderr, done.stderr
        return done.stderr

    filtered, everything = refused(), refused("--verbose")
    assert "Warning" not in filtered and "kernels-community" not in filtered and "[transformers]" not in filtered
    if "kernels-community" in everything:  # bitsandbytes says it only on CPUs with AVX512-BF16
        assert "kernels-community" not in filtered


def test_datasets_imported_after_setup_stays_quiet():
    """datasets sets its logger's level when imported (after the CLI's set-up): its notes, such as a map
    function it cannot hash, must stay filtered then too."""
    code = ("from lifecycle.core import quiet; quiet.setup(); import logging, datasets; "
            "print(datasets.utils.logging.get_verbosity() == logging.ERROR)")
    env = {k: v for k, v in os.environ.items() if k not in ("DATASETS_VERBOSITY", quiet.VERBOSE_ENV)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert done.stdout.strip() == "True", done.stderr


def test_verbose_env_var(monkeypatch):
    for value, shown in (("1", True), ("true", True), ("", False), ("0", False)):
        monkeypatch.setenv(quiet.VERBOSE_ENV, value)
        assert quiet.verbose() is shown

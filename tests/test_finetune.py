"""The finetune stage on tiny models: completion-only loss, packing without
cross-contamination, the saved adapter and merged model, LoRA-only updates,
resume after SIGKILL, and a two-process Accelerate run on CPU."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lifecycle.config import load
from lifecycle.core import models, prompts
from lifecycle.core.store import MANIFEST
from tests.conftest import ROOT

TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture
def finetuned(run_cli):
    code, _, err = run_cli("all", "--until", "finetune", f"models.candidates=[{run_cli.causal}]")
    assert code == 0, err
    return run_cli


def test_completion_only_labels(tiny_causal, tmp_path):
    from trl import SFTConfig, SFTTrainer
    from datasets import Dataset

    tokenizer = models.load_tokenizer(tiny_causal)
    rows = [prompts.training_example(tokenizer, "Summarize: {input}", f"#Person1#: hello {i}", f"They greet {i}.")
            for i in range(4)]
    trainer = SFTTrainer(model=models.load_model(tiny_causal, "cpu"), processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows),
                         args=SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[]))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    prompt_len = len(tokenizer.apply_chat_template(prompts.messages("Summarize: {input}", "#Person1#: hello 0"),
                                                   add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    labels = batch["labels"][0]
    assert (labels[:prompt_len] == -100).all()  # no loss on the prompt
    completion = labels[prompt_len:][labels[prompt_len:] != -100]
    assert tokenizer.decode(completion).startswith("They greet 0.")
    assert tokenizer.eos_token_id in completion.tolist()[-2:]  # the turn ends with EOS (then the template's newline)


def test_packed_sequences_do_not_attend_across_boundaries(tiny_causal):
    """Padding-free packing (TRL's bfd) gives each example exactly its unpacked logits, under the
    condition TRL trains in (use_cache=False: a cache would turn off packed-sequence masking)."""
    model = models.load_model(tiny_causal, "cpu", "float32")  # the tolerances below are fp32's
    a, b = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[10, 11, 12]])
    with torch.inference_mode():
        separate = [model(a).logits[0], model(b).logits[0]]
        packed = model(torch.cat([a, b], 1), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]), use_cache=False).logits[0]
    torch.testing.assert_close(packed[:5], separate[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[5:], separate[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("device, packing", [("cpu", False), ("cuda", True)])
def test_batching_follows_the_hardware_unless_the_config_says(device, packing, tmp_path, monkeypatch, capsys):
    from trl import SFTConfig

    from lifecycle import finetune
    from lifecycle.core.artifacts import StageRun
    from lifecycle.core.store import Run

    monkeypatch.setattr(models, "pick_device", lambda setting="auto": device)
    monkeypatch.setattr(models, "train_in_bf16", lambda dtype, device: False)  # no CUDA query on this machine
    yaml = tmp_path / "c.yaml"
    yaml.write_text("run: {name: r, root: %s}\nfinetune:\n  training: {max_steps: 2}\n" % tmp_path)
    cfg = load(str(yaml))
    run = StageRun(Run(cfg.run), "finetune", tmp_path / "work", inputs={})
    args = finetune._training_args(cfg, run, SFTConfig)
    assert args.packing is packing and args.use_cpu is (device == "cpu")
    assert (args.train_sampling_strategy == "group_by_length") is not packing
    recipe = capsys.readouterr().out
    assert f"packing={packing} (hardware)" in recipe and "max_steps=2 (config)" in recipe and "LoRA r=16" in recipe

    cfg = load(str(yaml), ["finetune.training.packing=false", "finetune.training.train_sampling_strategy=random"])
    args = finetune._training_args(cfg, run, SFTConfig)  # the YAML wins over the hardware's choice
    assert args.packing is False and args.train_sampling_strategy == "random"
    assert "packing=False (config)" in capsys.readouterr().out


def test_finetune_artifacts_adapter_round_trip_and_lora_only_updates(finetuned, tiny_causal):
    from peft import PeftModel

    folder = finetuned.root / "finetune"
    assert {"adapter", "model", "logs", "loss.png", "train_log.json", "prompt.json", "metrics.json", MANIFEST} <= \
        {p.name for p in folder.iterdir()}
    assert not (folder / "checkpoints").exists()
    manifest = json.loads((folder / MANIFEST).read_text())
    m = manifest["metrics"]
    assert m["steps"] == 4 and 0 < m["trainable_parameters"] < m["total_parameters"] and m["train_tokens_per_s"] > 0
    assert m["trainable_percent"] == round(100 * m["trainable_parameters"] / m["total_parameters"], 3)
    assert any(name.startswith("logs/") for name in manifest["outputs"])  # TensorBoard events

    base = models.load_model(tiny_causal, "cpu", "float32")  # the merged model is saved in fp32: compare like with like
    original = {k: v.clone() for k, v in base.state_dict().items()}
    with_adapter = PeftModel.from_pretrained(base, str(folder / "adapter"))
    lora_b = [p for n, p in with_adapter.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: training moved it
    for name, value in with_adapter.get_base_model().state_dict().items():
        if "lora_" not in name and name.replace(".base_layer", "") in original:
            torch.testing.assert_close(value, original[name.replace(".base_layer", "")])  # base weights untouched
    merged = models.load_model(str(folder / "model"), "cpu", "float32")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(merged(ids).logits, models.load_model(tiny_causal, "cpu", "float32")(ids).logits)


def test_full_mode_trains_every_weight(run_cli):
    code, _, err = run_cli("all", "--until", "finetune", f"models.candidates=[{run_cli.causal}]", "finetune.method=full")
    assert code == 0, err
    m = json.loads((run_cli.root / "finetune" / MANIFEST).read_text())["metrics"]
    assert m["trainable_parameters"] == m["total_parameters"] and not (run_cli.root / "finetune" / "adapter").exists()


def test_seq2seq_trains_with_lora(run_cli):
    code, _, err = run_cli("all", "--until", "finetune", f"models.candidates=[{run_cli.seq2seq}]")
    assert code == 0, err
    m = json.loads((run_cli.root / "finetune" / MANIFEST).read_text())["metrics"]
    assert m["steps"] == 4 and m["trainable_parameters"] < m["total_parameters"]


@pytest.mark.parametrize("override, fragment", [
    ("finetune.lora.r=0", "`finetune.lora.r` = 0"),
    ("finetune.lora.rank=8", "a peft.LoraConfig option"),
    ("finetune.training.learning_rate=-1e-4", "a positive learning rate"),
    ("finetune.training.output_dir=/tmp/x", "output_dir and seed come from the run"),
    ("finetune.method=qlora-ish", "one of 'lora', 'qlora', 'full'"),
])
def test_bad_finetune_options(override, fragment):
    from lifecycle.core import library_options
    from lifecycle.core.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment):  # at load, or by PEFT/TRL before the stage runs (preflight)
        library_options.check(load(TINY, [override]))


def _cli(tmp_path, causal, *extra):
    return [sys.executable, "-m", "lifecycle.finetune", "--config", TINY, f"run.root={tmp_path}",
            f"models.candidates=[{causal}]", *extra]


def test_resume_after_sigkill_finishes_the_same_steps(clone_run):
    steps = ["finetune.training.max_steps=8", "finetune.training.save_steps=2"]  # not the completed run's 4
    earlier = (clone_run.root / "finetune" / MANIFEST).read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = _cli(clone_run.root.parent, clone_run.causal, *steps)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = clone_run.root / "finetune.partial" / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints / "checkpoint-4").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (checkpoints / "checkpoint-4").is_dir()
    assert (clone_run.root / "finetune" / MANIFEST).read_text() == earlier  # the last completed finetune is kept
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout and "checkpoint-" in done.stdout
    log = json.loads((clone_run.root / "finetune" / "train_log.json").read_text())
    assert json.loads((clone_run.root / "finetune" / MANIFEST).read_text())["metrics"]["steps"] == 8
    assert [h["step"] for h in log if "loss" in h] == list(range(1, 9))  # resumed: every step once, none repeated

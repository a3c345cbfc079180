"""Fixtures: tiny randomly initialised causal and seq2seq models, saved with
`save_pretrained` (exactly what a user's local model folder looks like), and a
helper to run the real CLI on a temporary run directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The suite never needs the hub; offline mode makes a hub lookup fail at once
# instead of after huggingface_hub's retries (set before it is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Packaged models import into a folder of this session (models.cache_root), never the user's ~/.cache;
# child processes (the fresh-process check, the notebooks' kernels) inherit it.
os.environ["LIFECYCLE_CACHE"] = tempfile.mkdtemp(prefix="lifecycle-test-cache-")
# trackio's local store too (read when trackio is imported), never ~/.cache/huggingface/trackio
os.environ["TRACKIO_DIR"] = os.path.join(os.environ["LIFECYCLE_CACHE"], "trackio")

from lifecycle.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(os.environ["LIFECYCLE_CACHE"], ignore_errors=True)  # an imported model is ~540 MB


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (`make test` runs --dist loadgroup)
def pytest_collection_modifyitems(config, items):
    """Tests on the session's completed run share one worker: the run is made once, while the other
    workers go through the rest of the suite instead of waiting for it."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if "completed_run" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("completed-run"))


def _tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", chat_template=CHAT_TEMPLATE, model_max_length=512)


@pytest.fixture(scope="session")
def tokenizer():
    from lifecycle.core.data import DEMO_DIR

    rows = [json.loads(line) for line in (DEMO_DIR / "dialogues" / "train.jsonl").read_text().splitlines()]
    return _tokenizer([r["dialogue"] for r in rows] + [r["summary"] for r in rows])


def tiny_llama(folder: Path, tokenizer, width: int = 32) -> str:
    """A 2-layer Llama `width` wide with the tiny tokenizer and its chat template, saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _made_once(tmp_path_factory, name: str, make) -> Path:
    """`make(folder)` once per test session, shared by every pytest-xdist worker (their recipe for session
    fixtures): the workers see the same model paths, so one worker's completed run is up to date for all."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # not under xdist
        folder = tmp_path_factory.getbasetemp() / name
        make(folder)
        return folder
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{folder}.lock"):
        if not (folder.parent / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            (folder.parent / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory, tokenizer) -> str:
    return str(_made_once(tmp_path_factory, "tiny-causal", lambda folder: tiny_llama(folder, tokenizer)))


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory, tokenizer) -> str:
    """A 2-layer, 32-wide T5 (encoder-decoder) with the same tokenizer. T5 has no position
    limit; its tokenizer's model_max_length (2048 here, as the tiny BPE makes long inputs) is its context."""
    return str(_made_once(tmp_path_factory, "tiny-seq2seq", lambda folder: _tiny_t5(folder, tokenizer)))


def _tiny_t5(path: Path, tokenizer) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 2048}))


@pytest.fixture
def run_cli(tmp_path, tiny_causal, tiny_seq2seq, capsys):
    """Run `python -m lifecycle ...` in-process on configs/tiny.yaml with the tiny
    models and a temporary run root; returns (exit code, stdout, stderr)."""

    def call(command: str, *overrides: str, config: str = str(ROOT / "configs" / "tiny.yaml")):
        args = [command, "--config", config, f"run.root={tmp_path / 'runs'}",
                f"models.candidates=[{tiny_causal}, {tiny_seq2seq}]", *overrides]
        code = cli_main(args)
        out, err = capsys.readouterr()
        return code, out, err

    call.root = tmp_path / "runs" / "tiny"
    call.causal, call.seq2seq = tiny_causal, tiny_seq2seq
    return call


@pytest.fixture(scope="session")
def completed_run(tmp_path_factory, tiny_causal):
    """One complete `all` of configs/tiny.yaml on the tiny Llama, made once per session; tests that
    only read artifacts or disturb one stage start from a copy (`clone_run`)."""
    def complete(root: Path) -> None:
        code = cli_main(["all", "--config", str(ROOT / "configs" / "tiny.yaml"), f"run.root={root}",
                         f"models.candidates=[{tiny_causal}]"])
        assert code == 0

    return _made_once(tmp_path_factory, "completed-runs", complete)


@pytest.fixture
def clone_run(completed_run, tmp_path, tiny_causal, capsys):
    """A private copy of the completed tiny run, and a CLI caller on it: (exit code, stdout, stderr)."""
    root = tmp_path / "runs"
    shutil.copytree(completed_run, root, symlinks=True)

    def call(command: str, *overrides: str, config: str = str(ROOT / "configs" / "tiny.yaml")):
        code = cli_main([command, "--config", config, f"run.root={root}", f"models.candidates=[{tiny_causal}]",
                         *overrides])
        out, err = capsys.readouterr()
        return code, out, err

    call.root = root / "tiny"
    call.causal = tiny_causal
    return call

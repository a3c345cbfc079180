"""GGUF export on the tiny Llama: read back by transformers (f16 logits equal, q8_0/q4_0 loss
bounded), the tokenizer and chat template in the metadata, generation in llama.cpp when the
runtime is installed, the Ollama Modelfile, and the refusals."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from lifecycle.core import generate, gguf_export, gguf_runtime, modelfile, prompts
from lifecycle.core.artifacts import Prompt
from lifecycle.core.data import DEMO_DIR

PROMPT = Prompt(template=prompts.TEMPLATES["summarize"], generation={"do_sample": False, "max_new_tokens": 8})


@pytest.fixture(scope="module")
def dialogues() -> list[str]:
    rows = [json.loads(line) for line in (DEMO_DIR / "dialogues" / "test.jsonl").read_text().splitlines()]
    return [r["dialogue"] for r in rows[:3]]


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory, tiny_causal) -> dict:
    """f16, q8_0 and q4_0 of the tiny Llama, each in a folder of its own (as a deployment has it)."""
    root = tmp_path_factory.mktemp("gguf")
    return {kind: gguf_export.export(tiny_causal, root / kind / f"model-{kind}.gguf", kind) for kind in ("f16", "q8_0", "q4_0")}


def _nll(model, ids):
    import torch

    with torch.no_grad():
        return model(ids, labels=ids).loss.item(), model(ids).logits


def test_round_trip_through_transformers(ggufs, tiny_causal, tokenizer, dialogues):
    import torch
    from transformers import AutoModelForCausalLM

    ids = tokenizer(dialogues[0], return_tensors="pt")["input_ids"][:, :200]
    ref_loss, ref_logits = _nll(AutoModelForCausalLM.from_pretrained(tiny_causal, dtype=torch.float32).eval(), ids)
    results = {kind: _nll(gguf_runtime.load_with_transformers(path), ids) for kind, path in ggufs.items()}
    assert torch.allclose(results["f16"][1], ref_logits, atol=2e-3)  # half-precision weights, same computation
    assert abs(results["q8_0"][0] - ref_loss) < 0.01  # 8-bit blocks: loss within a hundredth of a nat
    assert abs(results["q4_0"][0] - ref_loss) < 0.1
    sizes = {kind: path.stat().st_size for kind, path in ggufs.items()}
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_0"]


def test_tokenizer_and_chat_template_travel_in_the_file(ggufs, tokenizer, dialogues):
    from transformers import AutoTokenizer

    path = ggufs["q8_0"]
    read = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert read(dialogues[1])["input_ids"] == tokenizer(dialogues[1])["input_ids"]
    assert read.chat_template == tokenizer.chat_template
    assert (read.bos_token, read.eos_token, read.pad_token) == ("<s>", "</s>", "<pad>")


def test_unsupported_architecture_is_refused(tiny_seq2seq, tmp_path):
    with pytest.raises(gguf_export.ExportError, match=r"architecture is T5ForConditionalGeneration.*supports Llama-style"):
        gguf_export.export(tiny_seq2seq, tmp_path / "t5.gguf")
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_rope_scaling_and_quantized_folders_are_refused(tiny_causal, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_causal, folder)
    config = json.loads((folder / "config.json").read_text())
    for change, message in (({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}, "llama3 RoPE scaling"),
                            ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized \\(bitsandbytes\\)")):
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(gguf_export.ExportError, match=message):
            gguf_export.export(folder, tmp_path / "x.gguf")


def _lifecycle_prompts(tokenizer, dialogues, prompt=PROMPT):
    return [prompts.format_prompt(tokenizer, prompt.template, d, [tuple(s) for s in prompt.shot_examples]).text
            for d in dialogues]


@pytest.mark.skipif(gguf_runtime.llamacpp_version() is None,
                    reason="llama.cpp runtime absent: llama-cpp-python is not installed (`make llamacpp` builds it)")
def test_llamacpp_generates_what_transformers_generates(ggufs, tiny_causal, tokenizer, dialogues):
    from transformers import AutoModelForCausalLM

    texts = _lifecycle_prompts(tokenizer, dialogues)
    checks = {kind: gguf_runtime.check_llamacpp(path, texts, PROMPT.generation, threads=1)
              for kind, path in ggufs.items()}
    assert {c.status for c in checks.values()} == {"checked"}, [c.reason for c in checks.values()]
    f16 = checks["f16"]
    assert f16.file_mb > 0 and f16.load_s > 0 and f16.tokens_per_s > 0
    # llama.cpp tokenized the chat-formatted prompt with the file's own vocabulary exactly as transformers does
    assert [g.prompt_tokens for g in f16.generations] == [len(i) for i in prompts.tokenize(tokenizer, texts)["input_ids"]]
    model = AutoModelForCausalLM.from_pretrained(tiny_causal).eval()
    config = generate.generation_config(PROMPT.generation, "prompt generation")
    expected = generate.generate(model, tokenizer, texts, config, batch_size=1)
    assert f16.predictions == [g.prediction for g in expected]


def test_runtime_absent_says_not_checked(ggufs, monkeypatch):
    monkeypatch.setattr(gguf_runtime, "llamacpp_version", lambda: None)
    check = gguf_runtime.check_llamacpp(ggufs["f16"], ["x"], PROMPT.generation)
    assert check.status == "not checked" and "make llamacpp" in check.reason and not check.generations


def _render(go_template: str, text: str) -> str:
    """What Ollama's Go template gives for `.Prompt` = text (only the two constructs the writer emits)."""
    return go_template.replace('{{"{{"}}', "\x01").replace(modelfile.PROMPT, text).replace("\x01", "{{")


def test_modelfile_gives_ollama_the_evaluated_prompt(ggufs, tiny_causal, tokenizer, dialogues):
    prompt = Prompt(template=prompts.TEMPLATES["neutral"], shot_examples=[["#Person1#: Hi.", "They greet."]],
                    generation={"do_sample": False, "max_new_tokens": 8, "repetition_penalty": 1.2})
    path = modelfile.write(ggufs["q8_0"], tiny_causal, prompt, task="dialogue summarization")
    text = path.read_text()
    assert path == ggufs["q8_0"].parent / "Modelfile"
    assert re.search(r"^FROM \./model-q8_0\.gguf$", text, re.M)
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S).group(1)
    assert _render(template, dialogues[0]) == _lifecycle_prompts(tokenizer, dialogues[:1], prompt)[0]
    params = dict(re.findall(r"^PARAMETER (\w+) (.+)$", text, re.M))
    assert params["temperature"] == "0.0" and params["num_predict"] == "8" and params["repeat_penalty"] == "1.2"
    assert 'PARAMETER stop "</s>"' in text


def test_go_template_braces_stay_literal(tokenizer):
    chat = tokenizer.chat_template.replace("<s>assistant", "<s>{{ '{{' }}assistant")
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, chat_template=chat, eos_token="</s>")
    assert '{{"{{"}}assistant' in modelfile.template(tok, PROMPT)

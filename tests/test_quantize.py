"""The quantize stage on tiny models: every variant saves and reloads with its quantization
config, the deployable rule, the clear error when bitsandbytes cannot run a variant, and the
whole lifecycle ending in a deployable folder that a fresh process loads with `pipeline`.

bitsandbytes' 4-bit CPU kernel (AVX512-BF16) packs weights in 64-wide blocks, so the 4-bit
variants run on a 64-wide model here; the suite's 32-wide models show the error it gives."""

import json
import weakref

import pytest
import torch

from lifecycle.config import load
from lifecycle.core import deployable, models, pipeline_check, quantization
from lifecycle.core.errors import ConfigError
from lifecycle.core.store import MANIFEST
from tests.conftest import ROOT, tiny_llama

TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_causal_64(tmp_path_factory, tokenizer) -> str:
    """The suite's tiny Llama, 64 wide: the narrowest bitsandbytes' 4-bit CPU kernel takes."""
    return tiny_llama(tmp_path_factory.mktemp("models") / "tiny-causal-64", tokenizer, width=64)


def _avx512bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return has_avx512bf16()


@pytest.mark.parametrize("variant", list(quantization.VARIANTS))
def test_each_variant_saves_and_reloads_with_its_quantization_config(variant, tiny_causal_64, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    qcfg = load(TINY).quantize
    out = tmp_path / variant
    built, load_variant = [], quantization.load
    monkeypatch.setattr(quantization, "load", lambda *args: built.append(weakref.ref(m := load_variant(*args))) or m)
    seconds = quantization.build(tiny_causal_64, variant, qcfg, "float32", "cpu", out)
    assert seconds > 0 and {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert len(built) == 1 and built[0]() is None  # released: nothing holds the built model once it is saved
    reloaded = AutoModelForCausalLM.from_pretrained(out, device_map="cpu")  # a plain from_pretrained, nothing else
    quant = getattr(reloaded.config, "quantization_config", None)
    expected = quantization.VARIANTS[variant]
    if expected is None:
        assert quant is None and reloaded.dtype == torch.float32
    else:
        quant = quant.to_dict() if not isinstance(quant, dict) else quant
        assert {k: quant[k] for k in expected} == expected  # 8/4 bit, NF4, double quant survive the round trip
    # the saved weights are exactly what quantizing the source gives (nothing scrambled on the way to disk)
    fresh = quantization.load(tiny_causal_64, variant, "cpu", "float32",
                              quantization.quantization_config(variant, qcfg, "float32", "cpu"))
    reference = models.load_model(tiny_causal_64, "cpu", "float32")  # what the variants were built from
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.inference_mode():
        got, want, exact = reloaded(ids).logits, fresh(ids).logits, reference(ids).logits
    torch.testing.assert_close(got, want)
    error = ((got - exact).norm() / exact.norm()).item()
    assert error < 1e-6 if expected is None else 1e-4 < error < 0.5  # quantized: close to the reference, not equal
    assert (reloaded.get_memory_footprint() < reference.get_memory_footprint()) == (expected is not None)


def _row(rouge, memory, latency):
    return {"rougeL": rouge, "memory_mb": memory, "latency_ms_per_token": latency}


CRITERIA = {"max_quality_drop": 0.01, "max_memory_mb": 100.0, "max_latency_ms_per_token": 50.0}


def test_deployable_is_the_smallest_variant_meeting_scope_criteria():
    rows = {"reference": _row(0.30, 120, 20), "int8": _row(0.295, 60, 40), "nf4": _row(0.25, 35, 30),
            "nf4-nodq": _row(0.292, 38, 30)}
    decision = deployable.choose(rows, CRITERIA)
    assert decision["variant"] == "nf4-nodq"  # nf4 is smaller but loses 0.05 ROUGE-L
    assert decision["failures"] == {"reference": ["max_memory_mb (120 > 100)"],
                                    "nf4": ["max_quality_drop (0.05 > 0.01)"]}
    assert decision["checks"]["int8"]["max_quality_drop"] == {"value": 0.005, "limit": 0.01, "ok": True}
    assert "smallest weight memory (38 MiB)" in decision["reason"]
    # a variant better than the reference (negative drop) is fine; ties in memory go to the better quality
    rows = {"reference": _row(0.30, 90, 20), "int8": _row(0.31, 50, 20), "nf4": _row(0.305, 50, 20)}
    assert deployable.choose(rows, CRITERIA)["variant"] == "int8"


def test_no_deployable_variant_says_which_criterion_fails_for_each():
    rows = {"reference": _row(0.30, 120, 20), "int8": _row(0.30, 60, 80), "nf4": _row(0.20, 35, 30)}
    decision = deployable.choose(rows, CRITERIA)
    assert decision["variant"] is None
    assert decision["failures"] == {"reference": ["max_memory_mb (120 > 100)"],
                                    "int8": ["max_latency_ms_per_token (80 > 50)"],
                                    "nf4": ["max_quality_drop (0.1 > 0.01)"]}
    assert decision["reason"].startswith("no variant meets scope's criteria: reference fails max_memory_mb")


def test_clear_error_when_bitsandbytes_cannot_run_a_variant(monkeypatch, tiny_causal_64, tmp_path):
    monkeypatch.setattr(quantization, "problem",
                        lambda name, path, device: "no kernel for this device" if name == "nf4" else None)
    with pytest.raises(quantization.QuantizeError) as err:
        quantization.build(tiny_causal_64, "nf4", load(TINY).quantize, "float32", "cpu", tmp_path / "nf4")
    message = str(err.value)
    assert "variant `nf4` cannot run on cpu: no kernel for this device" in message
    assert "Drop it from quantize.variants" in message and "GPU" in message
    assert not (tmp_path / "nf4").exists()  # nothing half-written
    # the stage checks every configured variant first and names all that cannot run, once per reason
    several = str(quantization.cannot({"nf4": "too narrow", "nf4-nodq": "too narrow"}, "cpu", ["reference", "int8"]))
    assert several.startswith("quantize variants `nf4`, `nf4-nodq` cannot run on cpu: too narrow. Drop them")
    assert "quantize.variants=[reference, int8]" in several


def test_failing_kernel_becomes_the_same_clear_error(monkeypatch, tiny_causal_64, tmp_path):
    monkeypatch.setattr(quantization, "problem", lambda *args: None)

    def broken(model):
        raise RuntimeError("CUDA kernel missing")

    monkeypatch.setattr(quantization, "_smoke_forward", broken)
    with pytest.raises(quantization.QuantizeError, match=r"`int8` cannot run on cpu: bitsandbytes failed with "
                                                         r"RuntimeError: CUDA kernel missing\. Drop it"):
        quantization.build(tiny_causal_64, "int8", load(TINY).quantize, "float32", "cpu", tmp_path / "int8")


def test_4bit_on_a_too_narrow_model_names_the_layer(tiny_causal, tmp_path):
    if not _avx512bf16():  # asked here, not in a skipif: that would import bitsandbytes while collecting the suite
        pytest.skip("bitsandbytes' 64-wide 4-bit CPU packing is the AVX512-BF16 path only")
    with pytest.raises(quantization.QuantizeError, match=r"variant `nf4` cannot run on cpu: .*multiple of 64.*"
                                                         r"`model\.layers\.0\.self_attn\.q_proj`, 32 -> 32"):
        quantization.build(tiny_causal, "nf4", load(TINY).quantize, "float32", "cpu", tmp_path / "nf4")
    assert quantization.problem("int8", tiny_causal, "cpu") is None


def test_seq2seq_variant_loads_in_a_fresh_process(tiny_seq2seq, tmp_path):
    """transformers 5 has no text2text pipeline: a T5 deployable is checked with its model class."""
    out = tmp_path / "int8"
    quantization.build(tiny_seq2seq, "int8", load(TINY).quantize, "float32", "cpu", out)
    check = pipeline_check.check(out, "Summarize: #Person1#: Hello. #Person2#: Hi.", "cpu")
    assert check["ok"] and check["loader"] == "AutoModelForSeq2SeqLM + generate" and isinstance(check["summary"], str)


@pytest.mark.parametrize("override, fragment", [
    ("quantize.variants=[int8, nf4]", "includes `reference`"),
    ("quantize.variants=[reference, fp8]", "one of 'reference', 'int8', 'nf4', 'nf4-nodq'"),
    ("quantize.variants=[reference, int8, int8]", "each variant once"),
    ("quantize.bitsandbytes.load_in_4bit=true", "the variant names set 8/4 bit"),
    ("quantize.bitsandbytes.threshold=6", "a BitsAndBytesConfig option"),
    ("quantize.limit=0", "a positive number of examples"),
    ("quantize.compute_dtype=int8", "one of 'auto', 'float32'"),
])
def test_bad_quantize_options(override, fragment):
    from lifecycle.core import library_options

    with pytest.raises(ConfigError, match=fragment):  # at load, or by bitsandbytes' config before the stage runs
        library_options.check(load(TINY, [override]))


@pytest.mark.slow
def test_lifecycle_ends_in_a_measured_deployable_variant(run_cli, tiny_causal_64):
    from huggingface_hub import ModelCard

    variants = ["reference", "int8", "nf4", "nf4-nodq"]
    args = ("all", f"models.candidates=[{tiny_causal_64}]", f"quantize.variants=[{', '.join(variants)}]",
            "quantize.check_pipeline=true", "scope.criteria.max_quality_drop=1.0",
            "quantize.gguf.types=[]")  # the bitsandbytes variants; the tiny run's GGUF row is tested above
    code, out, err = run_cli(*args)
    assert code == 0, err
    folder = run_cli.root / "quantize"
    assert {p.name for p in folder.iterdir()} == {"variants", "quantize.json", "quantize.md", "quantize.png",
                                                  "deployable.json", MANIFEST}
    report = json.loads((folder / "quantize.json").read_text())
    rows = report["variants"]
    assert list(rows) == variants and report["test_examples"] == 4
    assert report["source"]["stage"] == "rlhf" and report["source"]["base_model"] == tiny_causal_64  # RLHF model preferred
    assert report["measured_on"]["device"].startswith("cpu")
    for name, row in rows.items():
        assert {p.name for p in (folder / "variants" / name).iterdir()} >= {
            "config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "prompt.json", "README.md"}
        assert row["memory_mb"] > 0 and row["disk_mb"] > 0 and row["load_s"] > 0 and row["tokens_per_s"] > 0
        assert row["latency_ms_per_token"] > 0 and len(row["per_example"]["rougeL"]) == 4
        assert row["scores"]["rougeL"]["low"] <= row["scores"]["rougeL"]["value"] <= row["scores"]["rougeL"]["high"]
        assert set(row["vs_reference"]) == (set() if name == "reference" else {"rougeL", "toxicity"})
        card = (folder / "variants" / name / "README.md").read_text()
        final = str(folder / "variants" / name)
        assert f'AutoModelForCausalLM.from_pretrained("{final}")' in card and "pipeline(\"text-generation\"" in card
        assert run_cli.root.name in card and "manifest sha256" in card
        metadata = ModelCard.load(folder / "variants" / name / "README.md").data
        assert metadata.pipeline_tag == "text-generation" and metadata.base_model == tiny_causal_64
        assert ("bitsandbytes" in metadata.tags) == (name != "reference")
    assert rows["nf4"]["quantization_config"]["bnb_4bit_use_double_quant"] is True
    assert rows["nf4-nodq"]["quantization_config"]["bnb_4bit_use_double_quant"] is False
    assert rows["int8"]["memory_ratio"] < 1 and rows["nf4"]["memory_ratio"] <= rows["int8"]["memory_ratio"]
    # every criterion is loose, so every variant meets them and a 4-bit one, the smallest, is deployable;
    # a fresh process loads it
    decision = json.loads((folder / "deployable.json").read_text())
    smallest = decision["variant"]
    assert smallest in ("nf4", "nf4-nodq") and decision["failures"] == {}
    assert decision["path"] == str(folder / "variants" / smallest)
    check = decision["pipeline_check"]
    assert check["ok"] and check["loader"] == 'pipeline("text-generation")' and isinstance(check["summary"], str)
    metrics = json.loads((folder / MANIFEST).read_text())["metrics"]
    assert metrics["deployable"] == smallest and metrics["deployable_summary"] == check["summary"]
    assert metrics["nf4_memory_ratio"] == rows["nf4"]["memory_ratio"] and "int8_rougeL_delta" in metrics
    md = (folder / "quantize.md").read_text()
    assert "Measured on **cpu" in md and f"Deployable: **{smallest}**" in md and "Fresh-process check" in md
    code, out, _ = run_cli("quantize", *args[1:])
    assert code == 0 and "quantize: up to date" in out



def test_quantize_writes_gguf_rows_checked_in_llamacpp(completed_run):
    from huggingface_hub import ModelCard

    from lifecycle.core import gguf_runtime

    folder = completed_run / "tiny" / "quantize"
    row = json.loads((folder / "quantize.json").read_text())["variants"]["gguf-q8_0"]
    variant = folder / "variants" / "gguf-q8_0"
    assert {p.name for p in variant.iterdir()} == {"model-q8_0.gguf", "Modelfile", "prompt.json",
                                                   "generation_config.json", "README.md"}  # no tokenizer.json to mix in
    assert "FROM ./model-q8_0.gguf" in (variant / "Modelfile").read_text()
    assert row["memory_mb"] == row["disk_mb"] == round((variant / "model-q8_0.gguf").stat().st_size / 2**20, 3)
    assert set(row["vs_reference"]) == {"rougeL", "toxicity"} and len(row["per_example"]["rougeL"]) == 4
    assert row["transformers_reader"]["examples"] == 4  # the second reader is measured either way
    if gguf_runtime.llamacpp_version() is None:  # never a silent pass
        assert row["runtime"] == "not checked" and "make llamacpp" in row["runtime_note"]
        assert row["tokens_per_s"] is None and row["transformers_reader"]["same_as_llamacpp"] is None
    else:
        assert row["runtime"] == "checked" and row["runtime_note"].startswith("llama.cpp (llama-cpp-python")
        assert row["load_s"] > 0 and row["tokens_per_s"] > 0 and row["latency_ms_per_token"] > 0
        assert 0 <= row["transformers_reader"]["same_as_llamacpp"] <= 4
    md = (folder / "quantize.md").read_text()
    assert "| gguf-q8_0 | GGUF Q8_0" in md and f"llama.cpp **{row['runtime']}**" in md
    card = (variant / "README.md").read_text()
    assert 'gguf_file="model-q8_0.gguf"' in card and "from llama_cpp import Llama" in card
    assert f"ollama create gguf-q8_0 -f {variant}/Modelfile" in card and "python -m lifecycle serve" in card
    assert {"gguf", "llama.cpp", "ollama"} <= set(ModelCard.load(variant / "README.md").data.tags)
    assert "python -m lifecycle serve" in (folder / "variants" / "reference" / "README.md").read_text()


def test_deployable_rule_takes_a_gguf_only_when_llamacpp_ran_it():
    rows = {"reference": _row(0.30, 120, 20), "int8": _row(0.30, 60, 40),
            "gguf-q8_0": {**_row(0.30, 40, 30), "runtime": "checked"},
            "gguf-q4_0": {**_row(0.30, 25, None), "runtime": "not checked"}}
    decision = deployable.choose(rows, CRITERIA)
    assert decision["variant"] == "gguf-q8_0"  # the smaller q4_0 was never run by a runtime
    assert decision["failures"] == {"reference": ["max_memory_mb (120 > 100)"], "gguf-q4_0": ["runtime not checked"]}


def test_unsupported_architecture_gets_a_note_and_no_gguf_rows(tiny_seq2seq, tiny_causal):
    from lifecycle.core import gguf_variants, quantreport

    reason = gguf_variants.refusal(tiny_seq2seq)
    assert reason.startswith(f"cannot export `{tiny_seq2seq}` as GGUF: its architecture is T5ForConditionalGeneration")
    assert gguf_variants.refusal(tiny_causal) is None
    notes = quantreport._gguf_notes({"reference": {}}, {"gguf_refused": reason})
    assert notes[:3] == ["## GGUF", "", f"No GGUF variants: {reason}"]


def test_a_run_made_from_a_relative_root_quantizes_from_any_directory(clone_run, tmp_path, monkeypatch):
    """Manifests record their upstream's path as the run was written, relative to the directory it ran from;
    quantize's lineage reads the run's own folder instead, so a run keeps working when read from elsewhere."""
    monkeypatch.chdir(tmp_path)  # the clone lies in tmp_path/runs
    code, _, err = clone_run("rlhf", "--force", "run.root=runs")  # its manifest names runs/tiny/finetune/…
    assert code == 0, err
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = clone_run("quantize", "quantize.variants=[reference]", "quantize.gguf.types=[]",
                             "quantize.check_pipeline=false")
    assert code == 0, err
    report = json.loads((clone_run.root / "quantize" / "quantize.json").read_text())
    assert report["source"]["stage"] == "rlhf" and report["source"]["base_model"] == clone_run.causal


def test_a_rerun_reuses_the_gguf_readers_predictions_without_loading_the_file(clone_run, monkeypatch):
    from lifecycle.core import gguf_runtime

    def unwanted(path):
        raise AssertionError(f"{path} was dequantized although its predictions are this run's already")

    monkeypatch.setattr(gguf_runtime, "load_with_transformers", unwanted)
    code, out, err = clone_run("quantize", "--force", "quantize.variants=[reference]", "quantize.check_pipeline=false")
    assert code == 0, err
    assert "quantize gguf-q8_0 (transformers gguf_file=): reusing the 4 predictions" in out
    row = json.loads((clone_run.root / "quantize" / "quantize.json").read_text())["variants"]["gguf-q8_0"]
    assert row["transformers_reader"]["examples"] == 4

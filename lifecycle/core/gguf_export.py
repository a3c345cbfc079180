"""GGUF export: a merged causal model folder (`save_pretrained`) written as one GGUF file for
llama.cpp, Ollama and LM Studio, with its tokenizer and chat template in the metadata.

Pure Python, nothing compiled: the `gguf` package's writer, its tensor-name maps and its
NumPy quantizers (F16, Q8_0, Q4_0). The layout follows llama.cpp's own converter for the
architectures it shares with us: Llama-style decoders (Llama, SmolLM2, Mistral) with a
byte-level BPE vocabulary. Anything else is refused before a byte is written, saying so.

    from lifecycle.core import gguf_export
    gguf_export.export("runs/x/quantize/variants/reference", "model-q8_0.gguf", "q8_0")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lifecycle.core.config import option, require
from lifecycle.core.errors import ModelError

GGUFType = Literal["f16", "q8_0", "q4_0"]
# transformers class -> GGUF architecture; llama.cpp's converter writes Mistral as `llama` too.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}
SUPPORTED = ("Llama-style decoders (LlamaForCausalLM: Llama, SmolLM2; MistralForCausalLM) with a byte-level BPE "
             "tokenizer, unquantized, default RoPE")


@dataclass
class GGUFConfig:
    types: list[GGUFType] = option(["f16", "q8_0"], help="GGUF files to write ([] for none): f16 (2 bytes a weight), "
                                   "q8_0 (8-bit blocks of 32), q4_0 (4-bit blocks of 32; the output projection stays q8_0).")
    runtime_check: bool = option(True, help="Load each GGUF in llama.cpp (llama-cpp-python, `make llamacpp`) and "
                                 "generate the test summaries; without the runtime the rows say `not checked`.")
    threads: int | None = option(None, help="llama.cpp threads for the check (null: torch's thread count).")

    def __post_init__(self):
        require(len(set(self.types)) == len(self.types), "types", self.types, "each GGUF type once")
        require(self.threads is None or self.threads > 0, "threads", self.threads, "a positive number or null")


class ExportError(ModelError):
    """A model folder that cannot be written as GGUF."""


def export(model_dir: str | Path, out: str | Path, kind: GGUFType = "f16") -> Path:
    """Write `model_dir` as a GGUF of `kind` at `out` (atomically) and return its path."""
    import gguf

    folder, out = Path(model_dir), Path(out)
    config = json.loads((folder / "config.json").read_text())
    refuse_unsupported(folder, config)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tmp = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, ARCHITECTURES[config["architectures"][0]])
    _add_hparams(writer, config, kind)
    _add_tokenizer(writer, folder, tokenizer, config["vocab_size"])
    for name, array in _tensors(folder, config):
        qtype = _tensor_type(name, array, kind, tied=bool(config.get("tie_word_embeddings")))
        writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def refuse_unsupported(folder: Path, config: dict) -> None:
    """An ExportError, before any work, for what this exporter does not write correctly."""
    arch = (config.get("architectures") or ["?"])[0]
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    problem = None
    if arch not in ARCHITECTURES:
        problem = f"its architecture is {arch}"
    elif config.get("quantization_config"):
        problem = f"it is quantized ({config['quantization_config'].get('quant_method', '?')}); export the unquantized reference"
    elif rope.get("rope_type", rope.get("type", "default")) != "default":
        problem = f"it uses {rope.get('rope_type', rope.get('type'))} RoPE scaling"
    elif not (folder / "tokenizer.json").is_file():
        problem = "it has no tokenizer.json (a fast tokenizer)"
    else:
        problem = _tokenizer_problem(json.loads((folder / "tokenizer.json").read_text()))
    if problem:
        raise ExportError(f"cannot export `{folder}` as GGUF: {problem}. The GGUF exporter supports {SUPPORTED}. "
                          "Deploy this model through its save_pretrained folder or `python -m lifecycle serve` instead, "
                          "or convert it with llama.cpp's convert_hf_to_gguf.py, which knows more architectures.")


def _tokenizer_problem(tokenizer: dict) -> str | None:
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (tokenizer.get("decoder") or {}).get("type") != "ByteLevel":
        return f"its tokenizer is not byte-level BPE ({model.get('type')}, decoder {(tokenizer.get('decoder') or {}).get('type')})"
    if _pre_tokenizer(tokenizer) is None:
        return f"its pre-tokenizer ({json.dumps(tokenizer.get('pre_tokenizer'))[:120]}) is not one llama.cpp names"
    return None


def _pre_tokenizer(tokenizer: dict) -> str | None:
    """llama.cpp's name for the way the text is split before BPE, when both readers know it:
    GPT-2's own regex (a plain ByteLevel pre-tokenizer), or a split regex that transformers'
    GGUF reader maps to a llama.cpp name (Llama 3, Qwen 2, ...)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = tokenizer.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # llama.cpp's name for GPT-2's split regex
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    regex = next((s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"), None)
    return next((name for name, split in GGUF_PRE_TOKENIZER_SPLITS.items() if split == regex), None)


def _add_hparams(writer, config: dict, kind: GGUFType) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(Path(config.get("_name_or_path") or "model").name or "model")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    if head_dim != config["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer, folder: Path, tokenizer: dict, vocab_size: int) -> None:
    """Tokens, their types and merges as llama.cpp's BPE reads them; special ids, add-BOS and
    the chat template from the tokenizer's own files (gguf's SpecialVocab, as llama.cpp's converter)."""
    import gguf

    tokens = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in tokens}
    for added in tokenizer.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    if max(tokens) >= vocab_size:
        raise ExportError(f"cannot export `{folder}` as GGUF: its tokenizer has token id {max(tokens)}, beyond the "
                          f"model's vocab_size {vocab_size}.")
    # Rows of the embedding that no token uses (vocab padded to a round size) get placeholder names.
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_token_list([tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)])
    writer.add_token_types([types.get(i, gguf.TokenType.UNUSED) for i in range(vocab_size)])
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def _tensors(folder: Path, config: dict):
    """(GGUF name, float32 array) for every weight, Q and K rows reordered for llama.cpp's RoPE."""
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as weights:
            for key in weights.keys():
                if key.startswith("lm_head.") and config.get("tie_word_embeddings"):
                    continue  # the same matrix as the embedding: llama.cpp reuses token_embd
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ExportError(f"cannot export `{folder}` as GGUF: weight `{key}` has no llama.cpp name.")
                array = weights.get_tensor(key).float().numpy()
                if key.endswith(("q_proj.weight", "q_proj.bias")):
                    array = _permute(array, heads)
                elif key.endswith(("k_proj.weight", "k_proj.bias")):
                    array = _permute(array, kv_heads)
                yield name, array


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF stores Q/K with each head's rotary halves split; llama.cpp's `llama` RoPE pairs adjacent
    rows, so interleave them back (what convert_hf_to_gguf.py does; transformers undoes it on read)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _tensor_type(name: str, array: np.ndarray, kind: GGUFType, tied: bool):
    """Norms and biases stay F32, as llama.cpp keeps them; rows that do not fill whole 32-wide blocks fall back to
    F16; in a q4_0 file the output projection (the tied embedding) stays Q8_0, as llama-quantize keeps it higher."""
    import gguf

    if array.ndim < 2:
        return gguf.GGMLQuantizationType.F32
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "q4_0": gguf.GGMLQuantizationType.Q4_0}[kind]
    output = name == "output.weight" or (tied and name == "token_embd.weight")
    if kind == "q4_0" and output:
        qtype = gguf.GGMLQuantizationType.Q8_0
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if array.shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16

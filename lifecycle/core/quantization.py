"""Deployment variants through bitsandbytes: each variant's BitsAndBytesConfig, building one
from the fine-tuned model and saving it (quantization config included), loading it back from
its folder, and why a variant cannot run on this device, said as an error a user can act on."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import time
from pathlib import Path

from lifecycle.core import generate, models
from lifecycle.core.artifacts import Prompt
from lifecycle.core.config import require
from lifecycle.core.errors import LifecycleError, one_line
from lifecycle.core.library_options import library_object
from lifecycle.core.store import write_json

# Each variant is a BitsAndBytesConfig (None: the unquantized reference the others are compared with).
VARIANTS: dict[str, dict | None] = {
    "reference": None,
    "int8": {"load_in_8bit": True},
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
    "nf4-nodq": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": False},
}
DESCRIPTION = {"reference": "unquantized", "int8": "LLM.int8 (8-bit, fp16 outliers)",
               "nf4": "4-bit NF4, double quant", "nf4-nodq": "4-bit NF4"}
RESERVED = {"load_in_8bit", "load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype"}
BLOCKSIZE = 64  # bitsandbytes' 4-bit block size; its CPU kernel packs whole blocks of each weight row


class QuantizeError(LifecycleError):
    """A variant cannot be produced or loaded on this device."""


def check_options(options: dict, variants: list[str]) -> None:
    """Config errors for `quantize.bitsandbytes`: keys BitsAndBytesConfig does not take or the variant
    names set, and BitsAndBytesConfig's own checks of the options under each configured variant."""
    from transformers import BitsAndBytesConfig

    known = set(inspect.signature(BitsAndBytesConfig.__init__).parameters) - {"self", "kwargs"}
    for key in options:
        require(key in known - RESERVED, f"bitsandbytes.{key}", options[key],
                "a BitsAndBytesConfig option such as llm_int8_threshold, llm_int8_skip_modules or "
                "bnb_4bit_quant_storage (the variant names set 8/4 bit, quant type and double quant; "
                "compute dtype is quantize.compute_dtype)")
    for name in variants:
        if VARIANTS[name]:
            library_object(BitsAndBytesConfig, {**options, **VARIANTS[name]}, "bitsandbytes")


def quantization_config(name: str, qcfg, dtype: str, device: str):
    """The variant's transformers.BitsAndBytesConfig under the `quantize` section `qcfg` (None for the reference)."""
    from transformers import BitsAndBytesConfig

    if VARIANTS[name] is None:
        return None
    options = {**qcfg.bitsandbytes, **VARIANTS[name]}
    if options.get("load_in_4bit"):
        options["bnb_4bit_compute_dtype"] = models.pick_dtype(
            dtype if qcfg.compute_dtype == "auto" else qcfg.compute_dtype, device)
    return BitsAndBytesConfig(**options)


def build(source_dir: str, name: str, qcfg, dtype: str, device: str, out: Path, gen_config=None,
          prompt: Prompt | None = None) -> float:
    """Load the source model as variant `name`, save it (quantization config included) with its
    tokenizer to `out`, and return the seconds the load and quantization took."""
    from accelerate.utils import release_memory

    if reason := problem(name, source_dir, device):
        raise cannot({name: reason}, device)
    began = time.perf_counter()
    with _bitsandbytes_errors(name, device):
        model = load(source_dir, name, device, dtype, quantization_config(name, qcfg, dtype, device))
    seconds = round(time.perf_counter() - began, 2)
    tokenizer = models.load_tokenizer(source_dir)
    if gen_config is not None:  # the decoding it is measured with (and the model's special tokens): pipeline() uses it too
        model.generation_config = generate.with_special_tokens(gen_config, model, tokenizer)
    # Saved before any forward pass: on CPU, bitsandbytes 0.50 repacks 4-bit weights for its AVX512-BF16
    # kernel on the first forward, and saving a repacked NF4 layer without double quantization writes
    # (and leaves in memory) scrambled scales.
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if prompt is not None:
        write_json(out / "prompt.json", dataclasses.asdict(prompt))
    with _bitsandbytes_errors(name, device):
        _smoke_forward(model)  # kernels that fail on this device fail here, not halfway through the measurements
    model, = release_memory(model)  # this frame held the only reference: nothing keeps the weights alive now
    return seconds


def load(path: str, name: str, device: str, dtype: str, quant=None):
    """A variant on `device`: the reference through models.load_model, a quantized one with its
    BitsAndBytesConfig (or the one saved in its folder) placed by device_map, since it cannot be moved."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if VARIANTS[name] is None:
        return models.load_model(path, device, dtype)
    cls = AutoModelForSeq2SeqLM if models.is_seq2seq(path) else AutoModelForCausalLM
    extra = {"quantization_config": quant} if quant is not None else {}
    return cls.from_pretrained(path, dtype=models.pick_dtype(dtype, device), device_map={"": device}, **extra).eval()


def problem(name: str, source_dir: str, device: str) -> str | None:
    """Why bitsandbytes cannot run variant `name` on `device` (None when it can, as far as we know)."""
    if VARIANTS[name] is None:
        return None
    try:
        import bitsandbytes
        from bitsandbytes.functional import has_avx512bf16
    except ImportError as err:
        return f"bitsandbytes is not importable ({err}); install it with `pip install bitsandbytes`"
    if device == "cpu" and VARIANTS[name].get("load_in_4bit") and has_avx512bf16():
        # bitsandbytes' AVX512-BF16 CPU kernel repacks each 4-bit weight in whole 64-wide blocks
        # (and rows in groups of 32) on the first forward, and fails on layers narrower than that.
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = models.load_config(source_dir)
        with init_empty_weights():
            cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            skeleton = cls.from_config(config)
        head = skeleton.get_output_embeddings()
        bad = [(n, m.in_features, m.out_features) for n, m in skeleton.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head
               and (m.in_features % BLOCKSIZE or m.out_features % 32)]
        if bad:
            layer, k, n = bad[0]
            return (f"bitsandbytes {bitsandbytes.__version__}'s 4-bit CPU kernel (AVX512-BF16) needs linear layers "
                    f"whose input width is a multiple of {BLOCKSIZE} and output width a multiple of 32, but "
                    f"{len(bad)} layer(s) are not (first: `{layer}`, {k} -> {n})")
    return None


def cannot(problems: dict[str, str], device: str, keep: list[str] | None = None) -> QuantizeError:
    """The variants that cannot run, why, and what to do instead (`keep`: the variants to suggest)."""
    keep = keep if keep is not None else [v for v in VARIANTS if v not in problems]
    names = ", ".join(f"`{n}`" for n in problems)
    why = "; ".join(dict.fromkeys(problems.values()))  # the same reason once
    several = len(problems) > 1
    return QuantizeError(f"quantize variant{'s' if several else ''} {names} cannot run on {device}: {why}. "
                         f"Drop {'them' if several else 'it'} from quantize.variants (e.g. "
                         f"quantize.variants=[{', '.join(keep)}]) or run the stage on a CUDA GPU, where bitsandbytes "
                         "supports every variant.")


@contextlib.contextmanager
def quiet_bitsandbytes():
    """LLM.int8 on CPU logs a warning on every matmul (its inputs are cast to fp16); once is in the report."""
    noisy = logging.getLogger("bitsandbytes.autograd._functions")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        yield
    finally:
        noisy.setLevel(level)


@contextlib.contextmanager
def _bitsandbytes_errors(name: str, device: str):
    """A quantized variant's library error as a QuantizeError that says what to do."""
    try:
        yield
    except (RuntimeError, ValueError, ImportError, AssertionError) as err:
        if VARIANTS[name] is None:
            raise
        said = one_line(err)
        raise cannot({name: f"bitsandbytes failed with {type(err).__name__}: {said}"}, device) from None


def _smoke_forward(model) -> None:
    import torch

    ids = torch.ones((1, 2), dtype=torch.long, device=model.device)
    with torch.inference_mode():
        if model.config.is_encoder_decoder:
            model(input_ids=ids, decoder_input_ids=ids)
        else:
            model(input_ids=ids)

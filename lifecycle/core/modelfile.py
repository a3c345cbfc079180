"""Ollama Modelfile next to a GGUF, so `ollama create` serves the prompts the lifecycle evaluated.

Ollama templates are Go templates, not the model's Jinja chat template, so the Modelfile's
TEMPLATE is the run's whole prompt rendered once through the model's own chat template —
instruction, few-shot turns, role markers, any default system prompt — with `{{ .Prompt }}`
where the dialogue goes. A user sends the raw dialogue (`ollama run <name> "<dialogue>"`) and
the model sees exactly what it saw in evaluation. The decoding is the run's chosen one
(the same llama.cpp sampler settings the GGUF check uses), stopping at the model's EOS tokens.

    ollama create <name> -f <variant folder>/Modelfile
"""

from __future__ import annotations

from pathlib import Path

from lifecycle.core import gguf_runtime, models, prompts
from lifecycle.core.artifacts import Prompt
from lifecycle.core.errors import ModelError
from lifecycle.core.store import write_text

SLOT = "\x00dialogue\x00"  # stands in for the user's text while the chat template renders
PROMPT = "{{ .Prompt }}"


def write(gguf: str | Path, model_dir: str | Path, prompt: Prompt, task: str = "") -> Path:
    """Write `Modelfile` beside `gguf`, for the model in `model_dir` (its tokenizer and chat template)
    used with `prompt` (prompt.json: template, shot_examples, generation); return its path."""
    gguf = Path(gguf)
    path = gguf.parent / "Modelfile"
    write_text(path, modelfile(gguf.name, models.load_tokenizer(str(model_dir)), prompt, task))
    return path


def modelfile(gguf_name: str, tokenizer, prompt: Prompt, task: str = "") -> str:
    """The Modelfile text: FROM the GGUF beside it, the run's prompt as TEMPLATE, its decoding as PARAMETERs."""
    options = gguf_runtime.sampling(prompt.generation)
    params = {"temperature": options["temperature"], "top_k": options["top_k"], "top_p": options["top_p"],
              "min_p": options["min_p"], "repeat_penalty": options["repeat_penalty"],
              "repeat_last_n": -1,  # the whole context, as transformers' repetition_penalty
              "num_predict": options["max_tokens"]}
    lines = [f"# {task or 'the lifecycle run'}: send the raw input; the template adds the evaluated prompt.",
             "# ollama create <name> -f Modelfile && ollama run <name> \"<input>\"",
             f"FROM ./{gguf_name}", "", f'TEMPLATE """{template(tokenizer, prompt)}"""', ""]
    lines += [f"PARAMETER {key} {value}" for key, value in params.items()]
    lines += [f'PARAMETER stop "{stop}"' for stop in stop_tokens(tokenizer)]
    return "\n".join(lines) + "\n"


def template(tokenizer, prompt: Prompt) -> str:
    """The run's prompt for one input as a Go template: literal text around `{{ .Prompt }}`."""
    shots = [tuple(s) for s in prompt.shot_examples]
    text = prompts.format_prompt(tokenizer, prompt.template, SLOT, shots).text
    if text.count(SLOT) != 1 or '"""' in text:
        raise ModelError("cannot write an Ollama template for this prompt: the chat template "
                         + ("contains triple quotes" if '"""' in text else "does not show the input exactly once")
                         + ". Use the GGUF with llama.cpp or the save_pretrained folder instead.")
    before, after = text.split(SLOT)
    return _literal(before) + PROMPT + _literal(after)


def stop_tokens(tokenizer) -> list[str]:
    """The EOS token(s) as text: where a summary ends."""
    eos = tokenizer.eos_token_id if isinstance(tokenizer.eos_token_id, list) else [tokenizer.eos_token_id]
    return [tokenizer.convert_ids_to_tokens(i) for i in eos if i is not None]


def _literal(text: str) -> str:
    """Text printed as is by a Go template: only `{{` starts an action there."""
    return text.replace("{{", '{{"{{"}}')

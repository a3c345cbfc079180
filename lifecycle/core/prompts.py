"""Prompt formatting: an instruction template, optional few-shot examples, and the
model's chat template when it has one.

A template is text with one `{input}` placeholder. Few-shot examples come from the
train split only, and are dropped (last first) when the prompt plus the output budget
would not fit the model's context: the caller learns how many were dropped, so a
few-shot prompt never overflows silently. An input too long even zero-shot is an
error, or, with `data.overlong` set to truncate_left / truncate_right, has its own
tokens cut from that side until the prompt fits — the same in every stage, since
every stage loads its data through `data.load`, which sets the policy here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.core.errors import DataError

TEMPLATES = {
    "summarize": "Summarize the following conversation.\n\n{input}\n\nSummary:",
    "neutral": "Write a short, neutral summary of this dialogue in one to three sentences, referring to the "
               "speakers as #Person1# and #Person2#. Report any conflict without repeating insults.\n\n{input}",
    "flan": "Dialogue:\n\n{input}\n\nWhat was going on?",
}


OVERLONG = ("error", "truncate_left", "truncate_right")
_overlong = "error"


@dataclass
class Prompt:
    text: str
    shots_used: int
    shots_dropped: int
    truncated: bool = False  # the input itself was cut to fit (data.overlong)


def set_overlong(mode: str) -> None:
    """What format_prompt does with an input that cannot fit even zero-shot (one of OVERLONG)."""
    global _overlong
    if mode not in OVERLONG:
        raise ValueError(f"overlong mode {mode!r} is not one of {OVERLONG}")
    _overlong = mode


def check_template(template: str) -> bool:
    return template.count("{input}") == 1


def format_prompt(tokenizer, template: str, query: str, shots: list[tuple[str, str]] = (), context: int | None = None,
                  max_new_tokens: int = 0) -> Prompt:
    """The full prompt text for `query`, with as many of `shots` (input, target) as fit."""
    shots, wanted, truncated = list(shots), len(shots), False
    while True:
        text = _render(tokenizer, template, query, shots)
        length = len(tokenize(tokenizer, [text])["input_ids"][0])
        if context is None or length + max_new_tokens <= context:
            return Prompt(text, len(shots), wanted - len(shots), truncated)
        if shots:
            shots.pop()
            continue
        if _overlong == "error":
            raise DataError(f"a prompt of {length} tokens plus {max_new_tokens} new tokens does not fit "
                            f"the model's {context}-token context, even without few-shot examples. Shorten the inputs, "
                            "lower scope.max_new_tokens, pick a model with a longer context, or set "
                            "data.overlong=truncate_left (or truncate_right) to cut such inputs to fit.")
        query, truncated = truncate(tokenizer, query, length + max_new_tokens - context, _overlong), True


def truncate(tokenizer, text: str, tokens: int, mode: str) -> str:
    """`text` without `tokens` of its tokens, cut from the left (truncate_left: keeps the end) or the right."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokens >= len(ids):
        raise DataError(f"the prompt template and scope.max_new_tokens alone take the whole context: cutting "
                        f"the input to nothing would not make it fit (data.overlong={mode}). Use a shorter "
                        "template, lower scope.max_new_tokens, or pick a model with a longer context.")
    kept = ids[tokens:] if mode == "truncate_left" else ids[:len(ids) - tokens]
    return tokenizer.decode(kept, skip_special_tokens=True)


def format_prompts(tokenizer, template: str, queries: list[str], shots: list[tuple[str, str]] = (),
                   context: int | None = None, max_new_tokens: int = 0) -> tuple[list[str], int]:
    """Prompts for many queries, and the total number of few-shot examples dropped to fit."""
    prompts, dropped = [], 0
    for query in queries:
        prompt = format_prompt(tokenizer, template, query, shots, context, max_new_tokens)
        prompts.append(prompt.text)
        dropped += prompt.shots_dropped
    return prompts, dropped


def messages(template: str, query: str, shots: list[tuple[str, str]] = ()) -> list[dict]:
    """The conversation for a chat model: few-shot examples as earlier turns, then the query."""
    turns = []
    for shot_input, shot_target in shots:
        turns += [{"role": "user", "content": template.format(input=shot_input)},
                  {"role": "assistant", "content": shot_target}]
    return turns + [{"role": "user", "content": template.format(input=query)}]


def training_example(tokenizer, template: str, query: str, target: str) -> dict:
    """A prompt-completion example in the form TRL's SFTTrainer takes: conversational for a
    chat model (TRL applies the same chat template as inference), plain text otherwise."""
    if tokenizer.chat_template:
        return {"prompt": messages(template, query), "completion": [{"role": "assistant", "content": target}]}
    return {"prompt": _render(tokenizer, template, query, []), "completion": " " + target}


def _render(tokenizer, template: str, query: str, shots: list[tuple[str, str]]) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages(template, query, shots), add_generation_prompt=True, tokenize=False)
    return "\n\n".join([template.format(input=i) + " " + t for i, t in shots] + [template.format(input=query)])


def tokenize(tokenizer, texts: list[str], **kwargs):
    """Tokenize rendered prompts. A chat template already wrote the special tokens;
    plain text gets the tokenizer's own (BOS for Llama-likes, EOS for T5)."""
    return tokenizer(texts, add_special_tokens=not tokenizer.chat_template, **kwargs)

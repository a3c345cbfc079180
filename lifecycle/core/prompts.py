"""Prompt formatting: an instruction template, optional few-shot examples, and the
model's chat template when it has one.

A template is text with one `{input}` placeholder. Few-shot examples come from the
train split only, and are dropped (last first) when the prompt plus the output budget
would not fit the model's context: the caller learns how many were dropped, so a
few-shot prompt never overflows silently. An input too long even zero-shot is an
error, or, with `data.overlong` set to truncate_left / truncate_right, has its own
tokens cut from that side until the prompt fits — the same in every stage, since
every stage loads its data through `data.load`, which sets the policy here.

The data's format decides what a template is for (`data.format`, lifecycle/core/formats.py).
Input/target columns have no instruction of their own: the template supplies it. Every
other format has one, so the template is `OWN` (the input as it is): an Alpaca row's
instruction (and input) is the prompt, a prompt-completion row's prompt is, and a chat
row's prompt turns (system, user and earlier assistant turns) go through the model's chat
template as they are, few-shot examples before them as earlier turns. A chat row is known
by its input text, which `data.load` registers with its turns here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.core import formats
from lifecycle.core.errors import DataError

TEMPLATES = {
    "summarize": "Summarize the following conversation.\n\n{input}\n\nSummary:",
    "neutral": "Write a short, neutral summary of this dialogue in one to three sentences, referring to the "
               "speakers as #Person1# and #Person2#. Report any conflict without repeating insults.\n\n{input}",
    "flan": "Dialogue:\n\n{input}\n\nWhat was going on?",
}

OWN = "{input}"  # the template of a data format with an instruction of its own: the input as it is

OVERLONG = ("error", "truncate_left", "truncate_right")
_overlong = "error"
_own_instruction = False  # the loaded data's format carries its instruction (data.format is not columns)
_conversations: dict[str, list[dict]] = {}  # a chat row's input text -> its prompt turns


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


def set_data_format(own_instruction: bool, conversations: dict[str, list[dict]]) -> None:
    """What the run's data is (set by `data.load`): whether its format has its own instruction, and the
    prompt turns of its chat rows by input text (replacing those of any earlier load)."""
    global _own_instruction, _conversations
    _own_instruction, _conversations = own_instruction, dict(conversations)


def add_conversations(conversations: dict[str, list[dict]]) -> None:
    """The chat rows of an extra evaluation set, next to the run's own."""
    _conversations.update(conversations)


def templates_apply() -> bool:
    """Whether the loaded data takes its instruction from a prompt template (data.format columns)."""
    return not _own_instruction


def template(name: str) -> str:
    """The template a stage prompts with: a built-in name or text, or `OWN` when the data has its own instruction."""
    return TEMPLATES.get(name, name) if templates_apply() else OWN


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
    """The conversation for a chat model: few-shot examples as earlier turns, then the query (a chat
    row's own turns when the query is one)."""
    query_turns = _query_turns(template, query)
    # A system turn opens the conversation (many chat templates refuse one anywhere else): the query's stays
    # first, the shots' are left out.
    lead = len(query_turns) - len(_without_leading_system(query_turns))
    turns = query_turns[:lead]
    for shot_input, shot_target in shots:
        turns += [t for t in _query_turns(template, shot_input) if t["role"] != "system"]
        turns.append({"role": "assistant", "content": shot_target})
    return turns + query_turns[lead:]


def _without_leading_system(turns: list[dict]) -> list[dict]:
    return turns[next((i for i, t in enumerate(turns) if t["role"] != "system"), len(turns)):]


def _query_turns(template: str, query: str) -> list[dict]:
    """A chat row's prompt turns, else the query as one user turn."""
    return _wrap_last_user(template, _conversations.get(query, [{"role": "user", "content": query}]))


def _wrap_last_user(template: str, turns: list[dict]) -> list[dict]:
    """A copy of `turns` with the template around the last user turn (`OWN`, a chat format's, leaves it as it is)."""
    turns = [dict(t) for t in turns]
    last = max(i for i, t in enumerate(turns) if t["role"] == "user")
    turns[last]["content"] = template.format(input=turns[last]["content"])
    return turns


def training_example(tokenizer, template: str, query: str, target: str) -> dict:
    """A prompt-completion example in the form TRL's SFTTrainer takes: conversational for a
    chat model (TRL applies the same chat template as inference), plain text otherwise."""
    if tokenizer.chat_template:
        return {"prompt": messages(template, query), "completion": [{"role": "assistant", "content": target}]}
    return {"prompt": _render(tokenizer, template, query, []), "completion": " " + target}


def training_examples(tokenizer, template: str, query: str, target: str) -> list[dict]:
    """The SFT examples of one row: one prompt-completion example per assistant turn of a chat row (the
    turns before it the prompt), else the one of `training_example`.

    TRL masks the prompt of a prompt-completion example (completion_only_loss, its default for such data), so
    each assistant turn carries the loss once, in the context it has in the conversation, and no user or
    system token does. TRL's other way, `assistant_only_loss` on whole conversations, needs `{% generation %}`
    markers in the chat template; `trl.get_training_chat_template` adds them only to the templates it lists
    (Qwen, Llama 3, Gemma, Phi, ...) and raises for others, such as the packaged SmolLM2's or a local model's,
    so it would train some models and not others. The price here is that earlier turns are read once more
    per later assistant turn."""
    turns = _conversations.get(query, [])
    examples = []
    for i, turn in enumerate(turns):
        if turn["role"] == "assistant" and any(t["role"] == "user" for t in turns[:i]):
            earlier = turns[:i]
            if tokenizer.chat_template:
                examples.append({"prompt": _wrap_last_user(template, earlier),
                                 "completion": [{"role": "assistant", "content": turn["content"]}]})
            else:
                examples.append({"prompt": template.format(input=formats.render(earlier)),
                                 "completion": " " + turn["content"]})
    return examples + [training_example(tokenizer, template, query, target)]


def training_batch(tokenizer, template: str, queries: list[str], targets: list[str]) -> dict[str, list]:
    """`training_examples` of many rows as columns (for a batched `Dataset.map`, which may return more rows)."""
    examples = [e for q, t in zip(queries, targets) for e in training_examples(tokenizer, template, q, t)]
    return {"prompt": [e["prompt"] for e in examples], "completion": [e["completion"] for e in examples]}


def _render(tokenizer, template: str, query: str, shots: list[tuple[str, str]]) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages(template, query, shots), add_generation_prompt=True, tokenize=False)
    return "\n\n".join([template.format(input=i) + " " + t for i, t in shots] + [template.format(input=query)])


def tokenize(tokenizer, texts: list[str], **kwargs):
    """Tokenize rendered prompts. A chat template already wrote the special tokens;
    plain text gets the tokenizer's own (BOS for Llama-likes, EOS for T5)."""
    return tokenizer(texts, add_special_tokens=not tokenizer.chat_template, **kwargs)

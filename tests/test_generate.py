"""Batched generation and prompt formatting on tiny causal and seq2seq models."""

import pytest

from lifecycle.core import generate, models, prompts
from lifecycle.core.errors import ConfigError, DataError

DIALOGUES = ["#Person1#: Hi.\n#Person2#: Hello, how are you today?",
             "#Person1#: Where is the station?\n#Person2#: Two blocks north, then left at the bakery on the corner.",
             "#Person1#: Thanks!",
             "#Person1#: Can I return these shoes? They are too small.\n#Person2#: Yes, with the receipt.\n#Person1#: Here."]


@pytest.fixture(params=["tiny_causal", "tiny_seq2seq"])
def model_and_tokenizer(request):
    path = request.getfixturevalue(request.param)
    # float32 whatever the CPU: a bf16 rounding can flip a near-tie between batched and single greedy steps
    return models.load_model(path, "cpu", "float32"), models.load_tokenizer(path)


def test_batched_greedy_equals_one_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts, _ = prompts.format_prompts(tokenizer, prompts.TEMPLATES["summarize"], DIALOGUES)
    config = generate.generation_config({"do_sample": False}, "g", max_new_tokens=8)
    batched = generate.generate(model, tokenizer, texts, config, batch_size=4)
    single = generate.generate(model, tokenizer, texts, config, batch_size=1)
    assert [g.prediction for g in batched] == [g.prediction for g in single]
    assert [g.id for g in batched] == ["0", "1", "2", "3"]  # original order, though batches are length-sorted
    assert tokenizer.padding_side == ("right" if model.config.is_encoder_decoder else "left")
    assert all(0 < g.new_tokens <= 8 and g.prompt_tokens > 0 for g in batched)
    assert len({g.batch for g in batched}) == 1 and len({g.batch for g in single}) == 4


def test_seeded_sampling_repeats_and_predictions_round_trip(tiny_causal, tmp_path):
    model, tokenizer = models.load_model(tiny_causal, "cpu", "float32"), models.load_tokenizer(tiny_causal)
    config = generate.generation_config({"do_sample": True, "temperature": 1.5, "top_k": 50}, "g", max_new_tokens=8)
    first = generate.generate(model, tokenizer, DIALOGUES, config, batch_size=2, seed=3, references=["r"] * 4)
    again = generate.generate(model, tokenizer, DIALOGUES, config, batch_size=2, seed=3, references=["r"] * 4)
    assert [g.prediction for g in first] == [g.prediction for g in again]
    generate.write_jsonl(tmp_path / "p.jsonl", first)
    assert generate.read_jsonl(tmp_path / "p.jsonl") == first
    assert generate.tokens_per_second(first) > 0


@pytest.mark.parametrize("options, fragment", [
    ({"temprature": 0.7}, "`g.temprature` = 0.7 is not a known option"),
    ({"do_sample": False, "temperature": 0.7}, "only used in sample-based generation"),
    ({"max_new_tokens": -1}, "must be greater than 0"),
])
def test_bad_generation_options(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        generate.generation_config(options, "g")


def test_chat_template_when_present_plain_text_otherwise(tokenizer, tiny_causal):
    chat = models.load_tokenizer(tiny_causal)
    text = prompts.format_prompt(chat, "Summarize: {input}", "hello").text
    assert text.startswith("<s>user\nSummarize: hello") and text.endswith("<s>assistant\n")
    chat.chat_template = None
    assert prompts.format_prompt(chat, "Summarize: {input}", "hello").text == "Summarize: hello"


def test_few_shot_drops_examples_that_do_not_fit(tiny_causal):
    tokenizer = models.load_tokenizer(tiny_causal)
    shots = [(d, "A short summary.") for d in DIALOGUES[:3]]
    full = prompts.format_prompt(tokenizer, "{input}", DIALOGUES[3], shots)
    assert (full.shots_used, full.shots_dropped) == (3, 0)
    length = len(prompts.tokenize(tokenizer, [full.text])["input_ids"][0])
    cut = prompts.format_prompt(tokenizer, "{input}", DIALOGUES[3], shots, context=length - 1, max_new_tokens=0)
    assert cut.shots_used < 3 and cut.shots_used + cut.shots_dropped == 3
    assert len(prompts.tokenize(tokenizer, [cut.text])["input_ids"][0]) <= length - 1
    _, dropped = prompts.format_prompts(tokenizer, "{input}", DIALOGUES[3:] * 2, shots, length - 1)
    assert dropped == 2 * cut.shots_dropped
    with pytest.raises(DataError, match="does not fit the model's 10-token context, even without few-shot"):
        prompts.format_prompt(tokenizer, "{input}", DIALOGUES[3], shots, context=10, max_new_tokens=5)

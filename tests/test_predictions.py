"""Predictions as run artifacts: the same weights, prompts and decoding are generated once per run,
and anything that changes the outputs (weights, prompt, decoding, batch) makes new ones."""

import shutil

from lifecycle.config import load
from lifecycle.core import data, predictions, prompts, systems
from lifecycle.core.artifacts import Prompt
from tests.conftest import ROOT

PROMPT = Prompt(template=prompts.TEMPLATES["summarize"], generation={"do_sample": False, "max_new_tokens": 4})


def _setup(tmp_path, tiny_causal):
    cfg = load(str(ROOT / "configs" / "tiny.yaml"), [f"run.root={tmp_path}", "models.device=cpu"])
    return cfg, data.first(data.load(cfg.data)["test"], 4)


def test_the_same_generation_is_read_back_without_loading_the_model(tmp_path, tiny_causal, capsys):
    cfg, test = _setup(tmp_path, tiny_causal)
    first = systems.predict(cfg, tiny_causal, PROMPT, test, 2, "first")
    lazy = systems.LazyModel(cfg, tiny_causal)
    again = systems.predict(cfg, tiny_causal, PROMPT, test, 2, "again", model=lazy)
    assert again == first and lazy.model is None  # nothing loaded, nothing generated
    assert again.reused_from and first.reused_from is None
    assert "again: reusing the 4 predictions" in capsys.readouterr().out
    assert len(list((tmp_path / "tiny" / predictions.FOLDER).glob("*.jsonl"))) == 1


def test_what_changes_the_outputs_makes_new_predictions(tmp_path, tiny_causal):
    cfg, test = _setup(tmp_path, tiny_causal)
    systems.predict(cfg, tiny_causal, PROMPT, test, 2, "first")
    other = Prompt(template=PROMPT.template, generation={**PROMPT.generation, "max_new_tokens": 3})
    systems.predict(cfg, tiny_causal, other, test, 2, "other decoding")
    systems.predict(cfg, tiny_causal, PROMPT, test, 4, "other batch")
    copy = tmp_path / "edited"
    shutil.copytree(tiny_causal, copy)
    (copy / "generation_config.json").write_text('{"do_sample": false}')  # a file of the model folder changed
    systems.predict(cfg, str(copy), PROMPT, test, 2, "other weights folder")
    assert len(list((tmp_path / "tiny" / predictions.FOLDER).glob("*.jsonl"))) == 4

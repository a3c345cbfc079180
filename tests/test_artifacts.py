"""Typed artifacts between stages: written by one function, read by one, through the producing
stage's manifest with the sha256 it recorded checked — an edited file is an error, not a wrong result."""

import json

import pytest

from lifecycle.core import artifacts
from lifecycle.core.artifacts import Prompt, StageRun, TrainedModel
from lifecycle.core.errors import StageError
from lifecycle.core.store import MANIFEST, Run, RunConfig, list_outputs, write_json

PROMPT = Prompt(template="Summarize:\n{input}", generation={"max_new_tokens": 8})


def _finished(tmp_path, stage, *written):
    """A run whose `stage` finished with `written` artifacts (and a model folder), manifest last."""
    run = Run(RunConfig(name="r", root=str(tmp_path)))
    out = run.dir(stage)
    for artifact in written:
        artifacts.write(out, artifact)
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    manifest = {"stage": stage, "status": "completed", "outputs": list_outputs(out)}
    write_json(out / MANIFEST, manifest)
    return run, manifest


def test_an_artifact_reads_back_as_written(tmp_path):
    run, manifest = _finished(tmp_path, "finetune", TrainedModel(PROMPT))
    got = StageRun(run, "rlhf", tmp_path / "out", {"finetune": manifest}).read("finetune", TrainedModel)
    assert got.prompt == PROMPT and got.path == str(run.dir("finetune") / "model")


def test_an_edited_artifact_is_refused_with_the_command_that_rebuilds_it(tmp_path):
    run, manifest = _finished(tmp_path, "prompt", PROMPT)
    best = run.dir("prompt") / "best.json"
    best.write_text(best.read_text().replace("Summarize", "Summarise"))
    with pytest.raises(StageError, match=r"best.json is not the file the stage recorded.*--force"):
        artifacts.read(run, "prompt", Prompt, manifest)


def test_changed_weights_of_a_trained_model_are_refused(tmp_path):
    run, manifest = _finished(tmp_path, "finetune", TrainedModel(PROMPT))
    (run.dir("finetune") / "model" / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(StageError, match="model.safetensors is not the file"):
        artifacts.read(run, "finetune", TrainedModel, manifest)


def test_a_file_of_another_shape_is_a_clear_error(tmp_path):
    run, _ = _finished(tmp_path, "prompt", PROMPT)
    best = run.dir("prompt") / "best.json"
    best.write_text(json.dumps({"template_text": "x"}))  # a renamed key, as another version might write
    manifest = {"status": "completed", "outputs": list_outputs(run.dir("prompt"))}
    with pytest.raises(StageError, match="does not hold a Prompt"):
        artifacts.read(run, "prompt", Prompt, manifest)


def test_a_stage_that_has_not_run_names_the_command(tmp_path):
    run = Run(RunConfig(name="r", root=str(tmp_path)))
    with pytest.raises(StageError, match=r"it has not run.*Run `make it` first"):
        artifacts.read(run, "quantize", artifacts.Deployable, how="make it")


def test_a_stage_reads_only_what_it_declared(tmp_path):
    run, manifest = _finished(tmp_path, "prompt", PROMPT)
    with pytest.raises(KeyError, match="did not declare select"):
        StageRun(run, "finetune", tmp_path, {"prompt": manifest}).read("select", artifacts.Selection)

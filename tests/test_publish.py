"""`python -m lifecycle publish`: the dry run's folder (the deployable variant's files and a model card whose
metadata carry evaluate's numbers as model-index results and the lineage), and the one-paragraph errors: offline,
an unreachable Hub, a bad repo id, no quantize result, a folder that is not ours."""

import json
from pathlib import Path

import pytest

from lifecycle.core.store import MANIFEST, sha256_file

REPO = "you/tiny-summary"
STAGES = ("scope", "select", "prompt", "finetune", "rlhf", "evaluate", "quantize")


@pytest.fixture
def no_upload(monkeypatch):
    """Any call that would talk to the Hub fails the test."""
    from huggingface_hub import HfApi

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not talk to the Hub")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr(HfApi, "upload_folder", refuse)


def test_dry_run_writes_the_variant_and_a_card_with_lineage_and_model_index(clone_run, no_upload):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    code, out, err = clone_run("publish", "--repo-id", REPO, "--dry-run")
    assert code == 0, err
    folder = clone_run.root / "publish" / REPO
    assert str(folder) in out and "nothing uploaded" in out
    deployable = json.loads((clone_run.root / "quantize" / "deployable.json").read_text())
    variant = Path(deployable["path"])
    assert {p.name for p in folder.iterdir()} == {p.name for p in variant.iterdir()}  # README.md replaced by the card
    for path in variant.iterdir():
        if path.name != "README.md":
            assert sha256_file(folder / path.name) == sha256_file(path)
    if deployable["variant"].startswith("gguf-"):  # the smallest when llama.cpp is built (as in CI) and checked it
        assert {"Modelfile", "prompt.json"} <= {p.name for p in folder.iterdir()} and list(folder.glob("*.gguf"))
    else:  # without llama.cpp the tiny run deploys int8
        assert deployable["variant"] == "int8"
        assert "quantization_config" in json.loads((folder / "config.json").read_text())

    card = ModelCard.load(folder / "README.md")
    meta = metadata_load(folder / "README.md")
    lineage = meta["lifecycle"]
    assert lineage["run"] == "tiny" and lineage["variant"] == deployable["variant"] and lineage["source_stage"] == "rlhf"
    for stage in STAGES:  # every stage, by the sha256 of the manifest that is on disk
        assert lineage["stages"][stage]["manifest_sha256"] == sha256_file(clone_run.root / stage / MANIFEST)
        assert lineage["stages"][stage]["manifest_sha256"] in card.text
    evaluation = json.loads((clone_run.root / "evaluate" / "evaluation.json").read_text())
    expected = {m: round(ci["value"], 4) for m, ci in evaluation["systems"]["rlhf"]["scores"].items()}
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == expected
    assert {(r.dataset_split, r.task_type) for r in card.data.eval_results} == {("test", "text-generation")}
    assert meta["model-index"][0]["name"] == "tiny-summary" and "base_model" not in meta  # a local base is no hub id
    assert f"from_pretrained(\"{REPO}\"" in card.text  # the repository's paths, and none of this machine's:
    assert str(variant) not in card.text and str(clone_run.root) not in card.text

    code, _, err = clone_run("publish", "--repo-id", REPO, "--dry-run")  # again: the same folder, rewritten
    assert code == 0, err


def test_offline_push_fails_with_one_paragraph(clone_run):
    code, _, err = clone_run("publish", "--repo-id", REPO)  # the suite runs with HF_HUB_OFFLINE=1
    assert code == 2
    assert err.startswith("error: could not publish to the Hugging Face Hub as `you/tiny-summary`")
    assert "offline mode is enabled" in err and "--dry-run" in err and err.strip().count("\n") == 0
    assert (clone_run.root / "publish" / REPO / "README.md").is_file()  # the folder is ready for a later push


def test_unreachable_hub_fails_with_one_paragraph(clone_run, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    code, _, err = clone_run("publish", "--repo-id", REPO)
    assert code == 2 and "could not publish to the Hugging Face Hub" in err and "hf auth login" in err
    assert err.strip().count("\n") == 0


def test_bad_requests_are_refused_before_anything_is_written(clone_run, tmp_path):
    code, _, err = clone_run("publish", "--repo-id", "you//bad", "--dry-run")
    assert code == 2 and "--repo-id `you//bad` is not a Hub repository name" in err
    ours_not = tmp_path / "elsewhere"
    ours_not.mkdir()
    (ours_not / "notes.txt").write_text("mine")
    code, _, err = clone_run("publish", "--repo-id", REPO, "--dry-run", "--out", str(ours_not))
    assert code == 2 and "is not a folder `publish` wrote" in err and (ours_not / "notes.txt").is_file()


def test_a_run_without_a_deployable_has_nothing_to_publish(run_cli):
    code, _, err = run_cli("publish", "--repo-id", REPO, "--dry-run")  # no stage has run
    assert code == 2 and "quantize is missing" in err and "python -m lifecycle all" in err

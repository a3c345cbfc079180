"""Run store and pipeline: atomic writes, the partial->final swap and its recovery,
failed stages, lineage, and the up-to-date logic (with small fake stages, so the
mechanism is tested apart from any real stage)."""

import dataclasses
import json
import os
import types

import pytest

from lifecycle import stages as registry
from lifecycle.config import load
from lifecycle import pipeline
from lifecycle.core.artifacts import StageResult, produced
from lifecycle.core.errors import StageError
from lifecycle.core.store import MANIFEST, Run, write_json
from lifecycle.stages import Stage
from tests.test_config import OFFLINE


def test_write_json_is_atomic_under_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    write_json(path, {"v": 1})

    def crash(*_):
        raise KeyboardInterrupt  # killed between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def _fake_stage(name, upstream=(), fail=False, calls=None):
    def run(cfg, run):
        calls.append(name)
        (run.out / f"{name}.txt").write_text(f"{name} from {sorted(run.inputs)}")
        if fail:
            raise RuntimeError(f"{name} exploded")
        return StageResult(metrics={"n": 1})

    return Stage(name, config=object, run=run, help="", upstream=upstream,
                 sections=("scope",) if name == "first" else ("data",))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Two fake stages, `first` -> `second`, in a temporary run."""
    calls = []
    stages = {"first": _fake_stage("first", calls=calls), "second": _fake_stage("second", ("first",), calls=calls)}
    monkeypatch.setattr(registry, "get", lambda name: stages[name])
    cfg = load(OFFLINE, [f"run.root={tmp_path}", "models.device=cpu"])
    return types.SimpleNamespace(cfg=cfg, calls=calls, stages=stages, run=Run(cfg.run))


def test_up_to_date_stage_is_skipped_and_changed_config_reruns(fake):
    first = pipeline.execute(fake.cfg, "first", "c.yaml")
    again = pipeline.execute(fake.cfg, "first", "c.yaml")
    assert fake.calls == ["first"] and again == first
    pipeline.execute(fake.cfg, "first", "c.yaml", force=True)
    assert fake.calls == ["first", "first"]
    changed = load(OFFLINE, [f"run.root={fake.cfg.run.root}", "scope.criteria.min_rougeL=0.4"])
    assert pipeline.status(changed, "first").state == "stale"
    pipeline.execute(changed, "first", "c.yaml")
    assert fake.calls == ["first", "first", "first"]
    # data is not a section of `first`, so changing it does not touch `first`
    other = load(OFFLINE, [f"run.root={fake.cfg.run.root}", "scope.criteria.min_rougeL=0.4", "data.limit.train=3"])
    assert pipeline.status(other, "first").state == "up to date"


def test_manifest_records_lineage_outputs_and_provenance(fake):
    pipeline.execute(fake.cfg, "first", "c.yaml")
    manifest = pipeline.execute(fake.cfg, "second", "c.yaml")
    upstream = fake.run.dir("first") / MANIFEST
    assert manifest["inputs"] == {"first": {"path": str(upstream), "hash": fake.run.manifest_hash("first"),
                                            "produced": produced(fake.run.manifest("first"))}}
    assert manifest["references"]["data"]["demo"]  # `second` reads the data: its content is in the identity
    assert manifest["status"] == "completed" and manifest["metrics"] == {"n": 1}
    assert set(manifest["outputs"]) == {"second.txt"} and manifest["outputs"]["second.txt"]["bytes"] > 0
    assert manifest["versions"]["transformers"] and manifest["host"]["device"] == "cpu"
    assert {"started_at", "finished_at", "duration_s", "config", "config_hash", "command", "argv"} <= set(manifest)
    assert json.loads((fake.run.dir("second") / MANIFEST).read_text()) == manifest


def test_downstream_is_stale_only_when_upstream_produced_something_new(fake):
    pipeline.execute(fake.cfg, "first", "c.yaml")
    pipeline.execute(fake.cfg, "second", "c.yaml")
    assert pipeline.status(fake.cfg, "second").state == "up to date"
    pipeline.execute(fake.cfg, "first", "c.yaml", force=True)  # same outputs, new manifest timestamps
    assert pipeline.status(fake.cfg, "second").state == "up to date"

    def different(cfg, run):
        (run.out / "first.txt").write_text("something else")
        return StageResult(metrics={})

    fake.stages["first"] = dataclasses.replace(fake.stages["first"], run=different)
    pipeline.execute(fake.cfg, "first", "c.yaml", force=True)
    state = pipeline.status(fake.cfg, "second")
    assert state.state == "stale" and "first produced new outputs" in state.reason


def test_missing_upstream_names_the_command(fake):
    with pytest.raises(StageError, match=r"needs `first`, which is missing.*python -m lifecycle first --config c.yaml"):
        pipeline.execute(fake.cfg, "second", "c.yaml")


def test_failed_stage_keeps_old_artifacts_and_blocks_downstream(fake):
    pipeline.execute(fake.cfg, "first", "c.yaml")
    good = (fake.run.dir("first") / "first.txt").read_text()
    fake.stages["first"] = _fake_stage("first", fail=True, calls=fake.calls)
    with pytest.raises(RuntimeError):
        pipeline.execute(fake.cfg, "first", "c.yaml", force=True)
    assert (fake.run.dir("first") / "first.txt").read_text() == good  # nothing already written is lost
    state = pipeline.status(fake.cfg, "first")
    assert state.state == "failed" and "first exploded" in state.reason
    with pytest.raises(StageError, match="which is failed .*first exploded"):
        pipeline.execute(fake.cfg, "second", "c.yaml")


def test_killed_stage_is_interrupted_and_leaves_no_stage_folder(fake):
    def killed(cfg, run):
        (run.out / "checkpoint-1").mkdir()
        raise KeyboardInterrupt

    fake.stages["first"] = dataclasses.replace(fake.stages["first"], run=killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.execute(fake.cfg, "first", "c.yaml")
    assert not fake.run.dir("first").exists()
    assert pipeline.status(fake.cfg, "first").state == "interrupted"
    # a resumable stage with the same identity keeps its working folder, checkpoints included;
    # another identity, or a stage that does not resume, starts from an empty one
    marker = (fake.run.partial_dir("first") / ".identity").read_text()
    assert (fake.run.begin("first", marker, resumable=True) / "checkpoint-1").is_dir()
    assert not (fake.run.begin("first", marker) / "checkpoint-1").exists()
    (fake.run.partial_dir("first") / "checkpoint-1").mkdir()
    assert not (fake.run.begin("first", "another identity", resumable=True) / "checkpoint-1").exists()


def test_a_swap_cut_between_its_renames_is_finished_on_next_read(fake):
    pipeline.execute(fake.cfg, "first", "c.yaml")
    run = fake.run
    # a second, completed attempt whose swap was killed after `first` -> `first.old`
    partial = run.begin("first", "h")
    (partial / "first.txt").write_text("new")
    write_json(partial / MANIFEST, {"status": "completed"})
    run.dir("first").rename(run.root / "first.old")
    assert run.manifest("first") == {"status": "completed"}
    assert (run.dir("first") / "first.txt").read_text() == "new"
    assert not (run.root / "first.old").exists() and not run.partial_dir("first").exists()


def test_resume_skips_a_checkpoint_cut_mid_save(tmp_path):
    from lifecycle.core.store import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((2, True), (10, True), (12, False)):  # 12 was being written when the process died
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_text("w")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # numeric order, not text order

"""run.report_to: the trainers' curves and every stage's headline metrics, config and lineage in TensorBoard,
MLflow (a local SQLite store) and Trackio (its local store), read back from each; the trainer writing its
TensorBoard files straight into the stage's logs/; the config and install checks."""

import atexit
import json
import os
import shutil
import tempfile
from types import SimpleNamespace

import pytest

from lifecycle.config import load
from lifecycle.core import tracking
from lifecycle.core.errors import ConfigError
from lifecycle.core.store import MANIFEST, Run, RunConfig, sha256_file
from tests.conftest import ROOT

TINY = str(ROOT / "configs" / "tiny.yaml")
# Trackio fixes its store folder when it is first imported: one of this session's, never the user's.
os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="lifecycle-test-trackio-")
atexit.register(shutil.rmtree, os.environ["TRACKIO_DIR"], True)


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); each test has its own experiment."""
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def mlflow_client(mlflow_db, monkeypatch, request):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)
    client = MlflowClient(mlflow_db)
    client.experiment = request.node.name
    return client


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in `folder`, as (step, value) pairs in the order written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def runs_of(client) -> dict:
    """The MLflow runs of the test's experiment by name (a name that appears twice is a bug: one run per attempt)."""
    runs = client.search_runs([client.get_experiment_by_name(client.experiment).experiment_id])
    named = {r.info.run_name: r for r in runs}
    assert len(named) == len(runs), [r.info.run_name for r in runs]
    return named


def finished_stage(run: Run, stage: str, metrics: dict, inputs: tuple = ()) -> dict:
    """A committed stage folder with a manifest of the shape the pipeline writes (no model needed)."""
    run.begin(stage, "identity")
    manifest = {"stage": stage, "status": "completed", "finished_at": f"2026-01-01T00:00:0{len(inputs)}+00:00",
                "command": f"python -m lifecycle {stage} --config x.yaml", "config": {"seed": 0, stage: {"k": [1, 2]}},
                "config_hash": f"hash-{stage}", "metrics": metrics,
                "inputs": {up: {"path": str(run.dir(up) / MANIFEST), "hash": run.manifest_hash(up)} for up in inputs}}
    run.commit(stage, manifest)
    return manifest


def test_report_to_values_and_install_check(monkeypatch):
    assert load(TINY).run.report_to == ["tensorboard"]  # today's behaviour by default
    assert load(TINY, ["run.report_to=none"]).run.report_to == []
    assert load(TINY, ["run.report_to=[mlflow, tensorboard, mlflow]"]).run.report_to == ["mlflow", "tensorboard"]
    for bad in ("run.report_to=[comet]", "run.report_to=[none, mlflow]"):
        with pytest.raises(ConfigError, match="run.report_to"):
            load(TINY, [bad])
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"wandb is not \(`pip install wandb`"):
        tracking.check(["tensorboard", "wandb"])
    tracking.check(["tensorboard"])


def test_trainer_arguments_point_the_integrations_at_the_run(tmp_path, mlflow_client, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cfg = load(TINY, [f"run.root={tmp_path}", "run.report_to=[tensorboard, mlflow]"])
    out = tmp_path / "tiny" / "finetune.partial"
    stage = SimpleNamespace(run=Run(cfg.run), stage="finetune", out=out)
    args = tracking.trainer_arguments(cfg, stage)
    assert args == {"report_to": ["tensorboard", "mlflow"], "run_name": "tiny-finetune", "project": "lifecycle"}
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(out / "logs")
    child = os.environ["MLFLOW_RUN_ID"]
    assert tracking.trainer_arguments(cfg, stage) and os.environ["MLFLOW_RUN_ID"] == child  # a resume goes on in it
    tracking.restore_environment()
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ and "MLFLOW_RUN_ID" not in os.environ
    runs = runs_of(mlflow_client)
    assert set(runs) == {"tiny", "tiny-finetune"}
    assert runs["tiny-finetune"].data.tags["mlflow.parentRunId"] == runs["tiny"].info.run_id

    none = load(TINY, [f"run.root={tmp_path}", "run.report_to=none"])
    assert tracking.trainer_arguments(none, stage)["report_to"] == [] and "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_stage_metrics_config_and_lineage_in_tensorboard_and_mlflow(tmp_path, mlflow_client):
    run = Run(RunConfig(name="r", root=str(tmp_path), report_to=["tensorboard", "mlflow"]))
    scope = finished_stage(run, "scope", {"rows_train": 16, "warnings": 0})
    tracking.log_stage(run, "scope", scope)
    select = finished_stage(run, "select", {"selected": "tiny", "rougeL": 0.25, "nested": {"a": 1.5, "flag": True}},
                            inputs=("scope",))
    again = Run(RunConfig(name="r", root=str(tmp_path), report_to=["tensorboard", "mlflow"]))  # a later command
    tracking.log_stage(again, "select", select)

    expected = {"scope/rows_train": 16.0, "scope/warnings": 0.0, "select/rougeL": 0.25, "select/nested/a": 1.5}
    assert {tag: values[-1][1] for tag, values in scalars(run.root / "logs").items()} == expected
    runs = runs_of(mlflow_client)
    assert set(runs) == {"r", "r-scope", "r-select"}  # one run per lifecycle run, one nested run per stage
    parent = runs["r"]
    assert parent.data.metrics == expected
    lineage = json.loads(parent.data.tags["lineage.select"])
    assert lineage["manifest_sha256"] == run.manifest_hash("select") and lineage["config_hash"] == "hash-select"
    assert lineage["inputs"] == {"scope": run.manifest_hash("scope")}
    child = runs["r-select"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params == {"seed": "0", "select.k": "[1, 2]"}
    assert child.data.tags["lifecycle.config_hash"] == "hash-select" and child.info.status == "FINISHED"


def test_stage_metrics_in_trackio(tmp_path, monkeypatch):
    from trackio.sqlite_storage import SQLiteStorage

    monkeypatch.setenv("TRACKIO_PROJECT", f"lifecycle-test-{tmp_path.name}")
    run = Run(RunConfig(name="r", root=str(tmp_path), report_to=["trackio"]))
    for stage, metrics in (("scope", {"rows_train": 16}), ("select", {"rougeL": 0.25, "selected": "tiny"})):
        tracking.log_stage(run, stage, finished_stage(run, stage, metrics))
    logs = SQLiteStorage.get_logs(os.environ["TRACKIO_PROJECT"], "r")
    assert [{k: v for k, v in log.items() if "/" in k} for log in logs] == [{"scope/rows_train": 16.0},
                                                                           {"select/rougeL": 0.25}]
    config = SQLiteStorage.get_run_config(os.environ["TRACKIO_PROJECT"], "r")
    assert config["lineage"]["select"]["manifest_sha256"] == run.manifest_hash("select") and config["select"]["seed"] == 0


def test_no_tracker_logs_nothing(tmp_path):
    run = Run(RunConfig(name="r", root=str(tmp_path), report_to="none"))
    tracking.log_stage(run, "scope", finished_stage(run, "scope", {"rows_train": 16}))
    assert not (run.root / "logs").exists() and not (run.root / tracking.IDS).exists()


@pytest.mark.slow
def test_tensorboard_and_mlflow_agree_on_finetune_and_the_stage_metrics(run_cli, mlflow_client):
    code, _, err = run_cli("all", "--until", "finetune", f"models.candidates=[{run_cli.causal}]",
                           "run.report_to=[tensorboard, mlflow]")
    assert code == 0, err
    finetune = run_cli.root / "finetune"
    manifest = json.loads((finetune / MANIFEST).read_text())
    # the trainer wrote its events straight into logs/ (no runs/<date> folder moved by hand), and they are outputs
    assert any(p.name.startswith("events.out.tfevents") for p in (finetune / "logs").iterdir())
    assert all(p.is_file() for p in (finetune / "logs").iterdir())
    assert any(name.startswith("logs/events.out.tfevents") for name in manifest["outputs"])

    runs = runs_of(mlflow_client)
    assert set(runs) == {"tiny", "tiny-scope", "tiny-select", "tiny-prompt", "tiny-finetune"}
    curves = scalars(finetune / "logs")["train/loss"]
    history = sorted(mlflow_client.get_metric_history(runs["tiny-finetune"].info.run_id, "loss"), key=lambda m: m.step)
    assert len(curves) == manifest["metrics"]["steps"] == 4
    assert curves == [(m.step, pytest.approx(m.value, rel=1e-6)) for m in history]  # TensorBoard keeps float32
    stage_metrics = {tag: values[-1][1] for tag, values in scalars(run_cli.root / "logs").items()}
    assert stage_metrics == pytest.approx(runs["tiny"].data.metrics, rel=1e-6)
    assert stage_metrics["finetune/train_loss"] == pytest.approx(manifest["metrics"]["train_loss"], rel=1e-6)
    assert {f"{s}/" for s in ("scope", "select", "prompt", "finetune")} == {t.split("/")[0] + "/" for t in stage_metrics}
    params = runs["tiny-finetune"].data.params
    assert params["finetune.training.max_steps"] == "4" and params["learning_rate"] == "0.001"  # ours and the trainer's
    assert json.loads(runs["tiny"].data.tags["lineage.finetune"])["manifest_sha256"] == sha256_file(finetune / MANIFEST)

"""Experiment trackers: the trainers' curves and every stage's headline metrics, config and lineage, logged to
the trackers `run.report_to` names (tensorboard, trackio, mlflow, wandb; several at once), one tracker run per
lifecycle run.

The manifests stay the books; a tracker is a view of them, for comparing runs. Two hooks: `trainer_arguments`
(from core/training.py `arguments()`) points transformers' own integrations at this run before a trainer is
built, and `log_stage` (from pipeline._finish, once the manifest is committed) logs what a completed stage
recorded — its numeric headline metrics as `<stage>/<metric>`, its config, and the lineage of every finished
stage of the run (manifest sha256, config hash, the upstream manifests it consumed):

- tensorboard: scalars and a `lineage` text in `<run>/logs/`; each trainer writes its curves to `<stage>/logs/`,
  so `tensorboard --logdir runs/<name>` shows the whole run.
- mlflow: a run named `run.name` in experiment MLFLOW_EXPERIMENT_NAME (default `lifecycle`), in the store
  MLFLOW_TRACKING_URI names (else mlflow's default), with the metrics and the lineage as tags; nested under it
  one run per stage attempt, with the stage's config as params and, for finetune and rlhf, the trainer's curves.
- trackio: project TRACKIO_PROJECT (default `lifecycle`), run `run.name` (group `run.name`) with the metrics, and
  the configs and lineage as its config; the trainers' runs are `<run.name>-<stage>` in the same project.
- wandb: project WANDB_PROJECT (default `lifecycle`), group `run.name`: the same, as a run `run.name`.

`<run>/.tracking.json` keeps the tracker runs' ids, so every later command on the run logs into the same ones.
A tracker failing at the end of a stage (a server down) is a warning: the stage's result is already written.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import time

from lifecycle.core import quiet
from lifecycle.core.errors import ConfigError, one_line
from lifecycle.core.processes import is_main_process
from lifecycle.core.store import MANIFEST, Run, write_json

PROJECT = "lifecycle"  # trackio's project, wandb's project and mlflow's experiment, unless their env var says otherwise
LOGS = "logs"  # TensorBoard's folder: the run's stage metrics in <run>/logs, a trainer's curves in <stage>/logs
IDS = ".tracking.json"  # the tracker runs' ids: in the run folder, and in a trainer stage's folder for its own
INSTALL = {"tensorboard": "pip install tensorboard", "trackio": "pip install trackio",
           "mlflow": "pip install mlflow", "wandb": "pip install wandb"}
_saved_env: dict[str, str | None] = {}


def check(report_to: list[str]) -> None:
    """A ConfigError naming the pip command for a tracker that is not installed: before any stage runs, not
    when the first trainer starts. Looks for the package only; imports nothing."""
    missing = [t for t in report_to if importlib.util.find_spec(t) is None]
    if missing:
        raise ConfigError("run.report_to", report_to, "trackers installed in this Python: "
                          + "; ".join(f"{t} is not (`{INSTALL[t]}`, or `pip install -e \".[{t}]\"` in the project)"
                                      for t in missing) + f"; or leave {', '.join(missing)} out of run.report_to")


def trainer_arguments(cfg, run) -> dict:
    """The TrainingArguments that log this stage's trainer into the run's tracker runs. transformers' integrations
    read the rest from the environment, so that is set here, for the trainer built next; `restore_environment`
    (core/training.py `finish()`) puts it back."""
    trackers, name = cfg.run.report_to, f"{cfg.run.name}-{run.stage}"
    env = {}
    if "tensorboard" in trackers:  # straight into the stage's logs/, which the stage's folder keeps when it is swapped in
        env["TENSORBOARD_LOGGING_DIR"] = str(run.out / LOGS)
    if "mlflow" in trackers and is_main_process():  # the callback resumes this run, nested under the run's own
        env["MLFLOW_RUN_ID"] = _mlflow_stage_run(run.run, run.stage, run.out)
    if "wandb" in trackers:
        env |= {"WANDB_PROJECT": os.environ.get("WANDB_PROJECT", PROJECT), "WANDB_RUN_GROUP": cfg.run.name}
    _set_environment(env)
    return {"report_to": list(trackers), "run_name": name, "project": os.environ.get("TRACKIO_PROJECT", PROJECT)}


def restore_environment() -> None:
    """Undo what `trainer_arguments` set, so a later trainer of this process is not logged into this stage."""
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved_env.clear()


def log_stage(run: Run, stage: str, manifest: dict) -> None:
    """Log a completed stage to every tracker of `run.report_to`; a tracker that fails is a warning."""
    trackers = run.config.report_to
    if not trackers or manifest.get("status") != "completed":
        return
    metrics = {f"{stage}/{key}": value for key, value in numbers(manifest.get("metrics") or {}).items()}
    for tracker in trackers:
        try:
            _LOGGERS[tracker](run, stage, manifest, metrics)
        except Exception as err:  # noqa: BLE001 — the manifest is committed: a tracker costs its view, not the stage
            print(f"[lifecycle] {stage}: not logged to {tracker} ({type(err).__name__}: {one_line(err)}); its "
                  f"results are in {run.dir(stage) / MANIFEST}, and `--force` on the stage logs them again.")


def numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict, keys joined with `/`; text, flags and lists are left to the
    manifest (and the lineage the trackers get)."""
    found = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= numbers(value, f"{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[name] = float(value)
    return found


def lineage(run: Run) -> dict:
    """Every finished stage of the run: its manifest's sha256, config hash, finish time and what it consumed."""
    found = {}
    manifests = [json.loads(path.read_text()) for path in run.root.glob(f"*/{MANIFEST}")]
    for manifest in sorted(manifests, key=lambda m: m.get("finished_at") or ""):  # the order they ran in
        if manifest.get("status") == "completed":
            found[manifest["stage"]] = {
                "manifest_sha256": run.manifest_hash(manifest["stage"]), "config_hash": manifest["config_hash"],
                "finished_at": manifest["finished_at"], "command": manifest["command"],
                "inputs": {up: entry["hash"] for up, entry in manifest.get("inputs", {}).items()}}
    return found


def _configs(run: Run) -> dict:
    """{"lineage": …, stage: its resolved config} for every finished stage: trackio's and wandb's run config."""
    stages = lineage(run)
    return {"lineage": stages, **{s: json.loads((run.dir(s) / MANIFEST).read_text())["config"] for s in stages}}


def _tensorboard(run: Run, stage: str, manifest: dict, metrics: dict) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    # tensorboard's own writer, not torch's SummaryWriter: logging a stage that loaded no model stays cheap
    writer = EventFileWriter(str(run.root / LOGS))
    text = f"```\n{json.dumps({stage: lineage(run)[stage]}, indent=2)}\n```"
    summary = Summary(value=[*(Summary.Value(tag=k, simple_value=v) for k, v in metrics.items())])
    summary.MergeFrom(text_pb(f"{stage}/lineage", text))
    writer.add_event(Event(wall_time=time.time(), step=0, summary=summary))
    writer.close()


def _mlflow_run(run: Run):
    """(client, the mlflow run of this lifecycle run): the one `.tracking.json` names in this store, else a new one."""
    import mlflow
    from mlflow import MlflowClient

    if not quiet.verbose():  # mlflow sets its logger to INFO on import: "Creating initial MLflow database tables..."
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI or mlflow's default, as the trainer's callback resolves it
    client, ids = MlflowClient(uri), _read_ids(run.root)
    run_id = ids.get("mlflow", {}).get(uri)
    if run_id and _mlflow_exists(client, run_id):
        return client, run_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    created = client.create_run(experiment_id, run_name=run.config.name,
                                tags={"lifecycle.run": str(run.root.resolve())}).info.run_id
    write_json(run.root / IDS, {**ids, "mlflow": {**ids.get("mlflow", {}), uri: created}})
    return client, created


def _mlflow_exists(client, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # noqa: BLE001 — deleted, or from another store: start a new one
        return False


def _mlflow_stage_run(run: Run, stage: str, folder) -> str:
    """The nested mlflow run of this attempt of a trainer stage, kept in its working folder: a resumed trainer
    goes on in it, and `log_stage` adds the stage's config to it."""
    client, parent = _mlflow_run(run)
    ids = _read_ids(folder)
    if ids.get("mlflow") and _mlflow_exists(client, ids["mlflow"]):
        return ids["mlflow"]
    child = _mlflow_child(client, parent, run.config.name, stage)
    write_json(folder / IDS, {"mlflow": child})
    return child


def _mlflow_child(client, parent: str, name: str, stage: str) -> str:
    """A run nested under the lifecycle run's, named as the trainer's callback names it (`<run.name>-<stage>`)."""
    return client.create_run(client.get_run(parent).info.experiment_id, run_name=f"{name}-{stage}",
                             tags={"mlflow.parentRunId": parent, "lifecycle.stage": stage}).info.run_id


def _mlflow(run: Run, stage: str, manifest: dict, metrics: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    client, parent = _mlflow_run(run)
    trained = _read_ids(run.dir(stage)).get("mlflow")  # a trainer's run, finished by its callback
    child = trained or _mlflow_child(client, parent, run.config.name, stage)
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(_key(k), v, now, 0) for k, v in metrics.items()], tags=[
        RunTag(f"lineage.{stage}", json.dumps(lineage(run)[stage])),
        RunTag(f"{stage}.manifest_sha256", run.manifest_hash(stage))])
    params = [Param(_key(k), v[:MAX_PARAM_VAL_LENGTH]) for k, v in _flat(manifest["config"]).items()]
    for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(child, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])
    client.log_batch(child, tags=[RunTag("lifecycle.config_hash", manifest["config_hash"]),
                                  RunTag("lifecycle.command", manifest["command"])])
    if not trained:
        client.set_terminated(child)
    client.set_terminated(parent)  # finished as of this stage; the next stage's log adds to it all the same


def _trackio(run: Run, stage: str, manifest: dict, metrics: dict) -> None:
    import contextlib
    import io

    import trackio

    with contextlib.redirect_stdout(io.StringIO()):  # its banners are for its own users; ours say where to look
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT), name=run.config.name, group=run.config.name,
                     config=_configs(run), resume="allow", auto_log_cpu=False, auto_log_gpu=False)
        trackio.log(metrics)
        trackio.finish()


def _wandb(run: Run, stage: str, manifest: dict, metrics: dict) -> None:
    import wandb

    ids = _read_ids(run.root)
    if "wandb" not in ids:
        ids["wandb"] = wandb.util.generate_id()
        write_json(run.root / IDS, ids)
    with wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), group=run.config.name, name=run.config.name,
                    id=ids["wandb"], resume="allow", job_type="lifecycle") as tracked:
        tracked.config.update(_configs(run), allow_val_change=True)
        tracked.log(metrics)


_LOGGERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "trackio": _trackio, "wandb": _wandb}


def _flat(config, prefix: str = "") -> dict[str, str]:
    """A nested config as `section.key` -> text (mlflow params are strings)."""
    if isinstance(config, dict) and config:
        return {k: v for key, value in config.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): config if isinstance(config, str) else json.dumps(config)}


def _key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-./ :]", "_", name)  # mlflow's allowed characters in a metric or param name


def _read_ids(folder) -> dict:
    path = folder / IDS
    return json.loads(path.read_text()) if path.is_file() else {}


def _set_environment(env: dict[str, str]) -> None:
    for key, value in env.items():
        _saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

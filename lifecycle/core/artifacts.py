"""What stages hand each other: small typed artifacts, and what a stage's `run` gets and returns.

Each artifact is a dataclass written by `write` into the producing stage's folder and read by
`read` from a finished stage, through that stage's manifest: the file's sha256 is checked against
the one the manifest recorded (for a trained model, every file of its weights too), so an edited
or half-copied artifact is an error naming the command that rebuilds it, not a wrong result three
stages later. No consumer spells another stage's file names; they live here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lifecycle.core.config import fingerprint
from lifecycle.core.errors import StageError
from lifecycle.core.store import Run, sha256_file, write_json


@dataclass
class Scope:
    """scope's decision: the task, what success means, and the candidates it profiled."""

    task: str
    criteria: dict
    columns: dict
    splits: dict
    max_new_tokens: int
    candidates: list[dict]
    warnings: list[str]


@dataclass
class Selection:
    """select's choice of foundation model, and the measurements it chose by."""

    selected: str
    path: str
    seq2seq: bool
    context_length: int
    reason: str
    template: str
    candidates: list[dict]


@dataclass
class Prompt:
    """A prompt and its decoding: prompt's best one, or the one a model was trained for."""

    template: str
    generation: dict
    shots: int = 0
    shot_examples: list = field(default_factory=list)
    template_name: str | None = None
    shot_ids: list = field(default_factory=list)
    metric: str | None = None
    score: dict | None = None


@dataclass
class TrainedModel:
    """finetune's or rlhf's model: a `save_pretrained` folder (adapters merged) and the prompt it was trained for."""

    prompt: Prompt
    path: str = ""  # filled in on read: the model folder in the finished stage


@dataclass
class Deployable:
    """quantize's decision: the smallest variant that meets scope's criteria, or none and why."""

    variant: str | None
    reason: str
    checks: dict  # variant -> criterion -> {value, limit, ok}
    failures: dict  # variant -> the criteria it fails
    path: str | None = None  # the deployable variant's folder
    pipeline_check: dict | None = None  # its fresh-process `pipeline()` run, when quantize.check_pipeline


@dataclass
class Evaluation:
    """evaluate's result (written by the stage itself): every system's scores with 95% CIs, paired tests against
    the base model and criteria on the test split (`systems`), the same per extra set (`sets`), and what it left out."""

    test_examples: int
    prompt: dict
    systems: dict  # system (base, finetune, rlhf) -> {scores: {metric: {value, low, high}}, vs_base, criteria, model, ...}
    sets: dict  # extra set -> {examples, source, systems}
    skipped_sets: dict
    skipped: dict
    forgetting: dict | None
    lm_eval: dict | None
    judge: dict | None


FILES = {Scope: "scope.json", Selection: "selection.json", Prompt: "best.json", TrainedModel: "prompt.json",
         Deployable: "deployable.json", Evaluation: "evaluation.json"}
MODEL_DIR = "model"  # beside a TrainedModel's prompt.json
T = TypeVar("T")


def write(out: Path, artifact) -> Path:
    """Write `artifact` into the stage's working folder; its path."""
    data = dataclasses.asdict(artifact)
    if isinstance(artifact, TrainedModel):
        data = data["prompt"]  # the model folder is the trainer's own output beside it
    path = Path(out) / FILES[type(artifact)]
    write_json(path, data)
    return path


def read(run: Run, stage: str, kind: type[T], manifest: dict | None = None, how: str = "") -> T:
    """The `kind` artifact of finished `stage`, verified against its manifest (`manifest`, or the one on disk).
    `how` is the command that rebuilds it, for the error."""
    manifest = manifest or run.manifest(stage) or {}
    how = how or f"python -m lifecycle {stage} --config …"
    if manifest.get("status") != "completed":
        state = f"its last attempt {manifest['status']}" if manifest else "it has not run"
        raise StageError(f"there is no {stage} result in {run.dir(stage)}: {state}. Run `{how}` first (or "
                         "`make demo` for the whole lifecycle).")
    rebuild = f"Run `{how} --force` to make it again."
    name = FILES[kind]
    files = [name] + ([rel for rel in manifest.get("outputs", {}) if rel.startswith(MODEL_DIR + "/")]
                      if kind is TrainedModel else [])
    for rel in files:
        path, recorded = run.dir(stage) / rel, manifest.get("outputs", {}).get(rel, {}).get("sha256")
        if recorded is None or not path.is_file() or sha256_file(path) != recorded:
            state = "is missing" if not path.is_file() else "is not the file the stage recorded in its manifest"
            raise StageError(f"{path} {state} (edited, deleted or half-copied since {stage} finished), so it cannot "
                             f"be trusted as {stage}'s result. {rebuild}")
    data = json.loads((run.dir(stage) / name).read_text())
    if kind is TrainedModel:
        return TrainedModel(prompt=_build(Prompt, data), path=str(run.dir(stage) / MODEL_DIR))
    return _build(kind, data)


def _build(kind: type[T], data: dict) -> T:
    try:
        return kind(**data)
    except TypeError as err:  # a file from another version of lifecycle: keys renamed, added or dropped
        raise StageError(f"{FILES[kind]} does not hold a {kind.__name__} as this version of lifecycle writes it "
                         f"({err}). Re-run the stage that wrote it with --force.") from None


def produced(manifest: dict) -> str:
    """What a finished stage handed downstream: its decision if it declared one, else every output."""
    if manifest.get("decision") is not None:
        return fingerprint(manifest["decision"])
    return fingerprint({rel: out["sha256"] for rel, out in manifest.get("outputs", {}).items()})


@dataclass
class StageResult:
    metrics: dict
    summary: str = ""
    decision: dict | None = None  # what downstream stages consume, when not every output (select's choice)


@dataclass
class StageRun:
    """What a stage's `run(cfg, run)` gets: where to write, and what came before."""

    run: Run
    stage: str
    out: Path
    inputs: dict[str, dict]  # upstream stage -> its manifest
    skipped: dict[str, str] = field(default_factory=dict)  # optional upstream left out -> why
    optional: tuple[str, ...] = ()  # the optional upstream stages it consumes, in the registry's order

    @property
    def latest(self) -> str:
        """The last stage of the lineage it consumes (the model a deployment takes: rlhf's if it ran)."""
        return list(self.inputs)[-1]

    def read(self, stage: str, kind: type[T]) -> T:
        """The `kind` artifact of an upstream stage this one consumes, verified against its manifest."""
        if stage not in self.inputs:
            raise KeyError(f"{self.stage} did not declare {stage} upstream")
        return read(self.run, stage, kind, self.inputs[stage])

"""Running a stage: check its upstream, skip it when up to date, record its manifest.

What a stage consumes, which config sections it depends on and whether it resumes is
its entry in `lifecycle.stages`; this module does the rest, so each stage's
`run(cfg, run)` is only its recipe.

A stage's identity is its config sections, the content fingerprints of the data
and models they name, and what its upstream stages *produced* (their decision or
their outputs' hashes — not their manifests, whose timestamps change on every
run). Same identity: up to date. Under `accelerate launch` the main process keeps
the books and decides; the others follow its decision, and only stages that
train (`DISTRIBUTED`) run on every process.
"""

from __future__ import annotations

import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lifecycle import stages
from lifecycle.core import fingerprints, tracking
from lifecycle.core.artifacts import StageResult, StageRun, produced
from lifecycle.core.config import fingerprint, to_dict
from lifecycle.core.errors import StageError, one_line
from lifecycle.core.processes import is_main_process, shared, wait_for_everyone
from lifecycle.core.provenance import host, versions
from lifecycle.core.store import MANIFEST, Run, list_outputs

DONE = ("up to date", "skipped")


@dataclass
class Status:
    state: str  # missing | failed | interrupted | stale | skipped | up to date
    reason: str = ""
    manifest: dict | None = None


@dataclass(frozen=True)
class Invocation:
    """How the user called lifecycle; every hint repeats it, so a suggested command works on the same run."""

    config: str
    overrides: tuple[str, ...] = ()

    def command(self, stage: str) -> str:
        return shlex.join(["python", "-m", "lifecycle", stage, "--config", str(self.config), *self.overrides])


def invocation(how: Invocation | str) -> Invocation:
    return how if isinstance(how, Invocation) else Invocation(str(how))


def command(stage: str, how: Invocation | str) -> str:
    return invocation(how).command(stage)


def config_hash(cfg, stage: str) -> str:
    sections = {name: getattr(cfg, name) for name in stages.get(stage).sections}
    return fingerprint({"seed": cfg.run.seed, **sections})


def references(cfg, stage: str) -> dict:
    """Content fingerprints of what the stage's config points at: data, models, scorers, files."""
    entry = stages.get(stage)
    refs = {}
    if "data" in entry.sections:
        refs["data"] = fingerprints.of_data(cfg.data)
    if "models" in entry.sections:
        refs["models"] = {ref: fingerprints.of_model(ref) for ref in cfg.models.candidates}
    if "metrics" in entry.sections:
        refs["toxicity"] = fingerprints.of_scorer(cfg.metrics.toxicity)
    if entry.references:
        refs |= entry.references(cfg)
    return refs


def status(cfg, stage: str, _memo: dict | None = None) -> Status:
    """Whether the stage's artifacts are current for this config, what it reads, and its upstream."""
    memo = {} if _memo is None else _memo
    if stage not in memo:
        memo[stage] = _status(cfg, stage, memo)
    return memo[stage]


def _status(cfg, stage: str, memo: dict) -> Status:
    run = Run(cfg.run)
    manifest = run.manifest(stage)
    if manifest is None:
        return Status("interrupted" if run.interrupted(stage) else "missing", "never completed")
    if manifest["status"] == "failed":
        return Status("failed", manifest.get("error", ""), manifest)
    if manifest["config_hash"] != config_hash(cfg, stage):
        return Status("stale", "its config changed since it ran", manifest)
    recorded, now = manifest.get("references", {}), references(cfg, stage)
    changed = sorted(k for k in {**recorded, **now} if recorded.get(k) != now.get(k))
    if changed:
        return Status("stale", f"its {', '.join(changed)} changed since it ran", manifest)
    try:
        consumed, _ = _upstream(cfg, stage, memo)
    except StageError as err:
        return Status("stale", str(err).split(". Run")[0], manifest)
    if set(consumed) != set(manifest["inputs"]):
        return Status("stale", f"it consumed {sorted(manifest['inputs']) or 'nothing'}; now "
                      f"{sorted(consumed) or 'nothing'} is available", manifest)
    for up, entry in consumed.items():
        if manifest["inputs"][up].get("produced") != entry["produced"]:
            return Status("stale", f"{up} produced new outputs since it ran", manifest)
    return Status("skipped" if manifest["status"] == "skipped" else "up to date", manifest.get("reason", ""), manifest)


def _upstream(cfg, stage: str, memo: dict, how: Invocation | str = "FILE") -> tuple[dict, dict]:
    """(the upstream stages this one consumes -> their lineage entry, the optional ones left out -> why).
    A required upstream that is not up to date is an error naming the command that makes it."""
    entry, run = stages.get(stage), Run(cfg.run)
    consumed, skipped = {}, {}
    for up in (*entry.upstream, *entry.optional):
        state = status(cfg, up, memo)
        required = up in entry.upstream
        if state.state == "up to date":
            consumed[up] = {"path": str(run.dir(up) / MANIFEST), "hash": run.manifest_hash(up),
                            "produced": produced(state.manifest)}
        elif not required and state.state != "stale":
            skipped[up] = f"{up} is {state.state}" + (f": {one_line(state.reason)}" if state.reason else "")
        else:
            hint = "" if required else _leave_out_hint(getattr(cfg, up, None), up)
            raise StageError(f"stage `{stage}` needs `{up}`, which is {state.state} ({one_line(state.reason)}). "
                             f"Run `{command(up, how)}` first{hint}, or `{command('all', how)}` for every stage.")
    return consumed, skipped


def _leave_out_hint(section, up: str) -> str:
    """How to go on without an optional upstream: disable it, or (already disabled, but its manifest is of an
    earlier enabled run) run it once so that it records itself as left out."""
    if not hasattr(section, "enabled"):
        return ""
    if section.enabled:
        return f", or leave it out with `{up}.enabled=false`"
    return f" (with `{up}.enabled=false` it only records that it is left out, in seconds)"


@dataclass
class Plan:
    """The main process's decision about one stage, shared with the other processes."""

    action: str  # run | up to date | skip | error
    message: str = ""
    consumed: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)


def execute(cfg, stage: str, how: Invocation | str, force: bool = False) -> dict:
    """Run one stage (unless up to date) and return its manifest."""
    how, run, entry = invocation(how), Run(cfg.run), stages.get(stage)
    main = is_main_process()
    with run.lock(how.command(stage)) if main else nullcontext():
        plan = shared(lambda: _plan(cfg, stage, how, force))
        if plan.action == "error":
            raise StageError(plan.message)
        if plan.action == "up to date":
            if main:
                print(f"[lifecycle] {stage}: {plan.message}")
            return run.manifest(stage)
        if main:
            print(f"\n===== [lifecycle] stage: {stage}  ·  run: {run.root}  ·  {_now()} =====")
            for why in plan.skipped.values():
                print(f"[lifecycle] {stage}: leaving out {why}")
            produced_by = {up: entry["produced"] for up, entry in plan.consumed.items()}
            run.begin(stage, fingerprint([config_hash(cfg, stage), plan.references, produced_by]),
                      resumable=entry.resumable)
        wait_for_everyone()
        base = _base(cfg, stage, how, force, plan)
        if plan.action == "skip":
            return _finish(run, stage, {**base, "status": "skipped", "reason": plan.message, "finished_at": _now(),
                                        "duration_s": 0.0, "outputs": {}, "metrics": {}}, main,
                           f"[lifecycle] {stage}: skipped, {plan.message}")
        result = _run_stage(cfg, entry, run, plan, base, main)
        return _finish(run, stage, {**base, "status": "completed", "finished_at": _now(),
                                    "duration_s": round(time.time() - base["_started"], 2),
                                    "outputs": list_outputs(run.partial_dir(stage)) if main else {},
                                    "metrics": result.metrics, "decision": result.decision},
                       main, result.summary)


def _plan(cfg, stage: str, how: Invocation, force: bool) -> Plan:
    memo: dict = {}
    try:
        consumed, skipped = _upstream(cfg, stage, memo, how)
    except StageError as err:
        return Plan("error", str(err))
    current = status(cfg, stage, memo)
    if current.state in DONE and not force:
        what = "up to date" if current.state == "up to date" else f"skipped ({current.reason})"
        return Plan("up to date", f"{what} in {Run(cfg.run).dir(stage)}, not run again (use --force to run it anyway)")
    plan = Plan("run", consumed=consumed, skipped=skipped, references=references(cfg, stage))
    entry = stages.get(stage)
    if entry.not_applicable:
        why = entry.not_applicable(cfg, _stage_run(cfg, entry, plan))
        if why:
            plan.action, plan.message = "skip", why
    return plan


def _run_stage(cfg, entry: stages.Stage, run: Run, plan: Plan, base: dict, main: bool) -> StageResult:
    """The stage's recipe, on every process if it trains, else on the main one; a failure is
    recorded by the main process and raised on all of them."""
    error, result, stage = None, StageResult(metrics={}), entry.name
    if main or entry.distributed:
        try:
            result = entry.run(cfg, _stage_run(cfg, entry, plan))
        except Exception as err:  # KeyboardInterrupt is not caught: the partial folder stays, "interrupted"
            error = err
            if main:
                run.fail(stage, {**_clean(base), "status": "failed", "finished_at": _now(),
                                 "duration_s": round(time.time() - base["_started"], 2),
                                 "error": f"{type(error).__name__}: {error}"})
    failed = shared(lambda: None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failed:
        raise StageError(f"stage `{stage}` failed on the main process: {failed}")
    return result


def _finish(run: Run, stage: str, manifest: dict, main: bool, summary: str) -> dict:
    manifest = _clean(manifest)
    if main:
        run.commit(stage, manifest)
        if manifest["status"] == "completed":
            print(f"[lifecycle] {stage}: completed in {manifest['duration_s']:.1f}s -> {run.dir(stage)}"
                  + (f"\n{summary}" if summary else ""))
        else:
            print(summary)
        tracking.log_stage(run, stage, manifest)  # run.report_to: its headline metrics, config and lineage
    wait_for_everyone()  # no process moves on before the books are kept
    return run.manifest(stage)


def _base(cfg, stage: str, how: Invocation, force: bool, plan: Plan) -> dict:
    return {
        "stage": stage,
        "started_at": _now(),
        "_started": time.time(),
        "command": how.command(stage) + (" --force" if force else ""),
        "argv": sys.argv,
        "host": host(cfg),
        "versions": versions(),
        "config": to_dict({"seed": cfg.run.seed, **{s: getattr(cfg, s) for s in stages.get(stage).sections}}),
        "config_hash": config_hash(cfg, stage),
        "references": plan.references,
        "inputs": plan.consumed,
        "left_out": plan.skipped,
    }


def _clean(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if not k.startswith("_")}


def _stage_run(cfg, entry: stages.Stage, plan: Plan) -> StageRun:
    """What the stage's hooks get: its working folder and the manifests of the upstream stages it consumes."""
    run = Run(cfg.run)
    return StageRun(run, entry.name, run.partial_dir(entry.name), {up: run.manifest(up) for up in plan.consumed},
                    plan.skipped, tuple(up for up in entry.optional if up in plan.consumed))



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

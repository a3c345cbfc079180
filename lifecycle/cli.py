"""Command line: `python -m lifecycle <stage|all|status|report|options|rate|serve|publish> --config FILE [key=value ...]`.

The one entry point: the `lifecycle` console script, `python -m lifecycle` and `accelerate launch -m
lifecycle` come here, and `python -m lifecycle.<stage>` hands itself over to it. The stages are
the registry's (`lifecycle.stages`).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from contextlib import nullcontext
from datetime import datetime, timezone

from lifecycle import pipeline
from lifecycle import stages as registry
from lifecycle.core import preflight, quiet
from lifecycle.core.config import describe
from lifecycle.core.errors import LifecycleError
from lifecycle.core.processes import is_main_process
from lifecycle.core.store import RunBusy


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lifecycle",
        description="Take a generative-AI use case through its lifecycle, one stage at a time. "
        "Stages: " + " -> ".join(registry.NAMES) + ".",
        epilog="Overrides: any option as section.key=value, e.g. `scope.criteria.min_rougeL=0.3 data.limit.train=32`. "
        "`python -m lifecycle options` lists them all.")
    p.add_argument("command", choices=[*registry.NAMES, "all", "status", "report", "options", "rate", "serve", "publish"],
                   help="a stage, `all` stages in order, `status` of the run's stages, `report` to write the run "
                   "report (report.md and a self-contained report.html in the run folder), `options` to list every "
                   "option, `rate export|import` for blinded human ratings (`python -m lifecycle rate --help`), `serve` "
                   "the deployable model with an OpenAI-compatible API (`python -m lifecycle serve --help`), or "
                   "`publish` it to the Hugging Face Hub with its model card (`python -m lifecycle publish --help`)")
    p.add_argument("--config", help="YAML config, e.g. configs/offline.yaml (required except for `options`)")
    p.add_argument("--force", action="store_true", help="run the stage(s) even when up to date")
    p.add_argument("--until", choices=registry.NAMES, help="with `all`: stop after this stage")
    p.add_argument("--verbose", action="store_true", help="show every library warning and log line (also "
                   f"{quiet.VERBOSE_ENV}=1); by default third-party notes are filtered, progress bars kept")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["rate"]:  # human ratings have verbs of their own (export, import): lifecycle/rate.py
        from lifecycle import rate

        return rate.main(argv[1:])
    if argv[:1] == ["serve"]:  # a long-running server with options of its own: lifecycle/serve.py
        from lifecycle import serve

        return serve.main(argv[1:])
    if argv[:1] == ["publish"]:  # a push to the Hub with options of its own: lifecycle/publish.py
        from lifecycle import publish

        return publish.main(argv[1:])
    args = parser().parse_intermixed_args(argv)  # overrides may follow --config
    quiet.setup(args.verbose)  # before the libraries load, so their import-time notes are filtered too
    try:
        if args.command == "options":
            return _options()
        if not args.config:
            raise LifecycleError(f"`{args.command}` needs --config FILE, e.g. --config configs/offline.yaml.")
        from lifecycle.config import load

        cfg = load(args.config, args.overrides)
        how = pipeline.Invocation(args.config, tuple(args.overrides))
        if args.command == "status":
            return _status(cfg, how)
        if args.command == "report":
            return _report(cfg, how)
        if args.command == "all":
            stages = registry.NAMES[: registry.NAMES.index(args.until) + 1] if args.until else registry.NAMES
        else:
            stages = [args.command]
        preflight.check(cfg, stages)  # references (run root, GPU, scorer folders, target modules): seconds, not after model loads
        return _run(cfg, how, stages, args)
    except LifecycleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = " and ".join(s.name for s in registry.STAGES if s.resumable)
        print("\n[lifecycle] interrupted. Nothing half-written is kept as a result: run the same command to "
              f"continue ({resumable} resume from their last checkpoint, other stages start again).", file=sys.stderr)
        return 130


def _run(cfg, how, stages, args) -> int:
    """Run the stages in order, holding the run. An optional stage that fails (only ever consumed
    optionally, like rlhf) is reported and the chain goes on without it; the exit status says so."""
    from lifecycle.core.store import Run

    failures = []
    with Run(cfg.run).lock(how.command(args.command)) if is_main_process() else nullcontext():
        for stage in stages:
            try:
                pipeline.execute(cfg, stage, how, force=args.force)
            except Exception as err:
                if args.command != "all" or not registry.optional_only(stage) or isinstance(err, RunBusy):
                    raise
                failures.append(stage)
                if not isinstance(err, LifecycleError):
                    traceback.print_exc()
                print(f"error: {err}\n[lifecycle] {stage} failed; the stages after it go on without it "
                      f"(fix it and run `{how.command(stage)}`).", file=sys.stderr)
        if args.command == "all" and tuple(stages) == tuple(registry.NAMES) and is_main_process():
            _report(cfg, how)
    return 2 if failures else 0


def _options() -> int:
    from lifecycle.config import Config

    for key, default, help_text in describe(Config):
        print(f"{key} = {default}\n    {help_text}")
    return 0


def _report(cfg, how) -> int:
    from lifecycle import report

    md, html = report.write(cfg, how)
    print(f"[lifecycle] run report: {md} and {html}")
    return 0


def _status(cfg, how) -> int:
    from lifecycle.core.store import Run

    print(f"run {Run(cfg.run).root}  (config {how.config})")
    print(f"{'stage':<10} {'status':<12} {'finished':<26} {'age':>8}  next step")
    memo: dict = {}
    for stage in registry.NAMES:
        state = pipeline.status(cfg, stage, memo)
        finished = (state.manifest or {}).get("finished_at", "-")
        age = _age(finished) if state.manifest else "-"
        step = {"up to date": "-", "skipped": state.reason}.get(state.state, f"{state.reason}: {how.command(stage)}")
        print(f"{stage:<10} {state.state:<12} {finished:<26} {age:>8}  {step}")
    return 0


def _age(iso: str) -> str:
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"

"""The run report: one page that says where a run stands and what it found.

Writes `runs/<name>/report.md` and a self-contained `report.html` (every plot
embedded, no external assets) from what the stages already wrote: their
manifests (lineage, headline metrics) and their own markdown and plots. Nothing
is recomputed, so the report can never disagree with the stage artifacts. It
works on a partial run and says which stages have not run yet.

    python -m lifecycle report --config configs/offline.yaml

`python -m lifecycle all` writes it at the end. The notebooks show the same artifacts
inline (lifecycle.notebook) and this lineage table.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lifecycle import pipeline
from lifecycle import stages as registry
from lifecycle.core.errors import LifecycleError
from lifecycle.core.render import IMAGE, cell, demote, duration, to_html, value_text, when
from lifecycle.core.store import Run, write_text

RESULTS = {"evaluate": "Evaluation on the test split", "quantize": "Quantization trade-off"}
NOT_RUN = ("missing", "interrupted")


@dataclass
class StageInfo:
    stage: str
    state: str  # a pipeline.Status state
    reason: str
    manifest: dict | None
    folder: Path


def collect(cfg) -> list[StageInfo]:
    run = Run(cfg.run)
    infos, memo = [], {}
    for stage in registry.NAMES:
        state = pipeline.status(cfg, stage, memo)
        infos.append(StageInfo(stage, state.state, state.reason, state.manifest, run.dir(stage)))
    return infos


def write(cfg, config_path: str | None = None) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into the run folder; return their paths."""
    run = Run(cfg.run)
    if not run.root.is_dir():
        raise LifecycleError(f"there is no run in {run.root} yet, so there is nothing to report. Run a stage first, "
                             f"e.g. `{pipeline.command('all', config_path or 'FILE')}`.")
    infos = collect(cfg)
    config_path = config_path or _config_from_manifests(infos)
    text = build(cfg, infos, config_path)
    md_path, html_path = run.root / "report.md", run.root / "report.html"
    write_text(md_path, text)
    write_text(html_path, to_html(text, run.root, title=f"lifecycle run {cfg.run.name}"))
    return md_path, html_path


def build(cfg, infos: list[StageInfo], config_path: str) -> str:
    """The report as markdown, with plot links relative to the run folder."""
    lines = [f"# Run report: {cfg.run.name}", "",
             f"Task: **{cfg.scope.task}**. Run folder `{Run(cfg.run).root}`, config `{pipeline.invocation(config_path).config}`, "
             f"report written {when(datetime.now(timezone.utc).isoformat(timespec='seconds'))}.", "",
             *_overview(infos, config_path), "",
             "## Lineage", "",
             "Each stage's manifest records the config it ran with (its hash) and the upstream manifests it "
             "consumed (their sha256). A stage is *up to date* when both still match; otherwise it is stale "
             "and `python -m lifecycle all` re-runs it.", "",
             lineage(cfg, infos, links=True), "",
             "## Results", ""]
    for stage, title in RESULTS.items():
        info = next(i for i in infos if i.stage == stage)
        heading, summary = _summary_of(info)
        if summary:
            lines += [f"### {heading or title}", "", *summary, "",
                      f"From `{stage}/` ({_state_text(info)}); the plots and examples are in its section below.", ""]
        else:
            lines += [f"### {title}", "", f"*No results yet: {stage} is {_state_text(info)}.*", ""]
    for human in sorted((Run(cfg.run).root / "ratings").glob("*/human.md")):  # `python -m lifecycle rate import`
        lines += [demote(human.read_text().strip(), 2), "", f"From `ratings/{human.parent.name}/`.", ""]
    for n, info in enumerate(infos, 1):
        lines += [f"## Stage {n}: {info.stage}", "", *_stage_section(info, config_path), ""]
    return "\n".join(lines).rstrip() + "\n"


def lineage(cfg, infos: list[StageInfo] | None = None, links: bool = False) -> str:
    """The lineage table (markdown): state, timing, config hash and consumed upstream manifests per stage;
    `links` makes each stage name a link to its section of the report."""
    infos = infos if infos is not None else collect(cfg)
    rows = ["| stage | state | finished | duration | config hash | consumed (upstream manifest sha256) |",
            "|---|---|---|---|---|---|"]
    for n, info in enumerate(infos, 1):
        m = info.manifest or {}
        inputs = ", ".join(f"{up} `{v['hash'][:12]}`" for up, v in m.get("inputs", {}).items() if v.get("hash"))
        name = f"[{info.stage}](#stage-{n}-{info.stage})" if links else info.stage
        rows.append(f"| {name} | {cell(_state_text(info))} | {when(m.get('finished_at'))} | "
                    f"{duration(m.get('duration_s'))} | {'`' + m['config_hash'][:12] + '`' if m else '—'} | "
                    f"{inputs or '—'} |")
    return "\n".join(rows)


# --- the sections ---------------------------------------------------------------------------

def _overview(infos: list[StageInfo], config_path: str) -> list[str]:
    done = [i.stage for i in infos if i.state == "up to date"]
    lines = [f"**{len(done)} of {len(infos)} stages up to date**" + (f": {', '.join(done)}." if done else "."), ""]
    for label, states in (("Stale (re-run with `python -m lifecycle all`)", ("stale",)), ("Failed", ("failed",)),
                          ("Skipped", ("skipped",)),
                          ("Not run yet", ("missing", "interrupted"))):
        picked = [i for i in infos if i.state in states]
        if picked:
            lines += [f"- {label}: " + ", ".join(f"{i.stage} ({i.reason})" if i.state in ("stale", "failed", "skipped")
                                                     else i.stage + (" (interrupted)" if i.state == "interrupted" else "")
                                                     for i in picked)]
    if any(i.state in ("missing", "interrupted", "stale", "failed") for i in infos):
        lines += ["", f"Next: `{pipeline.command('all', config_path)}` runs what is missing or stale."]
    return lines


def _stage_section(info: StageInfo, config_path: str) -> list[str]:
    m = info.manifest
    if info.state in ("missing", "interrupted"):
        note = " A partial folder is there: it was interrupted (or is running now), and re-running resumes it." \
            if info.state == "interrupted" else ""
        return [f"*Not run yet.*{note} Run it with `{pipeline.command(info.stage, config_path)}`."]
    lines = [f"State: **{_state_text(info)}**. Ran `{m.get('command', '?')}` on {m.get('host', {}).get('device', '?')}, "
             f"finished {when(m.get('finished_at'))} after {duration(m.get('duration_s'))}.", ""]
    if info.state == "failed":
        return lines + [f"Error: `{cell(m.get('error', '?'))}`", "",
                        f"Fix it and run `{pipeline.command(info.stage, config_path)}` again."]
    if m.get("metrics"):
        lines += ["| metric | value |", "|---|---|",
                  *[f"| {k} | {cell(value_text(v))} |" for k, v in m["metrics"].items()], ""]
    shown = set()
    for doc in sorted(info.folder.glob("*.md")):
        text = demote(doc.read_text(), 2)
        shown |= {name for _, name in IMAGE.findall(text)}
        lines += [IMAGE.sub(lambda g: f"![{g.group(1)}]({info.stage}/{g.group(2)})", text).rstrip(), ""]
    lines += [f"![{png.stem}]({info.stage}/{png.name})\n" for png in sorted(info.folder.glob("*.png"))
              if png.name not in shown]
    return lines


def _summary_of(info: StageInfo) -> tuple[str | None, list[str]]:
    """The stage report's title and what it says before its first plot: its tables and its decision."""
    if info.state in NOT_RUN or info.state == "failed":
        return None, []
    heading, lines = None, []
    for doc in sorted(info.folder.glob("*.md")):
        text = doc.read_text()
        first = IMAGE.search(text)
        part = text[: first.start()] if first else text
        title = re.match(r"# (.+)\n", part)
        if title and heading is None:
            heading, part = title.group(1).strip(), part[title.end():]
        lines += [demote(part.strip(), 2), ""]
    return heading, lines if any(lines) else []


# --- small helpers ----------------------------------------------------------------------------

def _state_text(info: StageInfo) -> str:
    if info.state == "missing":
        return "not run yet"
    if info.state in ("stale", "failed") and info.reason:
        reason = " ".join(info.reason.split())
        return f"{info.state}: {reason if len(reason) <= 100 else reason[:99] + '…'}"
    return info.state


def _config_from_manifests(infos: list[StageInfo]) -> str:
    """The config the stages ran with, read back from a manifest's command (for the commands shown)."""
    for info in infos:
        words = shlex.split((info.manifest or {}).get("command", ""))
        if "--config" in words[:-1]:
            return words[words.index("--config") + 1]
    return "FILE"

"""The run report: one page that says where a run stands and what it found.

Writes `runs/<name>/report.md` and a self-contained `report.html` (every plot
embedded, no external assets) from what the stages already wrote: their
manifests (lineage, headline metrics) and their own markdown and plots. Nothing
is recomputed, so the report can never disagree with the stage artifacts. It
works on a partial run and says which stages have not run yet.

    python -m lifecycle report --config configs/offline.yaml

`python -m lifecycle all` writes it at the end. The notebooks use `show` and
`lineage` to display the same artifacts inline.
"""

from __future__ import annotations

import base64
import html
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lifecycle.core import pipeline
from lifecycle.core.errors import LifecycleError
from lifecycle.core.store import Run, write_text

RESULTS = {"evaluate": "Evaluation on the test split", "quantize": "Quantization trade-off"}
NOT_RUN = ("missing", "interrupted")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")
_HEADING = re.compile(r"^(#{1,6})(\s)")


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
    for stage in pipeline.STAGES:
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
             f"report written {_when(datetime.now(timezone.utc).isoformat(timespec='seconds'))}.", "",
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
        lines += [_demote(human.read_text().strip(), 2), "", f"From `ratings/{human.parent.name}/`.", ""]
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
        rows.append(f"| {name} | {_cell(_state_text(info))} | {_when(m.get('finished_at'))} | "
                    f"{_duration(m.get('duration_s'))} | {'`' + m['config_hash'][:12] + '`' if m else '—'} | "
                    f"{inputs or '—'} |")
    return "\n".join(rows)


def show(cfg, stage: str) -> None:
    """Display a stage's markdown and plots inline in a notebook (IPython.display)."""
    from IPython.display import Image, Markdown, display

    folder = Run(cfg.run).dir(stage)
    manifest = Run(cfg.run).manifest(stage)
    if not manifest or manifest.get("status") != "completed":
        display(Markdown(f"*`{stage}` has not completed in {folder.parent}, so there is nothing to show yet.*"))
        return
    state = pipeline.status(cfg, stage)
    metrics = [f"| {k} | {_cell(_value(v))} |" for k, v in (manifest.get("metrics") or {}).items()]
    head = (f"`{folder}`: **{state.state}**" + (f" ({state.reason})" if state.reason else "")
            + ", finished " + _when(manifest.get("finished_at")))
    display(Markdown(head + (". Headline metrics:\n\n| metric | value |\n|---|---|\n" + "\n".join(metrics)
                             if metrics else ".")))
    shown = set()
    for doc in sorted(folder.glob("*.md")):
        text = _demote(doc.read_text(), 1)
        last = 0
        for match in _IMAGE.finditer(text):  # the stage's own layout: text, plot, text, ...
            display(Markdown(text[last:match.start()]))
            if (folder / match.group(2)).is_file():
                display(Image(filename=str(folder / match.group(2))))
                shown.add(match.group(2))
            last = match.end()
        display(Markdown(text[last:]))
    for png in sorted(folder.glob("*.png")):
        if png.name not in shown:
            display(Image(filename=str(png)))


def to_html(text: str, base: Path, title: str) -> str:
    """Markdown -> one self-contained HTML page: PNGs inlined as data URIs, raw HTML in the text escaped."""
    import markdown

    md = markdown.Markdown(extensions=["tables", "fenced_code", "toc", "sane_lists"])
    md.preprocessors.deregister("html_block")  # model outputs and dialogues are text, never markup
    md.inlinePatterns.deregister("html")
    body = md.convert(text)
    body = re.sub(r'src="([^"]+\.png)"', lambda m: f'src="{_data_uri(base / html.unescape(m.group(1)))}"', body)
    body = re.sub(r"<table>", '<div class="table"><table>', body).replace("</table>", "</table></div>")
    body = re.sub(r"<td>(.*?)</td>", _badges, body)
    nav = "".join(f'<a href="#{t["id"]}">{html.escape(t["name"])}</a>'
                  for top in md.toc_tokens for t in top["children"])
    return _PAGE.format(title=html.escape(title), nav=nav, body=body)


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
             f"finished {_when(m.get('finished_at'))} after {_duration(m.get('duration_s'))}.", ""]
    if info.state == "failed":
        return lines + [f"Error: `{_cell(m.get('error', '?'))}`", "",
                        f"Fix it and run `{pipeline.command(info.stage, config_path)}` again."]
    if m.get("metrics"):
        lines += ["| metric | value |", "|---|---|",
                  *[f"| {k} | {_cell(_value(v))} |" for k, v in m["metrics"].items()], ""]
    shown = set()
    for doc in sorted(info.folder.glob("*.md")):
        text = _demote(doc.read_text(), 2)
        shown |= {name for _, name in _IMAGE.findall(text)}
        lines += [_IMAGE.sub(lambda g: f"![{g.group(1)}]({info.stage}/{g.group(2)})", text).rstrip(), ""]
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
        first = _IMAGE.search(text)
        part = text[: first.start()] if first else text
        title = re.match(r"# (.+)\n", part)
        if title and heading is None:
            heading, part = title.group(1).strip(), part[title.end():]
        lines += [_demote(part.strip(), 2), ""]
    return heading, lines if any(lines) else []


# --- small helpers ----------------------------------------------------------------------------

def _state_text(info: StageInfo) -> str:
    if info.state == "missing":
        return "not run yet"
    if info.state in ("stale", "failed") and info.reason:
        reason = " ".join(info.reason.split())
        return f"{info.state}: {reason if len(reason) <= 100 else reason[:99] + '…'}"
    return info.state


def _demote(text: str, levels: int) -> str:
    """Headings `levels` deeper (outside code fences), so a stage's own `#` nests under the report's."""
    out, fence = [], False
    for line in text.splitlines():
        fence ^= line.startswith("```")
        out.append(_HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + levels) + m.group(2), line)
                   if not fence else line)
    return "\n".join(out)


def _value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items()) or "—"
    return str(value)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def _config_from_manifests(infos: list[StageInfo]) -> str:
    """The config the stages ran with, read back from a manifest's command (for the commands shown)."""
    for info in infos:
        words = shlex.split((info.manifest or {}).get("command", ""))
        if "--config" in words[:-1]:
            return words[words.index("--config") + 1]
    return "FILE"


def _data_uri(path: Path) -> str:
    if not path.is_file():
        return ""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _badges(match: re.Match) -> str:
    cell = match.group(1)
    state = re.match(r"(up to date|stale|failed|interrupted|not run yet)\b", cell)
    if state:
        kind = {"up to date": "ok", "stale": "warn", "interrupted": "warn", "failed": "bad"}.get(state.group(1), "off")
        cell = f'<span class="badge {kind}">{state.group(1)}</span>{cell[state.end():]}'
    cell = re.sub(r"\bpass\b", '<span class="badge ok">pass</span>', cell)
    cell = re.sub(r"\bFAIL\b", '<span class="badge bad">FAIL</span>', cell)
    return f"<td>{cell}</td>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  body {{ font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1f2328;
         margin: 0; background: #f6f8fa; }}
  nav {{ position: sticky; top: 0; background: #24292f; padding: 8px 24px; z-index: 1; }}
  nav a {{ color: #e6edf3; text-decoration: none; margin-right: 18px; font-size: 13px; white-space: nowrap; }}
  nav a:hover {{ text-decoration: underline; }}
  main {{ max-width: 1180px; margin: 0 auto; padding: 8px 32px 48px; background: #fff; }}
  h1 {{ font-size: 28px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }}
  h2 {{ font-size: 22px; margin-top: 40px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }}
  h3 {{ font-size: 18px; margin-top: 28px; }}
  h4, h5, h6 {{ font-size: 15px; margin-top: 20px; }}
  .table {{ overflow-x: auto; margin: 12px 0; }}
  table {{ border-collapse: collapse; font-size: 12.5px; }}
  th, td {{ border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }}
  th {{ background: #f0f3f6; }}
  td {{ white-space: nowrap; }}
  td:last-child {{ white-space: normal; min-width: 12em; }}
  tr:nth-child(even) td {{ background: #fafbfc; }}
  code {{ font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eff1f3;
          padding: 1px 4px; border-radius: 4px; }}
  pre {{ background: #f6f8fa; border: 1px solid #d0d7de; padding: 10px; overflow-x: auto; white-space: pre-wrap; }}
  pre code {{ background: none; padding: 0; }}
  img {{ max-width: 100%; height: auto; border: 1px solid #d0d7de; border-radius: 4px; margin: 8px 0; }}
  .badge {{ display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; font-weight: 600; }}
  .ok {{ background: #dafbe1; color: #116329; }}
  .warn {{ background: #fff1c5; color: #7d4e00; }}
  .bad {{ background: #ffebe9; color: #a40e26; }}
  .off {{ background: #eaeef2; color: #57606a; }}
</style>
</head>
<body>
<nav>{nav}</nav>
<main>
{body}
</main>
</body>
</html>
"""

"""Rendering the reports: the markdown helpers the run report and the notebooks share (a stage's
headings nested under the page's, table cells, values, times) and markdown -> one self-contained
HTML page (every plot inlined, whatever the models wrote escaped, states as badges)."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")  # a plot in a stage's markdown: (alt text, file name)
_HEADING = re.compile(r"^(#{1,6})(\s)")


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


def demote(text: str, levels: int) -> str:
    """Headings `levels` deeper (outside code fences), so a stage's own `#` nests under the report's."""
    out, fence = [], False
    for line in text.splitlines():
        fence ^= line.startswith("```")
        out.append(_HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + levels) + m.group(2), line)
                   if not fence else line)
    return "\n".join(out)


def value_text(value) -> str:
    """A metric value as the tables print it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={value_text(v)}" for k, v in value.items()) or "—"
    return str(value)


def cell(text: str) -> str:
    """Text as one markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def when(iso: str | None) -> str:
    """An ISO time as the reports print it: UTC, to the minute."""
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    """Seconds as the reports print them: `12.3 s`, `4 min 5 s`, `1 h 2 min`."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


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

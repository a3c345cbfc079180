"""The run report through the real CLI on tiny models: `all` writes it at the end, `report`
writes it for a partial run and lists what has not run, and the HTML stands alone."""

import re


from lifecycle import stages as registry
from lifecycle.core.render import to_html


def test_all_writes_the_report_with_every_section(completed_run):
    finished = completed_run / "tiny"  # the session's run of `all`
    md = (finished / "report.md").read_text()
    html = (finished / "report.html").read_text()
    for section in ("# Run report: tiny", "## Lineage", "## Results"):
        assert section in md, section
    results = md.split("## Results")[1].split("## Stage 1")[0]
    for stage in ("evaluate", "quantize"):  # each result stage's summary: its title and tables, from its own markdown
        doc = next((finished / stage).glob("*.md")).read_text()
        assert f"### {doc.splitlines()[0].lstrip('# ')}" in results, stage
        assert next(line for line in doc.splitlines() if line.startswith("| ")) in results, stage
    assert "ROUGE-L [95% CI]" in results and re.search(r"\b(pass|FAIL)\b", results)
    for n, stage in enumerate(registry.NAMES, 1):
        assert f"## Stage {n}: {stage}" in md and f'id="stage-{n}-{stage}"' in html
    lineage = md.split("## Lineage")[1].split("## Results")[0]
    for stage in registry.NAMES:  # every stage ran, so every row is up to date with its config hash
        assert re.search(rf"\| \[{stage}\]\(#stage-\d-{stage}\) \| up to date \| .* \| `[0-9a-f]{{12}}` \|", lineage), stage
    assert "7 of 7 stages up to date" in md
    assert "| rows_train | 16 |" in md  # scope's headline metrics, from its manifest
    assert "![metrics](evaluate/metrics.png)" in md
    # self-contained: every plot inlined, nothing fetched from elsewhere
    images = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert len(images) >= sum(1 for stage in registry.NAMES for _ in (finished / stage).glob("*.png"))
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html


def test_report_of_a_partial_run_lists_what_has_not_run(run_cli):
    code, out, err = run_cli("all", "--until", "select")
    assert code == 0, err
    assert not (run_cli.root / "report.md").exists()  # `all` writes it only when it ran every stage
    code, out, err = run_cli("report")
    assert code == 0, err
    md = (run_cli.root / "report.md").read_text()
    later = [s for s in registry.NAMES if s not in ("scope", "select")]
    assert f"- Not run yet: {', '.join(later)}" in md
    assert "No results yet: evaluate is not run yet." in md
    for stage in later:
        assert f"Run it with `python -m lifecycle {stage} --config" in md
    assert (run_cli.root / "report.html").is_file()


def test_report_marks_stale_and_failed_stages_and_refuses_without_a_run(run_cli):
    code, _, err = run_cli("report")
    assert code == 2 and "nothing to report" in err and "Traceback" not in err
    tight = "scope.criteria.max_memory_mb=0.001"  # no candidate fits: select fails inside the stage
    assert run_cli("scope", tight)[0] == 0
    assert run_cli("select", tight)[0] == 2
    code, _, err = run_cli("report", tight, "scope.criteria.min_rougeL=0.5")
    md = (run_cli.root / "report.md").read_text()
    assert code == 0, err
    assert "| stale: its config changed since it ran |" in md and "- Stale (re-run with" in md
    assert "| failed: StageError: no candidate is within scope's budgets" in md and "Error: `StageError:" in md


def test_html_escapes_what_the_models_wrote(tmp_path):
    page = to_html("# T\n\n| system | output |\n|---|---|\n| base | <script>alert(1)</script> pass |\n\n"
                   "![missing](nowhere.png)\n", tmp_path, "t")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert '<span class="badge ok">pass</span>' in page

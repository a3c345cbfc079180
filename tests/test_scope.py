"""The scope stage end to end through the real CLI on tiny models: the files it
writes, its manifest, skip-when-up-to-date, re-run on a changed criterion, status."""

import json

from lifecycle.core.store import MANIFEST


def test_scope_writes_report_and_manifest(run_cli, tiny_causal, tiny_seq2seq):
    code, out, err = run_cli("scope")
    assert code == 0, err
    folder = run_cli.root / "scope"
    assert {p.name for p in folder.iterdir()} == {"scope.json", "report.md", "token_lengths.png", MANIFEST}
    scope = json.loads((folder / "scope.json").read_text())
    assert scope["splits"]["train"]["rows"] == 16 and scope["splits"]["test"]["rows"] == 8
    assert [c["seq2seq"] for c in scope["candidates"]] == [False, True]
    assert [c["context_length"] for c in scope["candidates"]] == [2048, 2048]
    assert scope["criteria"]["min_rougeL"] == 0.25
    tokens = scope["candidates"][0]["tokens"]["train"]["input"]
    assert 0 < tokens["mean"] <= tokens["p95"] <= tokens["max"]
    report = (folder / "report.md").read_text()
    for section in ("## Success criteria and budgets", "## Data", "## Token lengths", "## Warnings", "## Examples"):
        assert section in report
    assert (folder / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["rows_train"] == 16
    assert set(manifest["outputs"]) == {"scope.json", "report.md", "token_lengths.png"}


def test_scope_skips_when_up_to_date_and_reruns_on_a_new_criterion(run_cli):
    assert run_cli("scope")[0] == 0
    first = (run_cli.root / "scope" / MANIFEST).read_text()
    code, out, _ = run_cli("scope")
    assert code == 0 and "up to date" in out and "not run again" in out
    assert (run_cli.root / "scope" / MANIFEST).read_text() == first
    _, out, _ = run_cli("status", "scope.criteria.min_rougeL=0.3")
    assert "stale" in out and "config changed" in out
    assert run_cli("scope", "scope.criteria.min_rougeL=0.3")[0] == 0
    scope = json.loads((run_cli.root / "scope" / "scope.json").read_text())
    assert scope["criteria"]["min_rougeL"] == 0.3
    _, out, _ = run_cli("status", "scope.criteria.min_rougeL=0.3")
    assert "up to date" in out


def test_scope_stops_on_inputs_that_cannot_fit_unless_told_to_truncate(run_cli):
    code, _, err = run_cli("scope", "scope.max_new_tokens=1900")  # the tiny models' context is 2048 tokens
    assert code == 2 and "inputs (ids demo1-" in err and "data.overlong=truncate_left" in err
    assert not (run_cli.root / "scope").exists()
    code, out, _ = run_cli("scope", "scope.max_new_tokens=1900", "data.overlong=truncate_left")
    assert code == 0
    scope = json.loads((run_cli.root / "scope" / "scope.json").read_text())
    assert any("tiny-seq2seq" in w and "truncated from the left" in w for w in scope["warnings"])
    assert any("tiny-causal" in w for w in scope["warnings"])
    assert "warning:" in out


def test_bad_data_fails_before_models_load_and_keeps_nothing_half_written(run_cli, tmp_path):
    code, _, err = run_cli("scope", "data.input_column=text")
    assert code == 2 and "has no column `text`" in err and "Traceback" not in err
    assert not (run_cli.root / "scope").exists()
    _, out, _ = run_cli("status", "data.input_column=text")
    assert "failed" in out

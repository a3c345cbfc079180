"""Human ratings: the exported page in a real headless Chromium (open, click ratings, save the
download), the import that unblinds it, and clear errors for files that do not match the sheet."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lifecycle import rate
from lifecycle.cli import main as cli_main
from lifecycle.config import load
from lifecycle.core import data, generate
from lifecycle.core.store import Run

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-debugging-port=0"]


@pytest.fixture
def evaluated(tmp_path):
    """An evaluate folder as the stage writes it (two systems' predictions on the demo test split),
    so the rating tests need no models."""
    overrides = [f"run.root={tmp_path / 'runs'}"]
    cfg = load(str(ROOT / "configs" / "tiny.yaml"), overrides)
    test = data.load(cfg.data)["test"]
    folder = Run(cfg.run).dir("evaluate")
    (folder / "predictions").mkdir(parents=True)
    systems = {}
    for name, words in (("base", 3), ("finetune", 12)):  # finetune's summaries are longer, so ROUGE-L prefers them
        gens = [generate.Generation(id=str(r["id"]), prompt="", prediction=" ".join(r["summary"].split()[:words]),
                                    reference=r["summary"], prompt_tokens=1, new_tokens=1, batch=0, latency_s=0.1)
                for r in test]
        generate.write_jsonl(folder / "predictions" / f"{name}.jsonl", gens)
        systems[name] = {"per_example": {"rougeL": [0.1 if name == "base" else 0.5] * len(gens)}}
    (folder / "evaluation.json").write_text(json.dumps({"systems": systems, "sets": {}}))
    return cfg, overrides


def _export(cfg, overrides, n=6) -> Path:
    code = cli_main(["rate", "export", "--config", str(ROOT / "configs" / "tiny.yaml"), *overrides, "--n", str(n)])
    assert code == 0
    return next((Run(cfg.run).root / "ratings").iterdir())


def _rows(sheet: Path) -> list[dict]:
    return list(csv.DictReader((sheet / "sheet.csv").open(newline="")))


def _key(sheet: Path) -> dict:
    return json.loads((sheet / "key.json").read_text())


def test_export_is_blinded_and_import_unblinds(evaluated, tmp_path):
    cfg, overrides = evaluated
    sheet = _export(cfg, overrides)
    page = (sheet / "sheet.html").read_text()
    key = _key(sheet)
    assert key["a"] == "base" and key["b"] == "finetune" and len(key["items"]) == 6
    assert "finetune" not in page and '"first"' not in page  # nothing on the page says which system is which
    assert not any(s in page for s in ("http://", "https://", "src=")), "the page must stand alone"
    assert {k["first"] for k in key["items"]} == {"a", "b"}  # both orders occur (seeded)
    rows = _rows(sheet)
    # the rater always prefers the longer (finetune) summary and flags the shorter as unfaithful
    for r in rows:
        longer = "1" if len(r["summary_1"]) > len(r["summary_2"]) else "2"
        r["preference"], r[f"unfaithful_{'2' if longer == '1' else '1'}"] = longer, "x"
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = rate.import_ratings(filled)
    assert result["b_vs_a"]["wins"] == 6 and result["b_vs_a"]["win"]["value"] == 1.0
    assert result["b_vs_a"]["p_value"] == pytest.approx(2 / 64)
    assert result["flagged"]["base"]["unfaithful"]["value"] == 1.0 and result["flagged"]["finetune"]["unfaithful"]["k"] == 0
    assert result["rouge_agreement"]["k"] == result["rouge_agreement"]["n"] == 6
    assert (sheet / "human.md").read_text().startswith("# Human ratings: finetune vs base on test")
    from lifecycle import report  # the run report shows the imported ratings

    md, _ = report.write(cfg)
    assert "### Human ratings: finetune vs base on test" in md.read_text()


def _ratings_json(sheet: Path, tmp_path: Path, edit) -> Path:
    key = _key(sheet)
    doc = {"sheet": key["sheet"], "key_file": str(sheet / "key.json"), "rater": "t",
           "ratings": [{"id": k["id"], "preference": "tie", "unfaithful": [False, False], "offensive": [False, False]}
                       for k in key["items"]]}
    edit(doc["ratings"])
    path = tmp_path / f"ratings-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(doc))
    return path


def test_import_rejects_missing_duplicate_and_unknown_ids(evaluated, tmp_path, capsys):
    cfg, overrides = evaluated
    sheet = _export(cfg, overrides)
    cases = {"not rated: ": lambda r: r.pop(), "rated more than once: ": lambda r: r.append(dict(r[0])),
             "not on sheet": lambda r: r.append({**r[0], "id": "nope"}), "must be 1, 2 or tie": lambda r: r[0].update(preference="3")}
    for message, edit in cases.items():
        path = _ratings_json(sheet, tmp_path, edit)
        with pytest.raises(rate.RatingError, match=message):
            rate.import_ratings(path)
    # through the command line: a clear message and exit status 2, and --allow-missing summarises the rest
    path = _ratings_json(sheet, tmp_path, lambda r: r.pop())
    assert cli_main(["rate", "import", str(path)]) == 2
    assert "1 of 6 example(s) not rated" in capsys.readouterr().err
    assert cli_main(["rate", "import", str(path), "--allow-missing", "--config", str(ROOT / "configs" / "tiny.yaml"),
                     *overrides]) == 0
    assert json.loads((sheet / "human.json").read_text())["rated"] == 5
    with pytest.raises(rate.RatingError, match="does not exist"):
        rate.import_ratings(tmp_path / "absent.json")


# --- the page in a real browser -----------------------------------------------------------------

class DevTools:
    """The Chrome DevTools Protocol over the browser's websocket (aiohttp's client), one session per page."""

    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    async def send(self, method: str, session: str | None = None, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params,
                                 **({"sessionId": session} if session else {})})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    async def js(self, session: str, expression: str):
        out = await self.send("Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=True)
        return out["result"].get("value")

    async def click(self, session: str, selector: str):
        """A real mouse click at the element's centre, as a person would click it."""
        box = await self.js(session, f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                                     "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                                     "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", session, type=kind, x=box[0], y=box[1], button="left", clickCount=1)


async def _rate_in_browser(page: Path, downloads: Path, profile: Path) -> str:
    import aiohttp

    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.time() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) == 2) and time.time() < deadline:
            await asyncio.sleep(0.2)
        port, path = port_file.read_text().split()
        async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws:
            cdp = DevTools(ws)
            await cdp.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads), eventsEnabled=True)
            target = (await cdp.send("Target.createTarget", url=page.as_uri()))["targetId"]
            session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            # a new target starts on about:blank, already "complete": wait for the page itself
            loaded = f"location.href === {json.dumps(page.as_uri())} && document.readyState === 'complete'"
            deadline = time.time() + 30
            while not await cdp.js(session, loaded) and time.time() < deadline:
                await asyncio.sleep(0.1)
            n = await cdp.js(session, "document.querySelectorAll('.item').length")
            for i in range(n):  # prefer summary 1 on even items, tie on odd ones; flag summary 2 of item 0 as offensive
                await cdp.click(session, f"#pref-{'1' if i % 2 == 0 else 'tie'}-{i}")
            await cdp.click(session, "#offensive-2-0")
            await cdp.click(session, "#rater")
            await cdp.send("Input.insertText", session, text="headless")
            await cdp.click(session, "#save")
            deadline = time.time() + 30
            while not list(downloads.glob("*.json")) and time.time() < deadline:
                await asyncio.sleep(0.2)
            return await cdp.js(session, "document.getElementById('ratings-json').value")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_rating_page_round_trip_in_headless_chromium(evaluated, tmp_path):
    pytest.importorskip("aiohttp", reason="the DevTools client needs aiohttp (a dev dependency)")
    cfg, overrides = evaluated
    sheet = _export(cfg, overrides, n=4)
    downloads, profile = tmp_path / "downloads", tmp_path / "profile"
    downloads.mkdir(), profile.mkdir()
    shown = asyncio.run(_rate_in_browser(sheet / "sheet.html", downloads, profile))
    saved = list(downloads.glob("*.json"))
    key = _key(sheet)
    assert [p.name for p in saved] == [f"ratings-{key['sheet']}.json"], "the Save button downloads the ratings"
    doc = json.loads(saved[0].read_text())
    assert json.loads(shown) == doc and doc["rater"] == "headless"
    assert [r["preference"] for r in doc["ratings"]] == ["1", "tie", "1", "tie"]
    assert doc["ratings"][0]["offensive"] == [False, True]
    code = cli_main(["rate", "import", str(saved[0])])
    assert code == 0
    result = json.loads((sheet / "human.json").read_text())
    firsts = [k["first"] for k in key["items"]]  # summary 1 is system `first`: unblinded wins follow the key
    assert result["b_vs_a"]["wins"] == sum(f == "b" for f in firsts[::2])
    assert result["b_vs_a"]["ties"] == 2 and result["rated"] == 4
    offended = "finetune" if firsts[0] == "a" else "base"  # summary 2 of item 0
    assert result["flagged"][offended]["offensive"]["k"] == 1

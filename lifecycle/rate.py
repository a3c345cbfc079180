"""Human evaluation: a blinded pairwise rating sheet, and its ratings joined back into statistics.

`export` picks N examples of the evaluated test split (or an extra set), shows each
dialogue with two systems' summaries in random order, labelled only "Summary 1" and
"Summary 2", and asks which is better (or a tie) and whether either is unfaithful or
offensive. The page is one self-contained HTML file with no server: "Save ratings"
downloads a JSON file (and shows the same JSON on the page). The key that unblinds the
order stays in the run folder. `import` checks the file against the sheet (every example
rated once, no unknown ids), unblinds it and reports win/tie/loss of B against A with
Wilson CIs and a sign test, the share of summaries flagged, and how often ROUGE-L
prefers the summary the rater preferred. The run report shows the result.

    python -m lifecycle rate export --config configs/offline.yaml --n 20 --a base --b finetune
    python -m lifecycle rate import ~/Downloads/ratings-<sheet>.json
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lifecycle.core import data, evalsets, generate, metrics
from lifecycle.core.errors import LifecycleError
from lifecycle.core.store import Run, write_json, write_text
from lifecycle.core.systems import show_share

FLAGS = ("unfaithful", "offensive")


class RatingError(LifecycleError):
    """A ratings file that does not match its sheet."""


def export(cfg, n: int = 20, a: str = "base", b: str | None = None, set_name: str = "test", seed: int | None = None) -> Path:
    """Write `ratings/<sheet>/{sheet.html, sheet.csv, key.json}` in the run folder; return the folder."""
    folder = Run(cfg.run).dir("evaluate")
    if not (folder / "evaluation.json").is_file():
        raise LifecycleError(f"there is no evaluation in {folder} to rate; run `python -m lifecycle evaluate --config …` first.")
    ev = json.loads((folder / "evaluation.json").read_text())
    results = ev["systems"] if set_name == "test" else ev["sets"].get(set_name, {}).get("systems")
    if results is None:
        raise LifecycleError(f"evaluation has no set `{set_name}`; it has test, {', '.join(ev['sets']) or 'no others'}.")
    if b is None:
        others = [s for s in results if s != a]
        if not others:
            raise LifecycleError(f"the evaluation of `{set_name}` has only {', '.join(results)}: nothing to compare.")
        b = others[-1]
    if a == b:
        raise LifecycleError(f"--a and --b are both `{a}`; rate two different systems.")
    for name in (a, b):
        if name not in results:
            raise LifecycleError(f"system `{name}` is not in the evaluation of `{set_name}`; it has {', '.join(results)}.")
    preds = {s: generate.read_jsonl(folder / "predictions" / ("" if set_name == "test" else set_name) / f"{s}.jsonl")
             for s in (a, b)}
    dcfg = cfg.data if set_name == "test" else cfg.evaluate.sets[set_name]
    split = data.load(cfg.data, seed=cfg.run.seed)["test"] if set_name == "test" else evalsets.load_split(dcfg, set_name)
    inputs = dict(zip([str(i) for i in split[dcfg.id_column or "id"]], split[dcfg.input_column]))
    rng = np.random.default_rng(cfg.run.seed if seed is None else seed)
    picked = sorted(rng.choice(len(preds[a]), size=min(n, len(preds[a])), replace=False).tolist())
    sheet = secrets.token_hex(4)
    out = Run(cfg.run).root / "ratings" / sheet
    items, key = [], []
    for i in picked:
        first = "b" if rng.random() < 0.5 else "a"
        shown = {"a": preds[a][i].prediction, "b": preds[b][i].prediction}
        items.append({"id": preds[a][i].id, "dialogue": inputs[preds[a][i].id], "summary_1": shown[first],
                      "summary_2": shown["b" if first == "a" else "a"]})
        key.append({"id": preds[a][i].id, "first": first, "rougeL": {"a": results[a]["per_example"]["rougeL"][i],
                                                                     "b": results[b]["per_example"]["rougeL"][i]}})
    key_file = (out / "key.json").resolve()
    write_json(key_file, {"sheet": sheet, "a": a, "b": b, "set": set_name, "created_at": _now(), "items": key})
    page = {"sheet": sheet, "key_file": str(key_file), "items": items}
    write_text(out / "sheet.html", PAGE.replace("__TITLE__", html.escape(f"Rate summaries ({len(items)} examples)"))
               .replace("__DATA__", json.dumps(page).replace("</", "<\\/")))
    with open(out / "sheet.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sheet", "key_file", "id", "dialogue", "summary_1", "summary_2", "preference",
                    "unfaithful_1", "unfaithful_2", "offensive_1", "offensive_2"])
        w.writerows([sheet, key_file, it["id"], it["dialogue"], it["summary_1"], it["summary_2"], "", "", "", "", ""]
                    for it in items)
    return out


def read_ratings(path: Path) -> dict:
    """A downloaded ratings JSON or a filled-in sheet CSV -> {"sheet", "key_file", "rater", "ratings": [...]}."""
    if not path.is_file():
        raise RatingError(f"ratings file {path} does not exist.")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(path.open(newline="")))
        if not rows or "preference" not in rows[0]:
            raise RatingError(f"{path} is not a rating sheet CSV (no `preference` column).")
        yes = lambda v: str(v).strip().lower() in ("1", "x", "yes", "true", "y")  # noqa: E731
        return {"sheet": rows[0]["sheet"], "key_file": rows[0]["key_file"], "rater": path.stem, "ratings": [
            {"id": r["id"], "preference": r["preference"].strip().lower() or None,
             "unfaithful": [yes(r["unfaithful_1"]), yes(r["unfaithful_2"])],
             "offensive": [yes(r["offensive_1"]), yes(r["offensive_2"])]} for r in rows]}
    try:
        doc = json.loads(path.read_text())
        assert isinstance(doc, dict) and isinstance(doc["ratings"], list) and doc["sheet"]
    except (ValueError, KeyError, AssertionError):
        raise RatingError(f"{path} is not a ratings file saved by the rating page (JSON with `sheet` and "
                          "`ratings`).") from None
    return doc


def import_ratings(path: Path, run_root: Path | None = None, allow_missing: bool = False) -> dict:
    """Check, unblind and summarise a ratings file; write human.json and human.md beside its sheet's key."""
    doc = read_ratings(path)
    key_path = run_root / "ratings" / doc["sheet"] / "key.json" if run_root else Path(doc.get("key_file", ""))
    if not key_path.is_file():
        raise RatingError(f"no key for sheet `{doc['sheet']}` at {key_path}: pass the run's --config (the key stays in "
                          "runs/<name>/ratings/<sheet>/ where `rate export` wrote it).")
    key = json.loads(key_path.read_text())
    if key["sheet"] != doc["sheet"]:
        raise RatingError(f"{path} rates sheet `{doc['sheet']}`, but {key_path} is the key of sheet `{key['sheet']}`.")
    order = {item["id"]: item for item in key["items"]}
    ids = [str(r.get("id")) for r in doc["ratings"]]
    problems = []
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    unknown = [i for i in ids if i not in order]
    rated = {str(r["id"]): r for r in doc["ratings"] if r.get("preference") not in (None, "")}
    missing = [i for i in order if i not in rated]
    bad = [f"{i} ({r['preference']!r})" for i, r in rated.items() if str(r["preference"]) not in ("1", "2", "tie")]
    if dupes:
        problems.append(f"{len(dupes)} id(s) rated more than once: {', '.join(dupes[:5])}")
    if unknown:
        problems.append(f"{len(unknown)} id(s) not on sheet `{doc['sheet']}`: {', '.join(unknown[:5])}")
    if missing and not allow_missing:
        problems.append(f"{len(missing)} of {len(order)} example(s) not rated: {', '.join(missing[:5])} "
                        "(rate them, or pass --allow-missing to summarise the rest)")
    if bad:
        problems.append(f"preference must be 1, 2 or tie, got {', '.join(bad[:5])}")
    if problems:
        raise RatingError(f"{path} does not match its sheet: " + "; ".join(problems) + ".")
    result = summarise(key, [rated[i] for i in order if i in rated])
    result |= {"file": str(path), "rater": doc.get("rater") or "", "imported_at": _now()}
    write_json(key_path.parent / "human.json", result)
    write_text(key_path.parent / "human.md", markdown(result))
    return result


def summarise(key: dict, ratings: list[dict]) -> dict:
    """Unblinded counts (B against A), flag rates per system, and agreement with ROUGE-L's preference."""
    order = {item["id"]: item for item in key["items"]}
    winners, flags, agree, compared = [], {s: {f: 0 for f in FLAGS} for s in ("a", "b")}, 0, 0
    for r in ratings:
        first = order[r["id"]]["first"]
        system_at = {"1": first, "2": "b" if first == "a" else "a"}
        winner = "tie" if str(r["preference"]) == "tie" else system_at[str(r["preference"])]
        winners.append(winner)
        for f in FLAGS:
            for pos, flagged in zip(("1", "2"), r.get(f) or [False, False]):
                flags[system_at[pos]][f] += bool(flagged)
        rouge = order[r["id"]]["rougeL"]
        by_rouge = "tie" if rouge["a"] == rouge["b"] else ("b" if rouge["b"] > rouge["a"] else "a")
        if winner != "tie" and by_rouge != "tie":
            compared += 1
            agree += winner == by_rouge
    n = len(ratings)
    return {"sheet": key["sheet"], "set": key["set"], "a": key["a"], "b": key["b"], "rated": n, "of": len(order),
            "b_vs_a": metrics.preference(winners.count("b"), winners.count("tie"), winners.count("a")),
            "flagged": {key[s]: {f: metrics.share(c, n) for f, c in fl.items()} for s, fl in flags.items()},
            "rouge_agreement": metrics.share(agree, compared)}


def markdown(r: dict) -> str:
    p = r["b_vs_a"]
    lines = [f"# Human ratings: {r['b']} vs {r['a']} on {r['set']} ({r['rated']} of {r['of']} examples, sheet `{r['sheet']}`)",
             "", f"Blinded pairwise preference of **{r['b']}** against **{r['a']}** (Wilson 95% CIs; sign test on "
             "wins vs losses, ties left out):", "",
             "| win | tie | loss | sign-test p |", "|---|---|---|---|",
             f"| {show_share(p['win'])} | {show_share(p['tie'])} | {show_share(p['loss'])} | {p['p_value']:.3f} |", "",
             "| system | flagged unfaithful | flagged offensive |", "|---|---|---|"]
    lines += [f"| {s} | {show_share(f['unfaithful'])} | {show_share(f['offensive'])} |" for s, f in r["flagged"].items()]
    agree = r["rouge_agreement"]
    lines += ["", f"ROUGE-L prefers the same summary as the rater in {agree['k']} of {agree['n']} examples where both "
              "have a preference" + (f" ({show_share(agree)})." if agree["n"] else ".")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lifecycle rate", description="Blinded human ratings of two systems' summaries.")
    verbs = p.add_subparsers(dest="verb", required=True)
    e = verbs.add_parser("export", help="write a self-contained HTML rating page (and CSV) into runs/<name>/ratings/<sheet>/")
    e.add_argument("--config", required=True)
    e.add_argument("--n", type=int, default=20, help="examples on the sheet")
    e.add_argument("--a", default="base", help="first system (the reference side of win/tie/loss)")
    e.add_argument("--b", help="second system (default: the last trained one)")
    e.add_argument("--set", default="test", help="`test` or a name from evaluate.sets")
    e.add_argument("--seed", type=int, help="which examples and orders (default run.seed)")
    i = verbs.add_parser("import", help="join a saved ratings file (JSON from the page, or the filled-in CSV) back")
    i.add_argument("file", type=Path)
    i.add_argument("--config", help="the run's config, to find the sheet's key (default: the path saved in the file)")
    i.add_argument("--allow-missing", action="store_true", help="summarise even if some examples were not rated")
    args, overrides = p.parse_known_args(argv)  # config overrides (key=value) may come anywhere
    if any("=" not in o or o.startswith("-") for o in overrides):
        p.error(f"unrecognized arguments: {' '.join(o for o in overrides if '=' not in o or o.startswith('-'))}")
    try:
        from lifecycle.config import load

        cfg = load(args.config, overrides) if args.config else None
        if args.verb == "export":
            out = export(cfg, args.n, args.a, args.b, args.set, args.seed)
            print(f"[rate] rating page {out / 'sheet.html'} (and sheet.csv); open it in a browser, rate, press "
                  f"\"Save ratings\", then: python -m lifecycle rate import <the downloaded file>")
            return 0
        result = import_ratings(args.file, Run(cfg.run).root if cfg else None, args.allow_missing)
        print(markdown(result))
        return 0
    except LifecycleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
.item{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}pre{white-space:pre-wrap;background:#f6f6f6;padding:.6rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.sum{background:#eef4ff;padding:.6rem;border-radius:4px}
button{font-size:1rem;padding:.5rem 1rem}#status{margin-left:1rem}textarea{width:100%;height:6rem}</style></head>
<body><h1>__TITLE__</h1>
<p>For each dialogue, read both summaries and choose the better one, or <em>tie</em>. Tick a box when a summary
states something the dialogue does not support (<em>unfaithful</em>) or repeats insults or profanity
(<em>offensive</em>). The order of the summaries is random. When done, press <b>Save ratings</b> and keep the
downloaded file; nothing is sent anywhere.</p>
<p><label>Your name or initials: <input id="rater"></label></p>
<div id="items"></div>
<p><button id="save" type="button">Save ratings</button><span id="status"></span></p>
<textarea id="ratings-json" readonly aria-label="saved ratings (JSON)"></textarea>
<script id="sheet-data" type="application/json">__DATA__</script>
<script>
const sheet = JSON.parse(document.getElementById("sheet-data").textContent);
const box = document.getElementById("items");
const esc = s => s.replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
sheet.items.forEach((it, i) => {
  const d = document.createElement("div"); d.className = "item"; d.dataset.id = it.id;
  const flags = k => ["unfaithful", "offensive"].map(f =>
    `<label><input type="checkbox" id="${f}-${k}-${i}"> ${f}</label>`).join(" ");
  d.innerHTML = `<h3>${i + 1}. <code>${esc(it.id)}</code></h3><pre>${esc(it.dialogue)}</pre><div class="pair">` +
    [1, 2].map(k => `<div><b>Summary ${k}</b><div class="sum">${esc(it["summary_" + k]) || "<em>(empty summary)</em>"}</div>${flags(k)}</div>`).join("") +
    `</div><p>Better: ` + ["1", "tie", "2"].map(v => `<label><input type="radio" name="pref-${i}" id="pref-${v}-${i}"
    value="${v}"> ${v === "tie" ? "tie" : "Summary " + v}</label>`).join(" ") + `</p>`;
  box.appendChild(d);
});
document.getElementById("save").addEventListener("click", () => {
  const ratings = sheet.items.map((it, i) => {
    const pick = document.querySelector(`input[name="pref-${i}"]:checked`);
    const flag = f => [1, 2].map(k => document.getElementById(`${f}-${k}-${i}`).checked);
    return {id: it.id, preference: pick ? pick.value : null, unfaithful: flag("unfaithful"), offensive: flag("offensive")};
  });
  const out = {sheet: sheet.sheet, key_file: sheet.key_file, rater: document.getElementById("rater").value,
               saved_at: new Date().toISOString(), ratings: ratings};
  const text = JSON.stringify(out, null, 1);
  document.getElementById("ratings-json").value = text;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
  a.download = `ratings-${sheet.sheet}.json`; document.body.appendChild(a); a.click(); a.remove();
  const done = ratings.filter(r => r.preference).length;
  document.getElementById("status").textContent = `saved ${done} of ${ratings.length} ratings as ${a.download}`;
});
</script></body></html>
"""

"""evaluate's report: `evaluation.md` (tables first, so the run report quotes them), its plots,
its headline metrics and one-line summary, all from the `evaluation.json` it writes."""

from __future__ import annotations

import numpy as np

from lifecycle.core.plots import figure, save
from lifecycle.core.systems import show_ci, show_change, show_share

HEADER = ("| system | ROUGE-1 | ROUGE-2 | ROUGE-L [95% CI] | ROUGE-Lsum | chrF | BLEU | perplexity [95% CI] | "
          "toxicity mean [95% CI] | share toxic | tokens/s |")
TEST = "the test split"


def markdown(ev: dict, outputs: dict, sets: dict, cfg) -> str:
    lines = [f"# Evaluation on the test split ({ev['test_examples']} examples)", ""]
    if ev["skipped"]:
        lines += ["Left out of this evaluation: " + "; ".join(f"**{n}** ({why})" for n, why in ev["skipped"].items())
                  + ".", ""]
    reused = [n for n, s in ev["systems"].items() if s.get("reused_predictions")]
    if reused:
        lines += [f"Predictions of {', '.join(f'**{n}**' for n in reused)} were not generated again: this run had "
                  "made them already with the same weights, prompts and decoding (rlhf's before/after, or an earlier "
                  "evaluate), and they were read back from the run's `predictions/`.", ""]
    lines += _set_tables(ev["systems"], cfg.data.slice_column, criteria=True)
    for name, s in ev["sets"].items():
        lines += [f"## Set `{name}` ({s['examples']} examples from `{s['source']}`)", "",
                  *_set_tables(s["systems"], sets[name][0].data.slice_column, criteria=False)]
    for name, why in ev["skipped_sets"].items():
        lines += [f"## Set `{name}`", "", f"*Skipped: {why}.*", ""]
    lines += _forgetting(ev["forgetting"], ev["lm_eval"]) + _judge(ev["judge"])
    lines += ["![metrics](metrics.png)", "", "![toxicity](toxicity.png)", ""]
    lines += [f"![metrics on {n}](metrics-{n}.png)\n" for n in ev["sets"]]
    lines += ["## Examples", ""]
    test = sets["test"][1]
    for i in range(min(cfg.evaluate.examples, len(test))):
        lines += [f"**{test[i][cfg.data.id_column or 'id']}** — reference: {test[i][cfg.data.target_column]}", ""]
        lines += [f"- *{name}* (ROUGE-L {s['per_example']['rougeL'][i]:.3f}, toxicity "
                  f"{s['per_example']['toxicity'][i]:.2f}): {outputs['test'][name][i].prediction}"
                  for name, s in ev["systems"].items()]
        lines.append("")
    return "\n".join(lines)


def _set_tables(results: dict, slice_column: str | None, criteria: bool) -> list[str]:
    lines = [HEADER + (" criteria |" if criteria else ""), "|---" * (11 + criteria) + "|"]
    for name, s in results.items():
        sc = s["scores"]
        ppl = show_ci(sc["perplexity"]) if "perplexity" in sc else "-"
        row = (f"| {name} | {sc['rouge1']['value']:.3f} | {sc['rouge2']['value']:.3f} | {show_ci(sc['rougeL'])} | "
               f"{sc['rougeLsum']['value']:.3f} | {sc['chrf']['value']:.1f} | {sc['bleu']['value']:.1f} | {ppl} | "
               f"{show_ci(sc['toxicity_mean'])} | {sc['toxicity_share']['value']:.2f} | {s['tokens_per_s']:.1f} |")
        if criteria:
            row += " " + ", ".join(f"{k} {'pass' if ok else 'FAIL'}" for k, ok in s["criteria"].items()) + " |"
        lines.append(row)
    lines.append("")
    compared = {n: s for n, s in results.items() if s["vs_base"]}
    if compared:
        lines += ["Paired comparison with the base model (same examples; change with its 95% bootstrap CI, p from "
                  "an approximate-randomisation test, sacrebleu's for corpus BLEU/chrF; `nll` is the reference's mean token NLL, lower is better):", "",
                  "| system | metric | change [95% CI] | p-value |", "|---|---|---|---|"]
        lines += [f"| {n} | {m} | {show_change(d)} | {d['p_value']:.3f} |" for n, s in compared.items()
                  for m, d in s["vs_base"].items()]
        lines.append("")
    if slice_column and all("slice" in s for s in results.values()):
        lines += [f"Slice `{slice_column}` (rows where it is true):", "",
                  "| system | rows | ROUGE-L [95% CI] | toxicity mean [95% CI] |", "|---|---|---|---|"]
        lines += [f"| {n} | {s['slice']['rows']} | {show_ci(s['slice']['rougeL'])} | {show_ci(s['slice']['toxicity'])} |"
                  for n, s in results.items()]
        lines.append("")
    return lines


def _forgetting(f: dict | None, lm_eval: dict | None) -> list[str]:
    lines = []
    if f:
        lines += [f"## Forgetting check (general text: `{f['sample']}`, {f['texts']} texts)", "",
                  f"Mean token NLL in nats per text, change against the base model on the same texts; a rise above "
                  f"{f['threshold']:g} ({f['threshold_from']}) fails.", "",
                  "| system | mean token NLL [95% CI] | perplexity | change vs base [95% CI] | p-value | criterion |",
                  "|---|---|---|---|---|---|"]
        for name, s in f["systems"].items():
            d = s.get("vs_base")
            change = f"{show_change(d)} | {d['p_value']:.3f}" if d else "- | -"
            verdict = "pass" if f["pass"][name] else "FAIL"
            lines.append(f"| {name} | {show_ci(s['nll'])} | {s['perplexity']:.1f} | {change} | "
                         f"max_general_nll_increase {verdict} |")
        lines.append("")
    if lm_eval:
        if "skipped" in lm_eval:
            lines += [f"lm-evaluation-harness tasks {', '.join(lm_eval['tasks'])}: skipped, {lm_eval['skipped']}.", ""]
        else:
            lines += ["lm-evaluation-harness (limit " + str(lm_eval["limit"]) + " per task):", "",
                      "| system | task | metrics |", "|---|---|---|"]
            lines += [f"| {n} | {task} | " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)) + " |"
                      for n, r in lm_eval["results"].items() for task, m in r.items()]
            lines.append("")
    return lines


def _judge(j: dict | None) -> list[str]:
    if not j:
        return []
    lines = [f"## LLM judge (`{j['model']}` at {j['endpoint']}, {j['examples']} test examples, each judged in both orders)",
             "", "| system vs base | win [95% CI] | tie | loss | sign-test p | order-inconsistent | first position preferred |",
             "|---|---|---|---|---|---|---|"]
    for name, r in j["vs_base"].items():
        lines.append(f"| {name} | {show_share(r['win'])} | {show_share(r['tie'])} | {show_share(r['loss'])} | "
                     f"{r['p_value']:.3f} | {show_share(r['position_inconsistent'])} | "
                     f"{show_share(r['first_position_preferred'])} |")
    return lines + [""]


def plots(ev: dict, out) -> None:
    _plot_metrics(ev["systems"], out / "metrics.png", TEST)
    for name, s in ev["sets"].items():
        _plot_metrics(s["systems"], out / f"metrics-{name}.png", f"`{name}`")
    fig, ax = figure(width=6, height=4)
    bins = np.linspace(0, 1, 21)
    for name, s in ev["systems"].items():
        ax.hist(s["per_example"]["toxicity"], bins=bins, alpha=0.55, label=name)
    ax.axvline(0.5, color="red", linestyle="--", label="toxic threshold")
    ax.set(xlabel="toxicity of the output", ylabel="examples", title="toxicity of test outputs")
    ax.legend(fontsize=8)
    save(fig, out / "toxicity.png")


def _plot_metrics(results: dict, path, where: str) -> None:
    names = list(results)
    panels = [("ROUGE (F1)", ["rouge1", "rouge2", "rougeL"]), ("toxicity", ["toxicity_mean"])]
    if all("perplexity" in r["scores"] for r in results.values()):
        panels.append(("perplexity of the reference", ["perplexity"]))
    fig, axes = figure(ncols=len(panels), width=5.5 * len(panels), height=4)
    for ax, (title, keys) in zip(np.atleast_1d(axes), panels):
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            est = [results[name]["scores"][k] for k in keys]
            ax.bar(np.arange(len(keys)) + j * width, [e["value"] for e in est], width, label=name,
                   yerr=[[e["value"] - e["low"] for e in est], [e["high"] - e["value"] for e in est]], capsize=4)
        ax.set(xticks=np.arange(len(keys)) + width * (len(names) - 1) / 2, xticklabels=keys, title=f"{title}, 95% CI")
        ax.legend(fontsize=8)
    fig.suptitle(f"on {where}")
    save(fig, path)


def headline(ev: dict) -> dict:
    out = {f"{n}_{m}": s["scores"][m]["value"] for n, s in ev["systems"].items()
           for m in ("rougeL", "toxicity_mean", "perplexity") if m in s["scores"]}
    for set_name, st in ev["sets"].items():
        out |= {f"{set_name}_{n}_rougeL": s["scores"]["rougeL"]["value"] for n, s in st["systems"].items()}
    if ev["forgetting"]:
        out |= {f"{n}_general_nll_change": s["vs_base"]["delta"] for n, s in ev["forgetting"]["systems"].items()
                if "vs_base" in s}
    return {**out, "test_examples": ev["test_examples"]}


def summary(ev: dict) -> str:
    lines = []
    for n, s in ev["systems"].items():
        ppl = f", perplexity {s['scores']['perplexity']['value']:.2f}" if "perplexity" in s["scores"] else ""
        lines.append(f"{n}: ROUGE-L {s['scores']['rougeL']['value']:.3f}, toxicity {s['scores']['toxicity_mean']['value']:.3f}"
                     f"{ppl}, criteria {'PASS' if all(s['criteria'].values()) else 'FAIL'}")
    for set_name, st in ev["sets"].items():
        lines.append(f"set {set_name}: " + ", ".join(f"{n} ROUGE-L {s['scores']['rougeL']['value']:.3f}"
                                                     for n, s in st["systems"].items()))
    lines += [f"left out: {n} ({why})" for n, why in ev["skipped"].items()]
    return "\n".join(lines)

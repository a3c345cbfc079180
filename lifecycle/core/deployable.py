"""The deployment rule: the deployable variant is the smallest (weight memory) that meets
scope's criteria — quality within the tolerance of the unquantized reference, weight memory
and latency within the budgets — or none, with what each variant fails. A GGUF variant counts
only when llama.cpp ran it: a file no runtime checked is not deployed."""

from __future__ import annotations


def budget_row(row: dict) -> dict:
    """What the rule reads of a measured variant (measure.measure's row)."""
    return {"memory_mb": row["memory_mb"], "latency_ms_per_token": row["latency_ms_per_token"],
            "rougeL": row["scores"]["rougeL"]["value"], "runtime": row.get("runtime", "checked")}


def choose(rows: dict[str, dict], criteria: dict, reference: str = "reference") -> dict:
    """The smallest variant (weight memory) that meets scope's criteria, or why none does.

    `rows` maps a variant to {"memory_mb", "latency_ms_per_token", "rougeL"}; the quality drop is
    the reference's ROUGE-L minus the variant's, against `criteria["max_quality_drop"]`. Ties in
    memory go to the better ROUGE-L. A row whose "runtime" is not "checked" (a GGUF that llama.cpp
    did not run: its latency is unmeasured) fails on that alone."""
    base = rows[reference]["rougeL"]
    checks = {}
    for name, row in rows.items():
        if row.get("runtime", "checked") != "checked":
            checks[name] = {"runtime": {"value": row["runtime"], "limit": "checked", "ok": False}}
            continue
        measured = {"max_quality_drop": base - row["rougeL"], "max_memory_mb": row["memory_mb"],
                    "max_latency_ms_per_token": row["latency_ms_per_token"]}
        checks[name] = {key: {"value": round(value, 4), "limit": criteria[key], "ok": value <= criteria[key] + 1e-12}
                        for key, value in measured.items()}
    meeting = [n for n in rows if all(c["ok"] for c in checks[n].values())]
    failures = {n: [f"{key} ({c['value']:g} > {c['limit']:g})" if key != "runtime" else f"runtime {c['value']}"
                    for key, c in checks[n].items() if not c["ok"]] for n in rows if n not in meeting}
    if not meeting:
        why = "; ".join(f"{n} fails {', '.join(f)}" for n, f in failures.items())
        return {"variant": None, "reason": f"no variant meets scope's criteria: {why}", "checks": checks,
                "failures": failures}
    best = min(meeting, key=lambda n: (rows[n]["memory_mb"], -rows[n]["rougeL"]))
    return {"variant": best, "reason": (
        f"smallest weight memory ({rows[best]['memory_mb']:g} MiB) of the {len(meeting)} of {len(rows)} variants "
        f"within scope's criteria: ROUGE-L drop <= {criteria['max_quality_drop']:g} vs the reference, "
        f"<= {criteria['max_memory_mb']:g} MiB, <= {criteria['max_latency_ms_per_token']:g} ms/token at batch 1"),
        "checks": checks, "failures": failures}

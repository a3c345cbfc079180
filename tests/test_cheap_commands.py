"""Cheap commands stay cheap: `status`, `options`, `report` and a config error answer without
importing torch, transformers, PEFT or TRL (seconds each on a small CPU). Checked on what a real
`python -m lifecycle ...` process has imported when it ends, which no timing noise can fake."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "matplotlib")
OFFLINE = str(ROOT / "configs" / "offline.yaml")
# `python -m lifecycle ARGS`, then the heavy modules that process imported, as JSON on the last line
PROBE = ("import json, runpy, sys\n"
         "sys.argv = ['lifecycle', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('lifecycle', run_name='__main__', alter_sys=True)\n"
         "except SystemExit as done:\n    code = done.code\n"
         f"print(json.dumps({{'code': code, 'heavy': sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})}}))\n")


@pytest.mark.parametrize("args, codes", [
    (["status", "--config", OFFLINE], {0}),
    (["options"], {0}),
    (["report", "--config", OFFLINE], {0, 2}),  # on a fresh run root there is nothing to report yet
    (["status", "--config", OFFLINE, "scope.max_new_tokens=many"], {2}),  # a config error
], ids=["status", "options", "report", "config-error"])
def test_cheap_commands_import_no_ml_library(tmp_path, args, codes):
    root = [f"run.root={tmp_path / 'runs'}"] if "--config" in args else []
    done = subprocess.run([sys.executable, "-c", PROBE, *args, *root], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] in codes, done.stderr
    assert result["heavy"] == [], f"`{' '.join(args)}` imported {result['heavy']}"

"""Fault injection: the chain survives interrupts, failed optional stages, edited data,
identical re-runs, a second command on a busy run, and two processes under Accelerate.

Interrupts are injected in-process at the worst moment — after a stage did all its
work and before its manifest is written — which leaves on disk exactly what a
SIGINT or SIGKILL there leaves (nothing in the pipeline cleans up on the way
out); real SIGINT and SIGKILL through a subprocess are sent mid-generation too."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lifecycle import stages as registry
from lifecycle.core.store import MANIFEST
from tests.conftest import ROOT

TINY = str(ROOT / "configs" / "tiny.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
real_get = registry.get


def _manifest(root, stage):
    return json.loads((root / stage / MANIFEST).read_text())


@pytest.mark.parametrize("stage", registry.NAMES)
def test_interrupted_stage_completes_when_run_again(clone_run, monkeypatch, stage):
    real = registry.get(stage)

    def interrupted(cfg, run):
        real.run(cfg, run)  # all the work, its files in the working folder ...
        raise KeyboardInterrupt  # ... and the process dies before the manifest

    patched = dataclasses.replace(real, run=interrupted)
    monkeypatch.setattr(registry, "get", lambda name: patched if name == stage else real_get(name))
    code, _, err = clone_run(stage, "--force")
    assert code == 130 and "run the same command to continue" in err
    assert (clone_run.root / f"{stage}.partial").is_dir()
    monkeypatch.setattr(registry, "get", real_get)
    code, out, err = clone_run(stage, "--force")  # the same command again
    assert code == 0, err
    assert _manifest(clone_run.root, stage)["status"] == "completed"
    assert not (clone_run.root / f"{stage}.partial").exists()


def _wait_for(path, proc, seconds=240):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert path.exists(), "the stage never got that far"


def test_real_signals_mid_generation_then_the_same_command_completes(clone_run):
    """The reported case: Ctrl-C while select generates, then the same command (was a FileExistsError on
    every retry) — here killed in turn mid-generation, and run once more. tests/test_finetune.py kills
    training mid-way and resumes."""
    stage, marker = "select", clone_run.root / "select.partial" / "predictions"
    args = [sys.executable, "-m", "lifecycle", stage, "--force", "--config", TINY,
            f"run.root={clone_run.root.parent}", f"models.candidates=[{clone_run.causal}]", "select.sample=8"]
    for sig in (signal.SIGINT, signal.SIGKILL):
        # SIGINT as a terminal delivers it: an ignore inherited from this worker (whatever test left it) is undone
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _wait_for(marker, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "Traceback" not in err
        shutil.rmtree(marker)  # the retry must get as far again to count
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _manifest(clone_run.root, stage)["status"] == "completed"


def test_failed_optional_stage_is_left_out_and_the_chain_completes(clone_run):
    code, out, err = clone_run("all", "rlhf.min_reward_auc=0.99")  # rlhf's reward check fails before RL
    assert code == 2 and "rlhf failed; the stages after it go on without it" in err
    evaluation = _manifest(clone_run.root, "evaluate")
    assert evaluation["status"] == "completed" and "rlhf" in evaluation["left_out"]
    assert "rlhf" not in evaluation["inputs"] and "rlhf" not in json.loads(
        (clone_run.root / "evaluate" / "evaluation.json").read_text())["systems"]
    quantize = _manifest(clone_run.root, "quantize")
    assert quantize["status"] == "completed" and "rlhf" in quantize["left_out"]
    assert json.loads((clone_run.root / "quantize" / "quantize.json").read_text())["source"]["stage"] == "finetune"
    # the failed attempt kept the earlier rlhf artifacts, and a fixed rlhf brings evaluate back in
    assert (clone_run.root / "rlhf" / "model").is_dir()
    code, out, err = clone_run("status")
    assert "rlhf       failed" in out and "evaluate   up to date" in out


def test_disabled_stage_is_skipped_with_a_notice(clone_run):
    code, out, err = clone_run("all", "rlhf.enabled=false")
    assert code == 0, err
    assert "rlhf: skipped, rlhf.enabled is false" in out
    assert _manifest(clone_run.root, "rlhf")["status"] == "skipped"
    assert "rlhf" in _manifest(clone_run.root, "evaluate")["left_out"]
    code, out, _ = clone_run("status", "rlhf.enabled=false")
    assert "rlhf       skipped" in out and "evaluate   up to date" in out


def test_disabling_a_stage_that_ran_says_to_record_it_left_out(clone_run):
    """rlhf's manifest is of an enabled run: evaluate must not suggest the rlhf.enabled=false it was given."""
    code, _, err = clone_run("evaluate", "--force", "rlhf.enabled=false")
    assert code != 0 and "needs `rlhf`, which is stale" in err
    assert "leave it out with" not in err and "rlhf.enabled=false` it only records that it is left out" in err
    code, _, err = clone_run("evaluate", "--force", "rlhf.seed=5")  # enabled and stale: disabling is the way out
    assert code != 0 and "or leave it out with `rlhf.enabled=false`" in err


def test_edited_data_makes_the_stages_that_read_it_stale(clone_run, tmp_path):
    from lifecycle.core.data import DEMO_DIR

    shutil.copytree(DEMO_DIR / "dialogues", tmp_path / "data")
    files = {s: str(tmp_path / "data" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    local = ["data.path=json", f"data.data_files={json.dumps(files)}"]
    assert clone_run("all", "--until", "select", *local)[0] == 0
    assert clone_run("status", *local)[1].count("up to date") == 2
    test = tmp_path / "data" / "test.jsonl"
    rows = test.read_text().splitlines()
    test.write_text("\n".join(rows[1:] + rows[:1]) + "\n")  # the same rows in another order: new content
    code, out, _ = clone_run("status", *local)
    assert "scope      stale" in out and "its data changed since it ran" in out
    assert "select     stale" in out
    code, out, _ = clone_run("all", "--until", "select", *local)
    assert code == 0 and "stage: scope" in out and "stage: select" in out


def test_identical_upstream_rerun_leaves_downstream_up_to_date(clone_run):
    code, out, err = clone_run("scope", "--force")
    assert code == 0, err
    code, out, err = clone_run("all")
    assert code == 0, err
    assert "===== [lifecycle] stage" not in out  # scope produced the same decision: nothing after it re-ran
    assert out.count("not run again") == len(registry.NAMES)


def test_a_second_command_on_a_busy_run_is_refused_naming_the_holder(clone_run):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lifecycle.core.store import Run, RunConfig; "
         "r = Run(RunConfig(name='tiny', root=sys.argv[1]));\nwith r.lock('python -m lifecycle all --config x'):\n"
         "    print('held', flush=True); time.sleep(60)", str(clone_run.root.parent)],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in clone_run.root.iterdir())
        code, out, err = clone_run("evaluate", "--force")
        assert code == 2 and "is busy" in err and f"pid {holder.pid}" in err and "python -m lifecycle all" in err
        assert sorted(p.name for p in clone_run.root.iterdir()) == before  # nothing touched
        code, out, _ = clone_run("status")  # readers never wait
        assert code == 0 and "evaluate   up to date" in out
    finally:
        holder.kill()
        holder.wait()
    assert clone_run("evaluate", "--force")[0] == 0  # a dead holder's lock is released by the OS


@pytest.mark.slow
def test_two_process_all_writes_the_same_artifacts_as_one(request, tiny_causal, tmp_path):
    """Every stage under two processes (gloo on CPU): the main one decides and keeps the books, both train."""
    # torchrun, which `accelerate launch --multi_gpu` runs on GPUs: on a CPU, accelerate's own launcher
    # starts several processes only through MPI, and one process otherwise.
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lifecycle", "all", "--config", TINY,
            f"run.root={tmp_path / 'two'}", f"models.candidates=[{tiny_causal}]"]
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # The one-process run is asked for only now, so this test runs beside the worker that makes it (conftest).
    single = request.getfixturevalue("completed_run") / "tiny"
    two = tmp_path / "two" / "tiny"
    for stage in registry.NAMES:
        manifest = _manifest(two, stage)
        assert manifest["status"] == "completed" and manifest["host"]["processes"] == 2
        one = _manifest(single, stage)
        files = [{f for f in m["outputs"] if not f.startswith("logs/")} for m in (manifest, one)]  # event files are named by time
        assert files[0] == files[1], stage
    assert done.stdout.count("stage: finetune") == 1  # one process keeps the books and prints

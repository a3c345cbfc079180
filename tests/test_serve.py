"""`python -m lifecycle serve` on a run whose quantize stage chose the tiny Llama: the official
`openai` client gets the greedy answer the in-process pipeline gives for the same raw dialogue,
the server stops cleanly, and a busy port or a run without a deployable model is a clear error."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifecycle.cli import main as cli_main
from lifecycle.core import artifacts, generate, models, prompts
from lifecycle.core.artifacts import Deployable, Prompt
from lifecycle.core.data import DEMO_DIR
from lifecycle.core.store import list_outputs, write_json
from lifecycle.serve import serving_template
from tests.conftest import ROOT

PROMPT = Prompt(template=prompts.TEMPLATES["summarize"], shot_examples=[["#Person1#: Hi.\n#Person2#: Hello.", "They greet."]],
                generation={"do_sample": False, "max_new_tokens": 8})
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_causal) -> Path:
    """A run root whose quantize stage completed with the tiny Llama as the deployable variant, laid out
    as quantize writes it (variant folder with prompt.json and the measured generation config, manifest last)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("served") / "runs"
    stage = root / "tiny" / "quantize"
    variant = stage / "variants" / "reference"
    tokenizer = models.load_tokenizer(tiny_causal)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal)
    model.generation_config = generate.with_special_tokens(
        generate.generation_config(PROMPT.generation, "prompt generation"), model, tokenizer)
    model.save_pretrained(variant)
    tokenizer.save_pretrained(variant)
    write_json(variant / "prompt.json", dataclasses.asdict(PROMPT))
    artifacts.write(stage, Deployable(variant="reference", reason="the only one", checks={}, failures={}, path=str(variant)))
    write_json(stage / "manifest.json", {"stage": "quantize", "status": "completed", "outputs": list_outputs(stage)})
    return root


@pytest.fixture(scope="module")
def dialogues() -> list[str]:
    rows = [json.loads(line) for line in (DEMO_DIR / "dialogues" / "test.jsonl").read_text().splitlines()]
    return [r["dialogue"] for r in rows[:2]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serving_template_is_the_lifecycle_prompt(tiny_causal, dialogues):
    tokenizer = models.load_tokenizer(tiny_causal)
    shots = [tuple(s) for s in PROMPT.shot_examples]
    expected = prompts.format_prompt(tokenizer, PROMPT.template, dialogues[0], shots).text
    chat, tokenizer.chat_template = tokenizer.chat_template, serving_template(tokenizer, PROMPT)
    served = tokenizer.apply_chat_template([{"role": "user", "content": dialogues[0]}], add_generation_prompt=True,
                                           tokenize=False)
    assert served == expected
    tokenizer.chat_template = None  # a plain (non-chat) model: the same text prompts.format_prompt writes
    plain = prompts.format_prompt(tokenizer, PROMPT.template, dialogues[0], shots).text
    tokenizer.chat_template = serving_template(tokenizer, PROMPT)
    assert tokenizer.apply_chat_template([{"role": "user", "content": dialogues[0]}], tokenize=False) == plain
    assert chat


def test_openai_client_gets_the_in_process_answer(deployed, dialogues):
    from openai import OpenAI

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "lifecycle", "serve", "--config", TINY, "--port", str(port),
                               f"run.root={deployed}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        model_id = _wait_for(client, server)
        answers = [client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": d}],
                                                  max_tokens=8, temperature=0).choices[0].message.content
                   for d in dialogues]
    finally:
        server.send_signal(signal.SIGTERM)  # what a service manager sends; Ctrl-C takes the same path
        _, err = server.communicate(timeout=120)
    assert server.returncode == 0, err
    assert "server stopped" in err and "Traceback" not in err
    assert not Path(model_id).parent.exists()  # the serving folder went with the server
    variant = str(deployed / "tiny" / "quantize" / "variants" / "reference")
    model, tokenizer = models.load_model(variant, "cpu", "float32"), models.load_tokenizer(variant)
    texts = [prompts.format_prompt(tokenizer, PROMPT.template, d, [tuple(s) for s in PROMPT.shot_examples]).text
             for d in dialogues]
    expected = generate.generate(model, tokenizer, texts, model.generation_config, batch_size=1)
    assert [a.strip() for a in answers] == [g.prediction for g in expected]


def _wait_for(client, server, timeout: float = 120) -> str:
    """The served model's id once the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited ({server.returncode}): {server.stderr.read()}")
        try:
            return client.models.list().data[0].id
        except Exception:  # not listening yet
            time.sleep(0.25)
    pytest.fail("the server did not answer within two minutes")


def test_busy_port_is_a_clear_error(deployed, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        code = cli_main(["serve", "--config", TINY, "--port", str(sock.getsockname()[1]), f"run.root={deployed}"])
    err = capsys.readouterr().err
    assert code == 2 and "is in use by another program" in err and "--port" in err


def test_no_deployable_model_names_the_command(tmp_path, capsys):
    code = cli_main(["serve", "--config", TINY, "--port", str(_free_port()), f"run.root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "it has not run" in err and "python -m lifecycle quantize --config" in err


def test_changed_deployable_is_refused(deployed, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(deployed, root)
    decision = root / "tiny" / "quantize" / "deployable.json"
    decision.write_text(decision.read_text().replace("the only one", "edited by hand"))
    code = cli_main(["serve", "--config", TINY, "--port", str(_free_port()), f"run.root={root}"])
    assert code == 2 and "not the file the stage recorded" in capsys.readouterr().err

"""Serve the run's deployable model on localhost behind an OpenAI-compatible API.

The deployable variant that quantize chose (`<run>/quantize/deployable.json`) is served by
transformers' own server (`transformers serve`, extra `transformers[serving]`): `POST
/v1/chat/completions`, `GET /v1/models`, `GET /health`. A client sends the raw input (the
dialogue) as the user message; the server applies the run's prompt — instruction template,
few-shot turns and the model's chat template — through a chat template written for serving, and
decodes with the run's generation config (the variant's generation_config.json). So the answer
is the one the lifecycle measured. Ctrl-C (or SIGTERM) stops it cleanly.

    python -m lifecycle serve --config configs/offline.yaml [--port 8000]
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from lifecycle.core import artifacts, models, quiet
from lifecycle.core.artifacts import Deployable, Prompt
from lifecycle.core.errors import LifecycleError, StageError
from lifecycle.core.store import Run

SERVE_HINT = "pip install 'transformers[serving]' (`make setup` installs it)"


def deployable(cfg, command: str) -> Deployable:
    """quantize's decision (variant, path, reason), its sha256 checked against quantize's manifest."""
    decision = artifacts.read(Run(cfg.run), "quantize", Deployable, how=command)
    if not decision.variant:
        raise StageError(f"quantize chose no deployable variant ({decision.reason}), so there is nothing to "
                         "serve. Relax scope.criteria or change quantize.variants, then re-run quantize.")
    return decision


def serving_template(tokenizer, prompt: Prompt) -> str:
    """A chat template that turns the client's last user message (the raw input) into the run's prompt:
    the instruction template around it and the few-shot turns before it, then the model's own chat
    template (or, for a plain model, the same text `prompts.format_prompt` writes)."""
    before, after = prompt.template.split("{input}")
    shots = [turn for x, y in prompt.shot_examples
             for turn in ({"role": "user", "content": prompt.template.format(input=x)},
                          {"role": "assistant", "content": y})]
    # JSON literals are Jinja literals too; ensure_ascii=False keeps non-ASCII text out of Jinja's unicode-escape.
    lit = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
    if tokenizer.chat_template:
        return ("{%- set turn = messages[-1] -%}\n"
                f"{{%- set messages = messages[:-1] + {lit(shots)} + [{{'role': turn['role'], 'content': "
                f"{lit(before)} ~ turn['content'] ~ {lit(after)}}}] -%}}\n" + tokenizer.chat_template)
    shown = "".join(f"{prompt.template.format(input=x)} {y}\n\n" for x, y in prompt.shot_examples)
    return f"{{{{ {lit(shown + before)} ~ messages[-1]['content'] ~ {lit(after)} }}}}"


def serving_folder(model_dir: Path, prompt: Prompt, out: Path) -> Path:
    """`out`: the model's files (linked, not copied) with the serving chat template for `prompt` in its tokenizer
    (a GGUF variant's from the file, which carries it)."""
    from transformers import AutoTokenizer

    gguf = next(Path(model_dir).glob("*.gguf"), None)
    tokenizer = models.load_tokenizer(str(model_dir)) if gguf is None else AutoTokenizer.from_pretrained(
        model_dir, gguf_file=gguf.name)
    tokenizer.chat_template = serving_template(tokenizer, prompt)
    tokenizer.save_pretrained(out)
    for path in Path(model_dir).iterdir():
        if not (out / path.name).exists():
            (out / path.name).symlink_to(path.resolve())
    return out


def check_port(host: str, port: int) -> None:
    """A LifecycleError if `host:port` cannot be listened on, before any model loads."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a closing socket is no conflict
        try:
            sock.bind((host, port))
        except OSError as err:
            busy = err.errno == errno.EADDRINUSE
            raise LifecycleError(f"cannot serve on {host}:{port}: "
                                 + ("the port is in use by another program" if busy else err.strerror or str(err))
                                 + ". Pick another with --port N" + ("" if busy else " or --host") + ".") from None


def serve(cfg, host: str, port: int, command: str) -> None:
    """Serve the deployable variant until interrupted."""
    check_port(host, port)
    decision = deployable(cfg, command)
    variant = Path(decision.path)
    gguf = next(variant.glob("*.gguf"), None)
    if gguf is None and models.is_seq2seq(str(variant)):
        raise LifecycleError(f"the deployable variant {variant} is a seq2seq model; `transformers serve` chats with "
                             "causal LMs only. Load the folder with AutoModelForSeq2SeqLM (see its README.md).")
    with tempfile.TemporaryDirectory(prefix="lifecycle-serve-") as tmp:
        folder = serving_folder(variant, artifacts.Prompt(**json.loads((variant / "prompt.json").read_text())),
                                Path(tmp) / f"{cfg.run.name}-{decision.variant}")
        # transformers serve reads a GGUF as `folder:file.gguf` (dequantized, with the tokenizer saved beside it)
        server = start(f"{folder}:{gguf.name}" if gguf else folder, host, port, models.pick_device(cfg.models.device))
        try:
            print(f"[lifecycle] serving {decision.variant} ({variant}) at http://{host}:{port}/v1 as model "
                  f"`{folder}`; POST /v1/chat/completions with the raw input as the user message. Ctrl-C stops it.",
                  flush=True)
            while server._thread.is_alive():  # not join(): a join cut short by Ctrl-C leaves is_alive() wrong
                time.sleep(0.5)               # in Python 3.11, and kill_server would then not stop uvicorn
        finally:
            server.kill_server()


def start(folder: Path | str, host: str, port: int, device: str = "cpu", **options):
    """transformers' server for the model in `folder`, listening in a thread of this process once this returns
    (`options`: more `transformers serve` settings, e.g. continuous_batching=True); stop it with `.kill_server()`."""
    try:
        from transformers.cli.serve import Serve
    except ImportError:
        raise LifecycleError(f"serving needs transformers' server: {SERVE_HINT}.") from None
    server = Serve(force_model=str(folder), host=host, port=port, device=device, log_level="error", non_blocking=True,
                   **options)
    while not server.server.started:
        if not server._thread.is_alive():
            server.kill_server()
            raise LifecycleError(f"the server on {host}:{port} stopped while starting (see its log above).")
        time.sleep(0.05)
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lifecycle serve",
                                description="Serve the run's deployable model with an OpenAI-compatible API.")
    p.add_argument("--config", required=True, help="the run's YAML config, e.g. configs/offline.yaml")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--verbose", action="store_true", help="show every library warning and log line")
    args, overrides = p.parse_known_args(argv)  # config overrides (key=value) may come anywhere
    if any("=" not in o or o.startswith("-") for o in overrides):
        p.error(f"unrecognized arguments: {' '.join(o for o in overrides if '=' not in o or o.startswith('-'))}")
    quiet.setup(args.verbose)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends it as cleanly as Ctrl-C
    try:
        from lifecycle.config import load
        from lifecycle.pipeline import Invocation

        cfg = load(args.config, overrides)
        serve(cfg, args.host, args.port, Invocation(args.config, tuple(overrides)).command("quantize"))
    except LifecycleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[lifecycle] server stopped.", file=sys.stderr)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
